#!/usr/bin/env bash
# A bounded soak: the release gateway in front of the emulator (separate processes, rate
# limit off, about 5% of upstream requests failing), a steady mix of every RPC and
# STREAMS WatchSync streams for SECONDS seconds. Reports unexpected status codes (goal 0),
# panics (goal 0) and the gateway's RSS at the start and the end (goal: flat), and writes
# the figures into BENCHMARKS.md between the soak markers. Not part of the test command.
#
#   bash scripts/soak.sh [SECONDS=60] [STREAMS=200]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_TO_RUN=${1:-60}
STREAMS=${2:-200}
WORKERS=8
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --locked --bin commenda-sync-gateway --example soak
BIN=target/release/commenda-sync-gateway

source scripts/lib.sh
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

"$BIN" emulator --listen 127.0.0.1:0 --emulator-rate-limit 0 --emulator-job-duration-ms 3000 \
    >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
EMU_PID=$!
EMU=$(field "$(serving_line "$WORK/emulator.out")" upstream)
ADMIN=${EMU%/v4}/__emulator/faults

# About 5% of upstream requests fail, in four ways.
for fault in \
    '{"kind": "status", "code": 503, "probability": 0.02}' \
    '{"kind": "status", "code": 500, "probability": 0.01}' \
    '{"kind": "drop", "probability": 0.01}' \
    '{"kind": "malformed", "probability": 0.01}'; do
    curl -fsS -X POST "$ADMIN" -H 'content-type: application/json' -d "$fault" >/dev/null
done

"$BIN" --listen 127.0.0.1:0 --upstream-url "$EMU" --default-api-key commenda-demo-key \
    --watch-budget-per-minute 100000 --watch-budget-burst 1000 --watch-poll-interval-ms 500 \
    --watch-max-failures 1000 --watch-failure-budget-ms 600000 \
    >"$WORK/gateway.out" 2>"$WORK/gateway.err" &
GW_PID=$!
GW=$(field "$(serving_line "$WORK/gateway.out")" listen)

RSS_START=$(rss_kib "$GW_PID")
target/release/examples/soak "$GW" "$SECONDS_TO_RUN" "$STREAMS" "$WORKERS" >"$WORK/summary.json" &
SOAK_PID=$!
sleep 5
RSS_WARM=$(rss_kib "$GW_PID")
wait "$SOAK_PID"
RSS_END=$(rss_kib "$GW_PID")

kill -TERM "$GW_PID"
GW_EXIT=0
wait "$GW_PID" || GW_EXIT=$?
kill -TERM "$EMU_PID"
wait "$EMU_PID" || true
PANICS=$(grep -c 'panicked' "$WORK/gateway.err" || true)

python3 - "$WORK/summary.json" "$SECONDS_TO_RUN" "$STREAMS" "$RSS_START" "$RSS_WARM" "$RSS_END" \
    "$PANICS" "$GW_EXIT" <<'PY'
import datetime, json, re, sys
path, seconds, streams, rss0, rss_warm, rss1, panics, exit_code = sys.argv[1:]
summary = json.load(open(path))
rows = "\n".join(f"| {o['rpc']} | {o['code']} | {o['count']} |" for o in summary["outcomes"])
growth = (int(rss1) - int(rss_warm)) / max(int(rss_warm), 1) * 100
report = f"""<!-- soak:begin -->
## Soak

`bash scripts/soak.sh {seconds} {streams}` on {datetime.date.today()}: every RPC from 8 workers
and {streams} WatchSync streams for {seconds} s, with about 5% of upstream requests failing
(503 2%, 500 1%, dropped connection 1%, malformed body 1%).

| figure | value | goal |
|---|---|---|
| calls and streams observed | {summary['total']} | |
| unexpected status codes | {summary['unexpected']} | 0 |
| panics in the gateway's log | {panics} | 0 |
| gateway exit code after SIGTERM | {exit_code} | 0 |
| RSS at start / after 5 s warm-up / at end | {rss0} / {rss_warm} / {rss1} KiB | flat |
| RSS growth after warm-up | {growth:+.1f}% | |

| RPC | code | count |
|---|---|---|
{rows}
<!-- soak:end -->"""
print(report)
try:
    text = open("BENCHMARKS.md").read()
except FileNotFoundError:
    text = "# Benchmarks\n"
if "<!-- soak:begin -->" in text:
    text = re.sub(r"<!-- soak:begin -->.*<!-- soak:end -->", lambda _: report, text, flags=re.S)
else:
    text = text.rstrip() + "\n\n" + report + "\n"
open("BENCHMARKS.md", "w").write(text)
ok = summary["unexpected"] == 0 and int(panics) == 0 and exit_code == "0"
sys.exit(0 if ok else 1)
PY
