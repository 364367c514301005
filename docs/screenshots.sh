#!/usr/bin/env bash
# Makes the README's screenshots of the dashboard from a real browser (headless Chromium):
#   docs/dashboard.png      the workshop: `lambda demo --serve` (history, then its three messages)
#   docs/dashboard-10k.png  10,000 customers: `lambda gen --rows 100000 --customers 10000` as the
#                           history, then `lambda produce --rate 2000` while the picture is taken
# Needs chromium (Debian package `chromium`; ./test installs it) and Node.js: playwright-core,
# pinned, is installed with npm into bench/.node (as bench/dashboard.sh does) to wait until the
# page has drawn its rows before the picture is taken.
set -euo pipefail
cd "$(dirname "$0")/.."
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cargo build --release --quiet
lambda=./target/release/lambda
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT

wait_for() { for _ in $(seq 300); do curl -sf "$1" >/dev/null && return; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
node_modules=bench/.node/node_modules
if [ ! -d "$node_modules/playwright-core" ]; then
    mkdir -p bench/.node
    (cd bench/.node && npm install --silent --no-audit --no-fund playwright-core@1.64.1 >/dev/null)
fi
shoot() { # URL FILE: the whole page at 1400 px wide, once the serving layer and charts are drawn
    NODE_PATH="$node_modules" node -e '
const { chromium } = require("playwright-core");
(async () => {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(process.argv[1]);
  await page.waitForFunction(() => document.querySelectorAll("#serving tbody tr").length > 0 && document.querySelector("#hourly canvas"));
  await page.waitForTimeout(4000); // a few seconds of the ingest chart
  await page.screenshot({ path: process.argv[2], fullPage: true });
  await browser.close();
})();' "$1" "$PWD/$2"
    echo "$2"
}

port=$(free_port)
"$lambda" demo --serve --dashboard-produce --http "127.0.0.1:$port" >/dev/null 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$port/v1/batch"
shoot "http://127.0.0.1:$port/" docs/dashboard.png

broker=$(free_port) port=$(free_port)
"$lambda" gen --rows 100000 --customers 10000 --corrections 0.05 --out "$work/history.jsonl"
"$lambda" broker --port "$broker" >/dev/null 2>&1 &
pids+=($!)
"$lambda" run --brokers "127.0.0.1:$broker" --input "$work/history.jsonl" --http "127.0.0.1:$port" --pg off \
    --views-out "$work/views" >/dev/null 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$port/v1/batch"
"$lambda" produce --brokers "127.0.0.1:$broker" --rate 2000 --duration 60 --customers 10000 --corrections 0.1 \
    >/dev/null 2>&1 &
pids+=($!)
sleep 6
shoot "http://127.0.0.1:$port/" docs/dashboard-10k.png
