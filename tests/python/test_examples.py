"""The client examples in examples/, run as their users run them, against a gateway started
here: each must create a sync, watch it to a final status, print heartbeats, decode the
google.rpc details of a NOT_FOUND, and exit 0.

The Node example needs `node` on PATH and its packages in examples/node/node_modules
(scripts/test.sh runs `npm ci --prefix examples/node`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, start_gateway

PYTHON_EXAMPLE = REPO_ROOT / "examples" / "python" / "sync_watch.py"
NODE_EXAMPLE_DIR = REPO_ROOT / "examples" / "node"
NODE_EXAMPLE = NODE_EXAMPLE_DIR / "sync_watch.js"

# Syncs finish in a second or two (one job per data model, each 1 s), and the gateway polls
# and sends heartbeats often enough that a watch sees several states and heartbeats. The
# budget is raised so the fast polls are never held back by it.
EXAMPLE_GATEWAY_ARGS = (
    "--emulator-seed",
    "7",
    "--emulator-job-duration-ms",
    "1000",
    "--emulator-rate-limit",
    "0",
    "--watch-poll-interval-ms",
    "200",
    "--watch-heartbeat-interval-ms",
    "100",
    "--watch-budget-per-minute",
    "6000",
)

# The longest an example may run: protoc or proto-loader, one sync, one failed call.
EXAMPLE_TIMEOUT_S = 90.0
# The watch deadline passed to the examples, well inside that.
WATCH_TIMEOUT_S = "60"

FINAL_STATUSES = {"SUCCESS", "FAILED", "PARTIAL_SUCCESS"}
ERROR_INFO_LINE = re.compile(r"^\s*detail google\.rpc\.ErrorInfo (\{.*\})$")


@pytest.fixture(scope="module")
def examples_gateway(gateway_bin, tmp_path_factory):
    gw = start_gateway(gateway_bin, tmp_path_factory.mktemp("examples"), *EXAMPLE_GATEWAY_ARGS)
    yield gw
    code = gw.stop()
    assert code == 0, f"gateway exited with {code} after SIGTERM:\n{gw.stderr_tail()}"


def run_example(command: list[str], gateway) -> str:
    """Runs one example to its end and returns its stdout; fails with all output otherwise."""
    try:
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(
            f"{command[1]} did not finish within {EXAMPLE_TIMEOUT_S}s\n"
            f"stdout:\n{expired.stdout}\nstderr:\n{expired.stderr}"
        )
    assert result.returncode == 0, (
        f"{command[1]} exited with {result.returncode}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}\ngateway stderr:\n{gateway.stderr_tail()}"
    )
    return result.stdout


def assert_watched_to_final_status(output: str, company_id: int):
    lines = output.splitlines()
    assert re.match(rf"^created sync [0-9a-f-]{{36}} of company {company_id} \(", lines[0]), lines

    states = [line for line in lines if line.startswith("state ")]
    finals = [line.removeprefix("final status: ") for line in lines if line.startswith("final")]
    assert len(finals) == 1 and finals[0] in FINAL_STATUSES, output
    assert states, f"no state printed:\n{output}"
    assert f" status={finals[0]} " in states[-1], f"the last state is not the final one:\n{output}"
    assert any(line.startswith("heartbeat ") for line in lines), f"no heartbeat:\n{output}"


def assert_not_found_decoded(output: str):
    lines = output.splitlines()
    assert "  code: NOT_FOUND" in lines, output

    infos = [json.loads(m.group(1)) for m in map(ERROR_INFO_LINE.match, lines) if m]
    assert len(infos) == 1, f"expected one decoded ErrorInfo:\n{output}"
    assert infos[0]["reason"] == "RESOURCE_NOT_FOUND"
    assert infos[0]["domain"] == "sync.commenda.io"
    assert any(line.startswith("  detail google.rpc.RequestInfo ") for line in lines), output
    assert any(line.startswith("  detail google.rpc.ResourceInfo ") for line in lines), output


def test_python_example_watches_a_sync_and_decodes_an_error(examples_gateway):
    command = [sys.executable, str(PYTHON_EXAMPLE), examples_gateway.address, "499"]
    output = run_example([*command, "--timeout", WATCH_TIMEOUT_S], examples_gateway)

    assert_watched_to_final_status(output, 499)
    assert_not_found_decoded(output)


def test_node_example_watches_a_sync_and_decodes_an_error(examples_gateway):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; the Node example cannot run")
    if not (NODE_EXAMPLE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("examples/node has no node_modules; run npm ci --prefix examples/node")

    command = [node, str(NODE_EXAMPLE), examples_gateway.address, "497"]
    output = run_example([*command, "--timeout", WATCH_TIMEOUT_S], examples_gateway)

    assert_watched_to_final_status(output, 497)
    assert_not_found_decoded(output)
