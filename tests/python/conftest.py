"""Fixtures shared by the client tests: the gateway as a child process, and Python stubs
generated from proto/.

Environment:
  GATEWAY_BIN  path of the built gateway binary (scripts/test.sh passes target/debug's)
  GRPCURL_BIN  path of the grpcurl executable (scripts/test.sh passes the venv's 1.8.6)
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import types
from pathlib import Path

import grpc
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
SYNC_PROTO = "commenda/sync/v1/sync.proto"

# How long the gateway may take from exec to its serving line, and to exit after SIGTERM.
STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 15.0

# Emulator settings for the shared gateways: fixed outcomes, jobs slow enough that a new sync
# is still running when a test cancels it, and no rate limit to make a busy test flaky.
TEST_EMULATOR_ARGS = (
    "--emulator-seed",
    "7",
    "--emulator-job-duration-ms",
    "3000",
    "--emulator-rate-limit",
    "0",
)


# Prefixes of the environment variables the gateway reads its settings from.
SETTING_PREFIXES = ("GATEWAY_", "COMMENDA_", "EMULATOR_")


def required_path(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.fail(f"{variable} is not set; run the suite through scripts/test.sh")
    path = Path(value)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{variable}={value} is not an executable file")
    return path


@dataclasses.dataclass
class Gateway:
    """A running gateway process and what it announced in its serving line."""

    process: subprocess.Popen
    address: str
    upstream: str
    serving: dict
    stderr_path: Path
    stdout_lines: queue.Queue
    stdout_pump: threading.Thread
    extra_stdout: list[str] = dataclasses.field(default_factory=list)

    def stderr_tail(self, lines: int = 40) -> str:
        text = self.stderr_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> int:
        """Sends SIGTERM and waits for the exit; kills it and fails if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"gateway did not exit within {timeout}s of SIGTERM")
        self.stdout_pump.join(timeout=5)
        while not self.stdout_lines.empty():
            line = self.stdout_lines.get()
            if line is not None:
                self.extra_stdout.append(line)
        return self.process.returncode


def _pump_stdout(stream, lines: queue.Queue) -> None:
    """Moves every stdout line into the queue, then None at EOF, so the pipe never fills."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def start_gateway(binary: Path, workdir: Path, *args: str) -> Gateway:
    """Starts the gateway on a free loopback port and returns once it says it is serving."""
    workdir.mkdir(parents=True, exist_ok=True)
    stderr_path = workdir / "gateway.stderr.log"
    # The binary reads its settings from the environment too; a stray upstream URL or key in
    # the caller's environment must not turn the emulator off or change the test's setup.
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env.setdefault("RUST_LOG", "info")
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [str(binary), "--listen", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
        )
    lines: queue.Queue = queue.Queue()
    pump = threading.Thread(target=_pump_stdout, args=(process.stdout, lines), daemon=True)
    pump.start()

    def fail(why: str):
        if process.poll() is None:
            process.kill()
        process.wait()
        tail = stderr_path.read_text(errors="replace")[-4000:]
        pytest.fail(f"gateway {why}; exit code {process.returncode}; stderr:\n{tail}")

    try:
        line = lines.get(timeout=STARTUP_TIMEOUT_S)
    except queue.Empty:
        fail(f"printed no serving line within {STARTUP_TIMEOUT_S}s")
    if line is None:
        fail("exited before it printed a serving line")
    try:
        serving = json.loads(line)
    except json.JSONDecodeError:
        fail(f"printed a first stdout line that is not JSON: {line!r}")
    if not isinstance(serving, dict) or serving.get("event") != "serving":
        fail(f'printed a first stdout line that is not {{"event":"serving",...}}: {line!r}')

    return Gateway(
        process=process,
        address=serving.get("listen", ""),
        upstream=serving.get("upstream", ""),
        serving=serving,
        stderr_path=stderr_path,
        stdout_lines=lines,
        stdout_pump=pump,
    )


@pytest.fixture(scope="session")
def gateway_bin() -> Path:
    return required_path("GATEWAY_BIN")


@pytest.fixture(scope="session")
def grpcurl_bin() -> Path:
    return required_path("GRPCURL_BIN")


@pytest.fixture(scope="module")
def gateway(gateway_bin, tmp_path_factory):
    """A gateway with its built-in emulator, fresh for each test module."""
    gw = start_gateway(gateway_bin, tmp_path_factory.mktemp("gateway"), *TEST_EMULATOR_ARGS)
    yield gw
    code = gw.stop()
    assert code == 0, f"gateway exited with {code} after SIGTERM:\n{gw.stderr_tail()}"


@pytest.fixture(scope="session")
def pb(tmp_path_factory) -> types.SimpleNamespace:
    """Python stubs generated from proto/ with grpc_tools' protoc, imported.

    Only the commenda protos are generated: the google.rpc detail messages come from
    googleapis-common-protos, as they would for any Python client.
    """
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    include = Path(protoc.__file__).resolve().parent / "_proto"
    command = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        SYNC_PROTO,
    ]
    code = protoc.main(command)
    assert code == 0, f"protoc failed ({code}): {' '.join(command)}"

    sys.path.insert(0, str(out))
    importlib.invalidate_caches()
    messages = importlib.import_module("commenda.sync.v1.sync_pb2")
    services = importlib.import_module("commenda.sync.v1.sync_pb2_grpc")
    return types.SimpleNamespace(messages=messages, services=services, out=out)


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(gateway.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="module")
def sync_stub(channel, pb):
    return pb.services.SyncServiceStub(channel)


@pytest.fixture(scope="module")
def config_stub(channel, pb):
    return pb.services.SyncConfigServiceStub(channel)
