#!/usr/bin/env bash
# Makes the README's screenshots of the dashboard from a real browser: `lambda demo --serve`
# (the workshop: history, then its three messages), then headless Chromium on `GET /`.
#   docs/screenshots.sh            -> docs/dashboard.png
# Needs chromium (Debian package `chromium`; ./test installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cargo build --release --quiet
./target/release/lambda demo --serve --dashboard-produce --http "127.0.0.1:$port" >/dev/null 2>&1 &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v1/batch" >/dev/null && break
    sleep 0.1
done
profile=$(mktemp -d)
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --window-size=1400,1000 --timeout=4000 \
    --screenshot="$PWD/docs/dashboard.png" "http://127.0.0.1:$port/" 2>/dev/null
rm -rf "$profile"
echo "docs/dashboard.png"
