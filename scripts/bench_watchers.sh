#!/usr/bin/env bash
# The watcher benchmark: 100, 1,000 and 10,000 WatchSync streams over 100 running syncs,
# each against a fresh release gateway and emulator (separate processes, rate limit off).
# Prints a table and writes it into BENCHMARKS.md between the watcher markers.
#
#   bash scripts/bench_watchers.sh           # the full run
#   bash scripts/bench_watchers.sh --smoke   # a few streams, for CI; writes nothing
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

if [[ ${1:-} == --smoke ]]; then
    PROFILE=debug; BUILD=(cargo build --locked); RUNS=(20 200); SYNCS=5; JOB_MS=6000
    SETTLE=3; WINDOW=2
else
    PROFILE=release; BUILD=(cargo build --release --locked); RUNS=(100 1000 10000); SYNCS=100
    JOB_MS=40000; SETTLE=15; WINDOW=15
fi
POLL_MS=2000
"${BUILD[@]}" --bin commenda-sync-gateway --example bench_watchers
BIN=target/$PROFILE/commenda-sync-gateway
CLIENT=target/$PROFILE/examples/bench_watchers

source scripts/lib.sh

# run STREAMS: one measurement on fresh processes; prints the client's JSON line.
run() {
    local out=$WORK/$1
    mkdir -p "$out"
    "$BIN" emulator --listen 127.0.0.1:0 --emulator-rate-limit 0 --emulator-job-duration-ms "$JOB_MS" \
        --emulator-extra-companies "$SYNCS" >"$out/emulator.out" 2>"$out/emulator.err" &
    local emu_pid=$!
    local emu
    emu=$(field "$(serving_line "$out/emulator.out")" upstream)
    "$BIN" --listen 127.0.0.1:0 --upstream-url "$emu" --default-api-key commenda-demo-key \
        --watch-poll-interval-ms "$POLL_MS" --watch-heartbeat-interval-ms 15000 \
        --watch-budget-per-minute 1000000 --watch-budget-burst 100000 \
        >"$out/gateway.out" 2>"$out/gateway.err" &
    local gw_pid=$!
    local gw
    gw=$(field "$(serving_line "$out/gateway.out")" listen)
    "$CLIENT" "$gw" "$emu" "$gw_pid" "$1" "$SYNCS" "$SETTLE" "$WINDOW"
    kill -TERM "$gw_pid" "$emu_pid"
    wait "$gw_pid" "$emu_pid" || true
}

RESULTS=$WORK/results.jsonl
for streams in "${RUNS[@]}"; do
    echo "==> $streams streams over $SYNCS syncs" >&2
    run "$streams" | tee -a "$RESULTS"
done

python3 - "$RESULTS" "$POLL_MS" "${1:-}" <<'PY'
import datetime, json, re, sys
path, poll_ms, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = [json.loads(line) for line in open(path) if line.strip()]
for run in runs:
    assert run["failures"] == 0, f"streams failed: {run}"
    assert run["finals"] == run["streams"], f"not every stream saw its final state: {run}"
if mode == "--smoke":
    print("bench_watchers smoke: ok")
    sys.exit(0)
base, top = runs[0], runs[-1]
ratio = top["upstream_per_minute"] / base["upstream_per_minute"]
rows = "\n".join(
    f"| {r['streams']} | {r['syncs']} | {r['open_secs']:.1f} | {r['rss_per_stream_bytes'] / 1024:.1f} "
    f"| {r['upstream_per_minute']:.0f} | {r['latency_p50_ms']:.0f} | {r['latency_p99_ms']:.0f} |"
    for r in runs)
goals = [
    ("upstream requests/min, 10,000 vs 100 watchers", f"{ratio:.2f}x", "<= 1.1x", ratio <= 1.1),
    ("RSS per idle watch stream (10,000)", f"{top['rss_per_stream_bytes'] / 1024:.1f} KiB",
     "<= 16 KiB", top["rss_per_stream_bytes"] <= 16 * 1024),
    ("event latency p99 (10,000)", f"{top['latency_p99_ms']:.0f} ms",
     f"<= {poll_ms + 50} ms (poll interval + 50 ms)", top["latency_p99_ms"] <= poll_ms + 50),
]
goal_rows = "\n".join(f"| {g} | {v} | {t} | {'met' if ok else 'NOT met'} |" for g, v, t, ok in goals)
report = f"""<!-- watchers:begin -->
## Watchers

`bash scripts/bench_watchers.sh` on {datetime.date.today()}: fresh release processes per row,
100 syncs running (40 s jobs) across 100 companies, streams spread evenly over them, the
gateway polling each running sync every {poll_ms} ms. Requests per minute are counted by the
emulator over the same {runs[0].get('window', 15)} s of every run, 15 s after the syncs started;
latency is from a sync's `end_time` (emulator clock, this machine's) to the final state's
arrival at the client.

| streams | syncs | open all (s) | RSS per stream (KiB) | upstream req/min | latency p50 (ms) | latency p99 (ms) |
|---|---|---|---|---|---|---|
{rows}

| goal | measured | target | |
|---|---|---|---|
{goal_rows}
<!-- watchers:end -->"""
print(report)
try:
    text = open("BENCHMARKS.md").read()
except FileNotFoundError:
    text = "# Benchmarks\n"
if "<!-- watchers:begin -->" in text:
    text = re.sub(r"<!-- watchers:begin -->.*<!-- watchers:end -->", lambda _: report, text, flags=re.S)
else:
    text = text.rstrip() + "\n\n" + report + "\n"
open("BENCHMARKS.md", "w").write(text)
PY
