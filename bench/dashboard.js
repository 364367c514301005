// Driven by bench/dashboard.sh: opens the dashboard, starts the producer, and measures the
// page's main thread while messages arrive. Arguments: URL SECONDS OUT PRODUCER-COMMAND...
// Long animation frames (Chrome's 'long-animation-frame' entries) over 50 ms are printed with
// the scripts that ran in them, so that a long task can be told from the machine's load.
const { chromium } = require("playwright-core");
const { spawn } = require("child_process");
const fs = require("fs");
const [url, seconds, out, command, ...args] = process.argv.slice(2);
const percentile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.addInitScript(() => {
    window.longTasks = [];
    window.longFrames = [];
    new PerformanceObserver((list) => list.getEntries().forEach((e) => window.longTasks.push(e.duration)))
      .observe({ type: "longtask", buffered: true });
    new PerformanceObserver((list) => list.getEntries().forEach((e) => window.longFrames.push({
      duration: Math.round(e.duration), blocking: Math.round(e.blockingDuration),
      scripts: e.scripts.map((s) => `${s.invoker} ${Math.round(s.duration)} ms`),
    }))).observe({ type: "long-animation-frame", buffered: true });
  });
  const opened = Date.now();
  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll("#serving tbody tr").length >= 20);
  const firstRender = Date.now() - opened;
  await page.evaluate(() => { window.longTasks.length = 0; window.longFrames.length = 0; window.renders = 0;
    new MutationObserver(() => window.renders++).observe(document.querySelector("#serving tbody"), { subtree: true, characterData: true, childList: true }); });
  // The main thread's own work (Chrome's task, script, layout and style times), apart from
  // the wall-clock length of its tasks, which the machine's other processes stretch.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable");
  const busy = async () => Object.fromEntries((await cdp.send("Performance.getMetrics")).metrics
    .filter((m) => ["TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration"].includes(m.name))
    .map((m) => [m.name, m.value]));
  const busyBefore = await busy();
  const producer = spawn(command, args, { stdio: ["ignore", fs.openSync(out, "w"), "ignore"] });
  const produced = new Promise((resolve) => producer.on("exit", resolve));
  const trips = [];
  let tallest = 0;
  const until = Date.now() + Number(seconds) * 1000;
  while (Date.now() < until) {
    const asked = Date.now();
    const height = await page.evaluate(() => document.documentElement.scrollHeight);
    trips.push(Date.now() - asked);
    tallest = Math.max(tallest, height);
    await new Promise((r) => setTimeout(r, 100));
  }
  const busyAfter = await busy();
  const code = await produced;
  if (code !== 0) { console.log(`lambda produce exited with ${code}`); process.exit(1); }
  const { longTasks, longFrames, renders } = await page.evaluate(() =>
    ({ longTasks: window.longTasks, longFrames: window.longFrames, renders: window.renders }));
  console.log(`first render ${firstRender} ms; page height at most ${tallest} px`);
  console.log(`round trips to the page: ${trips.length}, p50 ${percentile(trips, 0.5)} ms, p99 ${percentile(trips, 0.99)} ms, max ${Math.max(...trips)} ms`);
  const spent = Object.entries(busyAfter).map(([k, v]) => `${k.replace("Duration", "")} ${((v - busyBefore[k]) * 1000).toFixed(0)} ms`).join(", ");
  console.log(`the page's main thread in ${seconds} s: ${spent}`);
  console.log(`long tasks (> 50 ms) in ${seconds} s: ${longTasks.length}, longest ${Math.round(Math.max(0, ...longTasks))} ms`);
  longFrames.filter((f) => f.blocking > 0).forEach((f) => console.log("  long frame", JSON.stringify(f)));
  console.log(`serving-table mutations: ${renders} (${(renders / Number(seconds)).toFixed(1)}/s); console errors: ${errors.length}`);
  await browser.close();
  if (errors.length) { console.log(errors); process.exit(1); }
})();
