// Driven by bench/dashboard.sh: opens the dashboard, starts the producer, and measures the
// page's main thread while messages arrive. Arguments: URL SECONDS "PRODUCE COMMAND" OUT.
const { chromium } = require("playwright-core");
const { spawn } = require("child_process");
const fs = require("fs");
const [url, seconds, produce, out] = process.argv.slice(2);
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
    new PerformanceObserver((list) => list.getEntries().forEach((e) => window.longTasks.push(e.duration)))
      .observe({ type: "longtask", buffered: true });
  });
  const opened = Date.now();
  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll("#serving tbody tr").length >= 20);
  const firstRender = Date.now() - opened;
  await page.evaluate(() => { window.longTasks.length = 0; window.renders = 0;
    new MutationObserver(() => window.renders++).observe(document.querySelector("#serving tbody"), { subtree: true, characterData: true, childList: true }); });
  const [command, ...args] = produce.split(" ");
  const producer = spawn(command, args, { stdio: ["ignore", fs.openSync(out, "w"), "ignore"] });
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
  await new Promise((r) => producer.on("exit", r));
  const { longTasks, renders } = await page.evaluate(() => ({ longTasks: window.longTasks, renders: window.renders }));
  console.log(`first render ${firstRender} ms; page height at most ${tallest} px`);
  console.log(`round trips to the page: ${trips.length}, p50 ${percentile(trips, 0.5)} ms, p99 ${percentile(trips, 0.99)} ms, max ${Math.max(...trips)} ms`);
  console.log(`long tasks (> 50 ms) in ${seconds} s: ${longTasks.length}, longest ${Math.round(Math.max(0, ...longTasks))} ms`);
  console.log(`serving-table mutations: ${renders} (${(renders / Number(seconds)).toFixed(1)}/s); console errors: ${errors.length}`);
  await browser.close();
  if (errors.length) { console.log(errors); process.exit(1); }
})();
