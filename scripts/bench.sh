#!/usr/bin/env bash
# The benchmark command: installs h2load when it is missing, builds the gateway and the
# bench client, then runs scripts/bench.py, which starts the emulator and the gateway, prints
# the table and writes BENCHMARKS.md. Every load it sends goes to loopback and is bounded.
#
#   bash scripts/bench.sh            # release build, then about two minutes of runs
#   bash scripts/bench.sh --smoke    # tiny counts on the debug build, a few seconds; writes nothing
#
# Any other arguments are passed to scripts/bench.py (see its --help).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

smoke=0
if [[ ${1:-} == --smoke ]]; then
    smoke=1
    shift
fi

ensure_h2load() {
    command -v h2load >/dev/null && return 0
    echo "bench.sh: installing h2load (Debian nghttp2-client)" >&2
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq nghttp2-client >/dev/null
}

# perf profiles the gateway when a goal is missed; the run goes on without it.
ensure_perf() {
    command -v perf >/dev/null && return 0
    echo "bench.sh: installing perf (Debian linux-perf); without it no profile is taken" >&2
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get install -y -qq linux-perf >/dev/null || true
}

ensure_h2load
[[ $smoke -eq 1 ]] || ensure_perf
command -v python3 >/dev/null || { echo "bench.sh: python3 is required" >&2; exit 1; }

# The example needs the dev-dependencies, whose features would leak into the gateway binary if
# both were built by one command; so the client is built first, then the binary on its own.
if [[ $smoke -eq 1 ]]; then
    cargo build --locked --example bench_client
    cargo build --locked --bin commenda-sync-gateway
    python3 scripts/bench.py --smoke --bin-dir target/debug \
        --client target/debug/examples/bench_client "$@"
    exec bash scripts/bench_watchers.sh --smoke
fi

cargo build --release --locked --example bench_client
cargo build --release --locked --bin commenda-sync-gateway
python3 scripts/bench.py --bin-dir target/release \
    --client target/release/examples/bench_client "$@"
# The watcher goals, on fresh processes of their own (about six minutes).
exec bash scripts/bench_watchers.sh
