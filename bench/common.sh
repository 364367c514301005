# Shared by the bench scripts: sourced first. Works from the repository's root with a release
# build (made here), or with the binary LAMBDA names (nothing is built: to alternate builds);
# WORK (a scratch directory) may be given, else a new temporary one.
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cd "$REPO"
[ -n "${LAMBDA:-}" ] || cargo build --release --quiet
WORK=${WORK:-$(mktemp -d)}
LAMBDA=${LAMBDA:-$REPO/target/release/lambda}
mkdir -p "$WORK"
# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Messages the views at http://$1 reflect (the sum of the next offsets), 0 while it does not answer.
admitted() {
  (curl -s "http://$1/v1/status" || true) | python3 -c 'import json,sys
try: print(sum(json.load(sys.stdin)["as_of"]["offsets"].values()))
except Exception: print(0)'
}
# Every process started in the background stops with the script, however it ends.
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
