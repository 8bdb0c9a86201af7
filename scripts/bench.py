#!/usr/bin/env python3
"""Benchmark run of the gateway against its emulator. Started by scripts/bench.sh, which
installs h2load and builds the binaries first; uses the Python standard library only.

Starts the emulator and the gateway as separate processes on port 0 (emulator rate limit
off), then measures:
  1. latency at concurrency 1 (bench client): GetSync, the direct REST GET, health check;
  2. saturation throughput and CPU per call (h2load; CPU from /proc/PID/stat), with every
     gRPC status checked against the gateway's own metrics;
  3. start to SERVING (bench client, median of several starts) and the binary's size;
  4. watchers, once the gateway has a WatchSync RPC (until then: reported as not measured).
Prints a table, checks each goal of the benchmark issue, and (unless --smoke or --no-write)
writes BENCHMARKS.md. Exits non-zero when a measurement is invalid (a failed call, a gRPC
status other than OK), not when a goal is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto/commenda/sync/v1/sync.proto"
DEMO_KEY = "commenda-demo-key"
LIST_COMPANY = 496
LIST_PAGE_SIZE = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")

HEALTH_METHOD = "/grpc.health.v1.Health/Check"
GET_SYNC_METHOD = "/commenda.sync.v1.SyncService/GetSync"
LIST_SYNCS_METHOD = "/commenda.sync.v1.SyncService/ListSyncs"

# Goals of the benchmark issue, as ratios taken in one run.
HOP_OVERHEAD_MAX_HEALTH_P50S = 1.5
CPU_GET_SYNC_MAX_HEALTH_CPUS = 2.5
START_MAX_MS = 200.0


@dataclass
class Sizes:
    """How much work each part of a run does; --smoke shrinks everything."""

    latency_warmup: int
    latency_calls: int
    h2load_warmup: int
    grpc_requests: int
    health_requests: int
    rest_requests: int
    start_runs: int
    profile_seconds: int


FULL = Sizes(500, 5000, 2000, 40_000, 100_000, 40_000, 9, 8)
SMOKE = Sizes(10, 50, 50, 300, 300, 300, 2, 0)

# h2load load shape: one thread, a few connections, several streams each (gRPC) or many
# HTTP/1.1 connections (REST, which has no multiplexing).
GRPC_LOAD = ["-t", "1", "-c", "4", "-m", "8"]
REST_LOAD = ["-t", "1", "-c", "32"]


class BenchError(Exception):
    """A measurement that cannot be trusted; the run stops."""


# ---------------------------------------------------------------------------------------
# processes


@dataclass
class Server:
    """A child process that announced itself with the serving line."""

    name: str
    proc: subprocess.Popen
    listen: str
    log: Path

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after it start past the ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def spawn(name: str, argv: list[str], workdir: Path) -> Server:
    log = workdir / f"{name}.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "COMMENDA_", "EMULATOR_"))
    }
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        env=env,
        text=True,
    )
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=15)
        raise BenchError(f"{name} exited before serving; see its log:\n{log.read_text()[-2000:]}")
    serving = json.loads(line)
    return Server(name, proc, serving["listen"], log)


def free_port() -> int:
    """A port that was free a moment ago: bound on port 0, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def wait_for(url: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            http_get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{url} did not answer within {seconds} s") from None
            time.sleep(0.02)


def run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(argv[:3])} ... failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return done.stdout


# ---------------------------------------------------------------------------------------
# measurements


def metrics_ok_counts(metrics_url: str) -> dict[tuple[str, str], float]:
    """commenda_gateway_rpcs_total by (method, code)."""
    counts: dict[tuple[str, str], float] = {}
    pattern = re.compile(r"^commenda_gateway_rpcs_total\{(.*)\} (\S+)$")
    for line in http_get(metrics_url).decode().splitlines():
        match = pattern.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            counts[(labels["method"], labels["code"])] = float(match.group(2))
    return counts


@dataclass
class H2loadResult:
    done: int
    succeeded: int
    failed: int
    seconds: float
    rps: float


def parse_h2load(text: str) -> H2loadResult:
    finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    requests = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", text
    )
    if not finished or not requests:
        raise BenchError(f"cannot read h2load's output:\n{text[-2000:]}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    return H2loadResult(
        done=int(requests.group(3)),
        succeeded=int(requests.group(4)),
        failed=int(requests.group(5)),
        seconds=seconds,
        rps=float(finished.group(3)),
    )


UNSHARED_GET_SYNC = "GetSync, each read upstream"
"""A caller's own x-request-id keeps a read out of single flight, so every GetSync of this
case makes its own upstream request."""


@dataclass
class LoadCase:
    """One saturation measurement."""

    name: str
    url: str
    requests: int
    h2load_args: list[str]
    grpc_method: str | None  # None for the REST side, which the gateway does not see


@dataclass
class LoadResult:
    case: LoadCase
    rps: float
    requests: int
    gateway_cpu_us: float
    emulator_cpu_us: float
    gateway_rss_kib: int


def grpc_args(frame: Path) -> list[str]:
    return [
        *GRPC_LOAD,
        "-d",
        str(frame),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
    ]


def saturate(
    case: LoadCase, gateway: Server, emulator: Server, metrics_url: str, warmup: int
) -> LoadResult:
    """Runs h2load once to warm up and once measured; for gRPC, requires that the gateway
    counted exactly as many OK answers of the method as h2load saw succeed."""
    h2load = ["h2load", *case.h2load_args]
    run([*h2load, "-n", str(warmup), case.url], timeout=120)

    before = metrics_ok_counts(metrics_url)
    gw_cpu, emu_cpu = gateway.cpu_seconds(), emulator.cpu_seconds()
    result = parse_h2load(run([*h2load, "-n", str(case.requests), case.url], timeout=600))
    gw_cpu, emu_cpu = gateway.cpu_seconds() - gw_cpu, emulator.cpu_seconds() - emu_cpu
    after = metrics_ok_counts(metrics_url)

    if result.failed or result.succeeded != case.requests:
        raise BenchError(f"{case.name}: h2load saw {result.succeeded} of {case.requests} succeed")
    if case.grpc_method:
        check_grpc_statuses(case, before, after, result.succeeded)
    return LoadResult(
        case=case,
        rps=result.rps,
        requests=result.succeeded,
        gateway_cpu_us=gw_cpu / result.succeeded * 1e6,
        emulator_cpu_us=emu_cpu / result.succeeded * 1e6,
        gateway_rss_kib=gateway.rss_kib(),
    )


def check_grpc_statuses(case: LoadCase, before: dict, after: dict, succeeded: int) -> None:
    deltas = {key: after[key] - before.get(key, 0.0) for key in after}
    ok = deltas.get((case.grpc_method, "OK"), 0.0)
    other = {
        code: n
        for (method, code), n in deltas.items()
        if method == case.grpc_method and code != "OK" and n
    }
    if ok != succeeded or other:
        raise BenchError(
            f"{case.name}: h2load saw {succeeded} HTTP successes but the gateway counted "
            f"{ok:.0f} OK and {other or 'no'} other statuses"
        )


def measure_latency(
    client: Path, gateway: Server, rest_url: str, sync_id: str, sizes: Sizes
) -> dict:
    argv = [
        str(client), "latency",
        "--gateway", gateway.listen,
        "--rest-url", rest_url,
        "--api-key", DEMO_KEY,
        "--sync-id", sync_id,
        "--warmup", str(sizes.latency_warmup),
        "--calls", str(sizes.latency_calls),
    ]  # fmt: skip
    return json.loads(run(argv, timeout=600))


def measure_start(client: Path, binary: Path, rest_url: str, runs: int) -> dict:
    argv = [
        str(client),
        "start",
        "--bin",
        str(binary),
        "--upstream-url",
        rest_url,
        "--runs",
        str(runs),
    ]
    return json.loads(run(argv, timeout=300))


def binary_sizes(binary: Path, workdir: Path) -> dict:
    sizes = {"on_disk": binary.stat().st_size, "stripped": None}
    strip = shutil.which("strip")
    if strip:
        stripped = workdir / "stripped"
        subprocess.run([strip, "-o", str(stripped), str(binary)], check=True)
        sizes["stripped"] = stripped.stat().st_size
    return sizes


def measure_watchers() -> dict:
    """Watcher goals: 1,000 and 10,000 WatchSync streams over 100 running syncs. They need
    fresh processes per stream count and several minutes, so scripts/bench_watchers.sh
    measures them right after this script (bench.sh runs both) and writes its own section."""
    return {
        "measured": False,
        "reason": "measured by scripts/bench_watchers.sh: see the Watchers section below",
    }


def perf_profile(case: LoadCase, gateway: Server, seconds: int, workdir: Path) -> dict | str:
    """Samples the gateway with perf while h2load drives `case`; returns each component's
    share of the gateway's on-CPU samples (self time), or why there is no profile."""
    slug = re.sub(r"\W", "", case.name)
    data = workdir / f"perf-{slug}.data"
    record = ["perf", "record", "-F", "499", "-g", "-o", str(data), "-p", str(gateway.proc.pid)]
    perf = subprocess.Popen(
        [*record, "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        h2load = ["h2load", *case.h2load_args, "-n", "2000", case.url]
        subprocess.run(h2load, check=False, capture_output=True, timeout=120)
    _, err = perf.communicate(timeout=120)
    if perf.returncode != 0 or not data.exists():
        return f"perf record failed: {err.strip()[-300:]}"
    fields = ["-F", "overhead,dso,sym", "-g", "none", "--percent-limit", "0"]
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", *fields],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    shares: dict[str, float] = {}
    pattern = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$")
    for line in report.stdout.splitlines():
        match = pattern.match(line)
        if match:
            name = component(match.group(2), match.group(4))
            shares[name] = shares.get(name, 0.0) + float(match.group(1)) / 100
    return shares or f"perf report gave no samples: {report.stderr.strip()[-300:]}"


def component(dso: str, symbol: str) -> str:
    """Where a sampled symbol belongs: the kernel, the C allocator, or a Rust crate."""
    if dso.startswith("[kernel"):
        return "kernel (syscalls, loopback TCP, scheduler)"
    if dso.startswith("libc"):
        if re.search(r"malloc|free|_int_|unlink_chunk|realloc|calloc|tcache", symbol):
            return "glibc malloc/free"
        if re.search(r"mem(move|cpy|cmp|set)|str", symbol):
            return "libc memcpy/memcmp"
        return "libc, other"
    if dso != "commenda-sync-gateway":
        return dso
    inner = re.sub(r"^(core::ptr::drop_in_place<|<)+&?(mut )?(dyn )?", "", symbol)
    crate = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", inner)
    name = crate.group(1) if crate else "unresolved"
    if name in ("core", "alloc", "std"):
        return "Rust std (core, alloc, std)"
    if name == "commenda_sync_gateway":
        return "gateway code"
    return name


def profile_rows(profiles: dict[str, dict], loads: dict[str, LoadResult]) -> list[list[str]]:
    """Microseconds of gateway CPU per call by component: each component's share of the
    samples times the CPU per call measured at saturation."""
    names = list(profiles)
    per_call = {n: {c: f * loads[n].gateway_cpu_us for c, f in profiles[n].items()} for n in names}
    components = sorted(
        {c for costs in per_call.values() for c in costs},
        key=lambda c: -per_call[names[0]].get(c, 0.0),
    )
    rows, other = [], dict.fromkeys(names, 0.0)
    for index, comp in enumerate(components):
        costs = [per_call[n].get(comp, 0.0) for n in names]
        if index < 14:
            rows.append([comp, *(f"{c:.1f}" for c in costs)])
        else:
            for n, c in zip(names, costs):
                other[n] += c
    rows.append(["everything else", *(f"{other[n]:.1f}" for n in names)])
    rows.append(["total (CPU per call)", *(f"{loads[n].gateway_cpu_us:.1f}" for n in names)])
    return rows


def profile_digest(rows: list[list[str]]) -> str:
    """One sentence naming the components that make up most of the difference."""
    *parts, _, total = rows
    extra = float(total[1]) - float(total[2])
    diffs = sorted(((float(r[1]) - float(r[2]), r[0]) for r in parts), reverse=True)[:5]
    named = ", ".join(f"{name} {diff:+.1f}" for diff, name in diffs)
    return (
        f"A GetSync costs {extra:.1f} us more gateway CPU than a health check; the largest "
        f"parts of that difference (us per call): {named}."
    )


# ---------------------------------------------------------------------------------------
# report


def machine_facts() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rustc": subprocess.run(
            ["rustc", "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "h2load": subprocess.run(
            ["h2load", "--version"], capture_output=True, text=True
        ).stdout.strip(),
    }


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Goal:
    name: str
    target: str
    measured: str
    met: bool | None  # None: not measured
    note: str = ""


def evaluate(
    latency: dict, loads: dict[str, LoadResult], start: dict, watchers: dict
) -> list[Goal]:
    get_p50 = latency["get_sync"]["p50_us"]
    rest_p50 = latency["rest_get"]["p50_us"]
    health_p50 = latency["health"]["p50_us"]
    hop = get_p50 - rest_p50
    hop_max = HOP_OVERHEAD_MAX_HEALTH_P50S * health_p50
    # The goal is judged on reads that each reach the upstream: h2load repeats one request,
    # and identical concurrent reads otherwise share one upstream request (single flight).
    unshared = loads[UNSHARED_GET_SYNC]
    cpu_ratio = unshared.gateway_cpu_us / loads["Health/Check"].gateway_cpu_us
    goals = [
        Goal(
            "hop overhead",
            f"p50(GetSync) - p50(REST) <= {HOP_OVERHEAD_MAX_HEALTH_P50S} x p50(health) = {hop_max:.0f} us",
            f"{get_p50:.0f} - {rest_p50:.0f} = {hop:.0f} us ({hop / health_p50:.2f} x health p50)",
            hop <= hop_max,
            miss_by(hop, hop_max, "us"),
        ),
        Goal(
            "CPU per GetSync",
            f"<= {CPU_GET_SYNC_MAX_HEALTH_CPUS} x CPU per health check",
            f"{unshared.gateway_cpu_us:.1f} / {loads['Health/Check'].gateway_cpu_us:.1f} us "
            f"= {cpu_ratio:.2f} x (each read upstream; shared reads: "
            f"{loads['GetSync'].gateway_cpu_us / loads['Health/Check'].gateway_cpu_us:.2f} x)",
            cpu_ratio <= CPU_GET_SYNC_MAX_HEALTH_CPUS,
            miss_by(cpu_ratio, CPU_GET_SYNC_MAX_HEALTH_CPUS, "x"),
        ),
        Goal(
            "start to SERVING",
            f"<= {START_MAX_MS:.0f} ms",
            f"median {start['median_ms']:.1f} ms of {len(start['runs_ms'])} starts",
            start["median_ms"] <= START_MAX_MS,
            miss_by(start["median_ms"], START_MAX_MS, "ms"),
        ),
    ]
    for name, target in [
        (
            "10,000 watchers: upstream requests",
            "<= 1.1 x the upstream requests/min of 100 watchers",
        ),
        ("RSS per idle watch stream", "<= 16 KiB"),
        ("event latency p99, 10,000 watchers", "<= poll interval + 50 ms"),
    ]:
        goals.append(Goal(name, target, "not measured", None, watchers["reason"]))
    return goals


def miss_by(value: float, limit: float, unit: str) -> str:
    if value <= limit:
        return ""
    return f"missed by {value - limit:.1f} {unit} ({(value / limit - 1) * 100:.0f}% over)"


def verdict(goal: Goal) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[goal.met]


def latency_rows(latency: dict) -> list[list[str]]:
    names = [
        ("get_sync", "GetSync via gateway"),
        ("rest_get", "REST GET /v4/core/syncs/{id}"),
        ("health", "Health/Check"),
    ]
    rows = []
    for key, label in names:
        s = latency[key]
        rows.append(
            [
                label,
                f"{s['p50_us']:.0f}",
                f"{s['p90_us']:.0f}",
                f"{s['p99_us']:.0f}",
                f"{s['mean_us']:.0f}",
                str(s["n"]),
            ]
        )
    return rows


def load_rows(loads: dict[str, LoadResult]) -> list[list[str]]:
    rows = []
    for name, r in loads.items():
        gw = f"{r.gateway_cpu_us:.1f}" if r.case.grpc_method else "-"
        rows.append(
            [
                name,
                f"{r.rps:,.0f}",
                f"{r.requests:,}",
                gw,
                f"{r.emulator_cpu_us:.1f}",
                f"{r.gateway_rss_kib / 1024:.1f}",
            ]
        )
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        + [fmt.format(*r) for r in rows]
    )


LATENCY_HEADER = ["call (concurrency 1)", "p50 us", "p90 us", "p99 us", "mean us", "calls"]
LOAD_HEADER = [
    "saturation",
    "req/s",
    "requests",
    "gateway CPU us/call",
    "emulator CPU us/call",
    "gateway RSS MiB",
]
PROFILE_HEADER = ["component", "GetSync (each read upstream) us/call", "Health/Check us/call"]
GOAL_HEADER = ["goal", "target", "measured", "verdict"]


def goal_rows(goals: list[Goal]) -> list[list[str]]:
    return [
        [g.name, g.target, g.measured, verdict(g) + (f": {g.note}" if g.note else "")]
        for g in goals
    ]


def write_markdown(path: Path, report: dict) -> None:
    facts, goals = report["machine"], report["goals"]
    start, size = report["start"], report["binary"]
    loads_before, loads_after = report["load_before"], report["load_after"]
    shared = float(loads_before.split()[0]) > 0.5 * facts["nproc"]
    parts = [
        "# Benchmarks",
        "",
        "Figures from the latest full run of `bash scripts/bench.sh` (written by "
        "`scripts/bench.py`; edit only the notes at the end). Every goal is a ratio of figures "
        "taken in the same run, so a slower or busier machine moves both sides.",
        "",
        "## Machine",
        "",
        f"- date: {facts['date']}",
        f"- cores (`nproc`): {facts['nproc']}; CPU: {facts['cpu']}",
        f"- kernel: {facts['kernel']}",
        f"- {facts['rustc']}; {facts['h2load']}",
        f"- load average (1, 5, 15 min) before the run: {loads_before}; after: {loads_after}",
    ]
    if shared:
        parts.append(
            "- **The machine was shared**: other builds and tests ran at the same time (the load "
            "average above exceeds half the cores before the run started), so absolute figures "
            "are noisier and lower than on an idle machine; the ratios are what to read."
        )
    parts += [
        "",
        "## Setup",
        "",
        "The emulator (`commenda-sync-gateway emulator`, rate limit off) and the gateway "
        "(`--upstream-url` pointing at it, default key `commenda-demo-key`, metrics on) run as "
        "separate release-built processes on loopback; the load generators share the same cores.",
        "",
        f"- Latency: `examples/bench_client.rs`, one call at a time, the three kinds interleaved "
        f"call by call (rotating order) so noise hits all alike; {report['sizes']['latency_warmup']} "
        f"warm-up rounds, then {report['sizes']['latency_calls']} timed rounds. Each side keeps one "
        "connection open (HTTP/2 to the gateway, HTTP/1.1 keep-alive to the REST API).",
        f"- Saturation: h2load, gRPC with `{' '.join(GRPC_LOAD)}` (4 connections, 8 streams each), "
        f"REST with `--h1 {' '.join(REST_LOAD)}`; a warm-up run first. CPU per call is the "
        "process's utime + stime (`/proc/PID/stat`) over the measured run divided by the calls "
        "served. Every gRPC run is checked against the gateway's `commenda_gateway_rpcs_total`: "
        "the OK count must grow by exactly the requests h2load completed, with no other code.",
        f"- ListSyncs reads company {LIST_COMPANY} with a page of {LIST_PAGE_SIZE} (the company "
        f"has {report['list_count']} PULL syncs, so the page holds that many); GetSync reads "
        "one of its finished syncs.",
        "",
        "## Results",
        "",
        markdown_table(LATENCY_HEADER, latency_rows(report["latency"])),
        "",
        markdown_table(LOAD_HEADER, load_rows(report["loads"])),
        "",
        "In the REST row the gateway is not involved: its CPU is not attributed, and the "
        "emulator column is the floor the gateway's rows add to.",
        "",
        f"- Start to SERVING (spawn to the first SERVING health answer, fresh process each time): "
        f"median {start['median_ms']:.1f} ms, min {start['min_ms']:.1f}, max {start['max_ms']:.1f} "
        f"over {len(start['runs_ms'])} starts.",
        f"- Release binary: {size['on_disk'] / 2**20:.1f} MiB on disk (with line tables, as built), "
        + (
            f"{size['stripped'] / 2**20:.1f} MiB stripped."
            if size["stripped"]
            else "strip not available."
        ),
        "",
        "## Goals",
        "",
        markdown_table(GOAL_HEADER, goal_rows(goals)),
        "",
        "## Watchers",
        "",
        "The three watcher goals above are measured by `scripts/bench_watchers.sh`, which "
        "`scripts/bench.sh` runs after this part on fresh processes; its figures and verdicts "
        "are in the second Watchers section, below the notes.",
    ]
    if report.get("profile"):
        parts += [
            "",
            "## Where the gateway's CPU goes",
            "",
            "A goal was missed, so the gateway was sampled with `perf record -g` (499 Hz) while "
            "h2load drove GetSync, then the health check, as in the saturation runs. Each "
            "component's share of the samples (self time) times the CPU per call measured above "
            "gives microseconds per call:",
            "",
            markdown_table(PROFILE_HEADER, report["profile"]),
            "",
            profile_digest(report["profile"]),
        ]
        if report.get("profile_summary"):
            parts += ["", report["profile_summary"]]
    elif report.get("profile_error"):
        parts += ["", "## Profile", "", f"No profile: {report['profile_error']}"]
    path.write_text("\n".join(parts) + "\n\n" + kept_notes(path))


NOTES_MARKER = (
    "<!-- Everything below this line is written by hand; scripts/bench.py keeps it when it "
    "rewrites the figures above. -->"
)


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing results file, from the marker on."""
    old = path.read_text() if path.exists() else ""
    if NOTES_MARKER in old:
        return old[old.index(NOTES_MARKER) :]
    return NOTES_MARKER + "\n\n## Notes\n\nNone yet.\n"


# ---------------------------------------------------------------------------------------
# main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny counts; never writes BENCHMARKS.md"
    )
    parser.add_argument(
        "--bin-dir", default=str(ROOT / "target/release"), help="where the gateway binary is"
    )
    parser.add_argument("--client", default=str(ROOT / "target/release/examples/bench_client"))
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument("--profile-summary", default="", help="a paragraph added under the profile")
    args = parser.parse_args()

    sizes = SMOKE if args.smoke else FULL
    binary = Path(args.bin_dir) / "commenda-sync-gateway"
    client = Path(args.client)
    load_before = load_average()

    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        workdir = Path(tmp)
        servers: list[Server] = []
        try:
            report = bench(binary, client, sizes, workdir, servers, smoke=args.smoke)
        except BenchError as error:
            print(f"bench: {error}", file=sys.stderr)
            return 1
        finally:
            for server in reversed(servers):
                server.stop()

    report["load_before"], report["load_after"] = load_before, load_average()
    report["machine"] = machine_facts()
    report["profile_summary"] = args.profile_summary
    print_report(report)
    if not args.smoke and not args.no_write:
        write_markdown(ROOT / "BENCHMARKS.md", report)
        print("\nwrote BENCHMARKS.md")
    return 0


def bench(
    binary: Path, client: Path, sizes: Sizes, workdir: Path, servers: list[Server], smoke: bool
) -> dict:
    emulator = spawn(
        "emulator",
        [str(binary), "emulator", "--listen", "127.0.0.1:0", "--emulator-rate-limit", "0"],
        workdir,
    )
    servers.append(emulator)
    rest_url = f"http://{emulator.listen}/v4"

    metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
    gateway = spawn(
        "gateway",
        [
            str(binary),
            "--listen", "127.0.0.1:0",
            "--upstream-url", rest_url,
            "--default-api-key", DEMO_KEY,
            "--metrics-listen", metrics_url.removeprefix("http://").removesuffix("/metrics"),
        ],
        workdir,
    )  # fmt: skip
    servers.append(gateway)
    wait_for(metrics_url)

    listed = json.loads(
        http_get(f"{rest_url}/core/companies/{LIST_COMPANY}/syncs", {"api_key": DEMO_KEY})
    )
    sync_id = listed["data"]["syncs"][0]["id"]
    list_count = len(listed["data"]["syncs"])

    print(f"emulator {emulator.listen}, gateway {gateway.listen}, sync {sync_id}", file=sys.stderr)
    print("latency at concurrency 1 ...", file=sys.stderr)
    latency = measure_latency(client, gateway, rest_url, sync_id, sizes)

    frames = {}
    for name, kind in [("get_sync", ["get-sync", "--sync-id", sync_id]),
                       ("list_syncs", ["list-syncs", "--company-id", str(LIST_COMPANY), "--page-size", str(LIST_PAGE_SIZE)]),
                       ("health", ["health"])]:  # fmt: skip
        frames[name] = workdir / f"{name}.bin"
        run([str(client), "frame", "--out", str(frames[name]), *kind], timeout=30)

    grpc = f"http://{gateway.listen}"
    cases = [
        LoadCase("GetSync", f"{grpc}/commenda.sync.v1.SyncService/GetSync", sizes.grpc_requests, grpc_args(frames["get_sync"]), GET_SYNC_METHOD),
        LoadCase(UNSHARED_GET_SYNC, f"{grpc}/commenda.sync.v1.SyncService/GetSync", sizes.grpc_requests, [*grpc_args(frames["get_sync"]), "-H", "x-request-id: bench"], GET_SYNC_METHOD),
        LoadCase("ListSyncs (20)", f"{grpc}/commenda.sync.v1.SyncService/ListSyncs", sizes.grpc_requests, grpc_args(frames["list_syncs"]), LIST_SYNCS_METHOD),
        LoadCase("Health/Check", f"{grpc}/grpc.health.v1.Health/Check", sizes.health_requests, grpc_args(frames["health"]), HEALTH_METHOD),
        LoadCase("REST GET sync (h1)", f"{rest_url}/core/syncs/{sync_id}", sizes.rest_requests, ["--h1", *REST_LOAD, "-H", f"api_key: {DEMO_KEY}"], None),
    ]  # fmt: skip
    loads = {}
    for case in cases:
        print(f"saturation: {case.name} ...", file=sys.stderr)
        loads[case.name] = saturate(case, gateway, emulator, metrics_url, sizes.h2load_warmup)

    print("start to SERVING ...", file=sys.stderr)
    start = measure_start(client, binary, rest_url, sizes.start_runs)
    watchers = measure_watchers()
    goals = evaluate(latency, loads, start, watchers)

    profiles: dict[str, dict] = {}
    profile_error = None
    missed = not smoke and any(g.met is False for g in goals[:2])
    if missed and not shutil.which("perf"):
        profile_error = "perf is not installed (Debian: linux-perf)"
    elif missed:
        by_name = {case.name: case for case in cases}
        for case in (by_name[UNSHARED_GET_SYNC], by_name["Health/Check"]):
            print(f"a goal was missed: profiling {case.name} ...", file=sys.stderr)
            result = perf_profile(case, gateway, sizes.profile_seconds, workdir)
            if isinstance(result, str):
                profile_error = result
                break
            profiles[case.name] = result

    return {
        "sizes": vars(sizes),
        "smoke": smoke,
        "list_count": list_count,
        "latency": latency,
        "loads": loads,
        "start": start,
        "binary": binary_sizes(binary, workdir),
        "watchers": watchers,
        "goals": goals,
        "profile": profile_rows(profiles, loads) if len(profiles) == 2 else None,
        "profile_error": profile_error,
    }


def print_report(report: dict) -> None:
    print()
    print(text_table(LATENCY_HEADER, latency_rows(report["latency"])))
    print()
    print(text_table(LOAD_HEADER, load_rows(report["loads"])))
    start, size = report["start"], report["binary"]
    print(
        f"\nstart to SERVING: median {start['median_ms']:.1f} ms ({len(start['runs_ms'])} starts)"
    )
    print(
        f"binary: {size['on_disk']:,} bytes"
        + (f", {size['stripped']:,} stripped" if size["stripped"] else "")
    )
    print()
    print(text_table(GOAL_HEADER, goal_rows(report["goals"])))
    if report.get("profile"):
        print("\ngateway CPU per call by component (perf, self time):")
        print(text_table(PROFILE_HEADER, report["profile"]))
        print(profile_digest(report["profile"]))
    elif report.get("profile_error"):
        print(f"\nno profile: {report['profile_error']}")
    if report["smoke"]:
        print("\nsmoke run: counts too small for the figures or verdicts to mean anything")


if __name__ == "__main__":
    sys.exit(main())
