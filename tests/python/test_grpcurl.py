"""The gateway driven by grpcurl 1.8.6, a client that knows only reflection v1alpha and learns
every type from the server, as a person at a terminal would use it.

grpcurl prints responses in proto JSON: the JSON names the server's descriptors give
(`syncId`), int64 values as strings, enum values by name, default values left out. Requests
may spell fields either way (`sync_id` or `syncId`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, start_gateway

DOMAIN = "sync.commenda.io"
FINAL_STATUSES = {"SYNC_STATUS_SUCCESS", "SYNC_STATUS_FAILED", "SYNC_STATUS_PARTIAL_SUCCESS"}
# grpcurl exits with 64 plus the gRPC status code when the call fails.
EXIT_NOT_FOUND = 64 + 5
EXIT_INVALID_ARGUMENT = 64 + 3
README_ADDRESS = "localhost:50051"
MIN_README_COMMANDS = 9

WRITE_CONFIG = {
    "data_model": "ACCOUNT",
    "category": "INTEGRATION_CATEGORY_ACCOUNTING",
    "enabled": True,
    "frequency": "SYNC_FREQUENCY_WEEKLY",
    "interval": 3,
    "scope_access": {"read": True},
}


class Grpcurl:
    """Runs grpcurl against one gateway address."""

    def __init__(self, binary: Path, address: str):
        self.binary = binary
        self.address = address

    def run(self, method: str, *flags: str, data: object = None, headers: tuple[str, ...] = ()):
        """`grpcurl -plaintext [FLAGS] [-H ...] [-d DATA] ADDRESS METHOD`, whatever its outcome."""
        command = [str(self.binary), "-plaintext", "-max-time", "20", *flags]
        for header in headers:
            command += ["-H", header]
        if data is not None:
            command += ["-d", data if isinstance(data, str) else json.dumps(data)]
        command += [self.address, method]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    def tool(self, verb: str, *rest: str):
        """`grpcurl -plaintext ADDRESS list|describe [SYMBOL]`, which must succeed."""
        command = [str(self.binary), "-plaintext", self.address, verb, *rest]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def call(self, method: str, data: object = None, headers: tuple[str, ...] = ()) -> dict:
        """Calls a unary method that must succeed; returns its JSON answer."""
        result = self.run(method, data=data if data is not None else {}, headers=headers)
        assert result.returncode == 0, f"{method} failed:\n{result.stderr}"
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def grpcurl(grpcurl_bin, gateway) -> Grpcurl:
    return Grpcurl(grpcurl_bin, gateway.address)


def test_grpcurl_is_the_old_v1alpha_release(grpcurl_bin):
    result = subprocess.run([str(grpcurl_bin), "-version"], capture_output=True, text=True)
    assert "1.8.6" in result.stdout + result.stderr


def test_list_shows_both_services_and_health(grpcurl):
    services = grpcurl.tool("list").split()
    assert "commenda.sync.v1.SyncService" in services
    assert "commenda.sync.v1.SyncConfigService" in services
    assert "grpc.health.v1.Health" in services


@pytest.mark.parametrize("service", ["SyncService", "SyncConfigService"])
def test_describe_shows_every_rpc(grpcurl, pb, service):
    described = grpcurl.tool("describe", f"commenda.sync.v1.{service}")
    assert f"commenda.sync.v1.{service} is a service" in described
    for method in pb.messages.DESCRIPTOR.services_by_name[service].methods:
        assert re.search(
            rf"rpc {method.name} \( (stream )?\.{method.input_type.full_name} \) "
            rf"returns \( (stream )?\.{method.output_type.full_name} \);",
            described,
        ), f"{method.name} missing from:\n{described}"


@pytest.mark.parametrize("name", ["ErrorInfo", "BadRequest", "ResourceInfo", "RequestInfo"])
def test_describe_knows_the_error_detail_types(grpcurl, name):
    described = grpcurl.tool("describe", f"google.rpc.{name}")
    assert f"message {name} {{" in described


def test_health_check_is_serving(grpcurl):
    assert grpcurl.call("grpc.health.v1.Health/Check") == {"status": "SERVING"}


def test_health_check_of_the_sync_service_is_serving(grpcurl):
    answer = grpcurl.call(
        "grpc.health.v1.Health/Check", {"service": "commenda.sync.v1.SyncService"}
    )
    assert answer == {"status": "SERVING"}


def wait_until_final(grpcurl: Grpcurl, sync_id: str, timeout: float = 20.0) -> dict:
    """Polls GetSync (the state changes in the emulator, not readiness) until a final status."""
    deadline = time.monotonic() + timeout
    while True:
        sync = grpcurl.call("commenda.sync.v1.SyncService/GetSync", {"sync_id": sync_id})["sync"]
        if sync.get("status") in FINAL_STATUSES or time.monotonic() > deadline:
            return sync
        time.sleep(0.2)


def test_create_then_cancel_sync(grpcurl):
    created = grpcurl.call("commenda.sync.v1.SyncService/CreateSync", {"company_id": 496})
    sync_id = created["syncId"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,128}", sync_id)
    assert created["dataModelsSyncing"]

    cancelled = grpcurl.call("commenda.sync.v1.SyncService/CancelSync", {"syncId": sync_id})
    assert cancelled == {}

    sync = wait_until_final(grpcurl, sync_id)
    assert sync["status"] in {"SYNC_STATUS_FAILED", "SYNC_STATUS_PARTIAL_SUCCESS"}, sync
    jobs = grpcurl.call("commenda.sync.v1.SyncService/ListSyncJobs", {"sync_id": sync_id})["jobs"]
    assert any(job.get("errorCode") == "CANCELLED" for job in jobs), jobs


def test_list_syncs_pages_through_seeded_history(grpcurl):
    method = "commenda.sync.v1.SyncService/ListSyncs"
    first = grpcurl.call(method, {"company_id": 497, "page_size": 1})
    assert len(first["syncs"]) == 1
    assert first["totalSize"] >= 2
    assert first["nextPageToken"]
    sync = first["syncs"][0]
    assert sync["companyId"] == "497"  # int64 is a JSON string in proto JSON
    assert sync["integrationType"] == "XERO"
    assert sync["status"] in FINAL_STATUSES | {"SYNC_STATUS_RUNNING"}

    second = grpcurl.call(
        method, {"companyId": 497, "pageSize": 1, "pageToken": first["nextPageToken"]}
    )
    assert len(second["syncs"]) == 1
    assert second["syncs"][0]["id"] != sync["id"]
    assert second["totalSize"] == first["totalSize"]


def a_finished_sync(grpcurl: Grpcurl, company_id: int) -> dict:
    page = grpcurl.call("commenda.sync.v1.SyncService/ListSyncs", {"company_id": company_id})
    finished = [s for s in page["syncs"] if s.get("status") in FINAL_STATUSES]
    assert finished, f"company {company_id} has no finished sync: {page}"
    return finished[0]


def test_get_sync_and_its_jobs(grpcurl):
    listed = a_finished_sync(grpcurl, 498)

    got = grpcurl.call("commenda.sync.v1.SyncService/GetSync", {"sync_id": listed["id"]})
    assert got["sync"]["id"] == listed["id"]
    assert got["sync"]["status"] == listed["status"]
    assert got["sync"]["integrationType"] == "STRIPE"
    assert got["sync"]["dataModels"] == listed["dataModels"]

    answer = grpcurl.call(
        "commenda.sync.v1.SyncService/ListSyncJobs", {"sync_id": listed["id"], "page_size": 100}
    )
    assert answer["jobs"]
    assert answer["totalSize"] == len(answer["jobs"])
    assert {job["dataModel"] for job in answer["jobs"]} <= set(listed["dataModels"])
    assert all(job["status"] in {"JOB_STATUS_SUCCESS", "JOB_STATUS_FAILED"} for job in answer["jobs"])


def test_retry_a_finished_sync(grpcurl):
    original = a_finished_sync(grpcurl, 499)

    retried = grpcurl.call("commenda.sync.v1.SyncService/RetrySync", {"sync_id": original["id"]})
    assert retried["syncId"] != original["id"]
    assert retried["dataModelsSyncing"]
    assert set(retried["dataModelsSyncing"]) <= set(original["dataModels"])

    new = grpcurl.call("commenda.sync.v1.SyncService/GetSync", {"sync_id": retried["syncId"]})
    assert new["sync"]["companyId"] == "499"


def test_organization_sync_config_reads_back_a_write(grpcurl):
    written = grpcurl.call(
        "commenda.sync.v1.SyncConfigService/UpdateOrganizationSyncConfig",
        {"configs": [WRITE_CONFIG]},
    )
    assert written == {}

    read = grpcurl.call(
        "commenda.sync.v1.SyncConfigService/GetOrganizationSyncConfig",
        {"integration_type": "INTEGRATION_TYPE_NETSUITE"},
    )
    by_model = {c["dataModel"]: c for c in read["configs"]}
    account = by_model["ACCOUNT"]
    assert account["category"] == "INTEGRATION_CATEGORY_ACCOUNTING"
    assert account["enabled"] is True
    assert account["frequency"] == "SYNC_FREQUENCY_WEEKLY"
    assert account["interval"] == 3
    assert account["scopeAccess"].get("read") is True


def test_update_company_sync_config(grpcurl):
    answer = grpcurl.call(
        "commenda.sync.v1.SyncConfigService/UpdateCompanySyncConfig",
        {"company_id": 496, "configs": [WRITE_CONFIG]},
    )
    assert answer == {}


def test_unknown_sync_error_details_are_printed_decoded(grpcurl):
    result = grpcurl.run("commenda.sync.v1.SyncService/GetSync", data={"sync_id": "no-such-sync"})
    assert result.returncode == EXIT_NOT_FOUND, result.stderr
    output = result.stderr
    assert "Code: NotFound" in output
    assert re.search(r'"@type":\s*"type\.googleapis\.com/google\.rpc\.ErrorInfo"', output), output
    assert re.search(r'"@type":\s*"type\.googleapis\.com/google\.rpc\.ResourceInfo"', output)
    assert re.search(rf'"domain":\s*"{re.escape(DOMAIN)}"', output), output
    assert re.search(r'"reason":\s*"[A-Z][A-Z0-9_]*"', output), output


def test_unknown_sync_error_as_json_with_format_error(grpcurl):
    result = grpcurl.run(
        "commenda.sync.v1.SyncService/GetSync", "-format-error", data={"sync_id": "no-such-sync"}
    )
    assert result.returncode == EXIT_NOT_FOUND, result.stderr
    status = json.loads(result.stderr)
    assert status["code"] == 5
    details = {d["@type"]: d for d in status["details"]}
    info = details["type.googleapis.com/google.rpc.ErrorInfo"]
    assert info["domain"] == DOMAIN
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", info["reason"])
    assert "type.googleapis.com/google.rpc.ResourceInfo" in details


def test_bad_sync_id_names_the_field(grpcurl):
    result = grpcurl.run(
        "commenda.sync.v1.SyncService/GetSync", "-format-error", data={"sync_id": "a/b"}
    )
    assert result.returncode == EXIT_INVALID_ARGUMENT, result.stderr
    status = json.loads(result.stderr)
    details = {d["@type"]: d for d in status["details"]}
    bad = details["type.googleapis.com/google.rpc.BadRequest"]
    assert [v["field"] for v in bad["fieldViolations"]] == ["sync_id"]


def test_bad_interval_names_the_nested_field(grpcurl):
    result = grpcurl.run(
        "commenda.sync.v1.SyncConfigService/UpdateOrganizationSyncConfig",
        "-format-error",
        data={"configs": [{**WRITE_CONFIG, "interval": 0}]},
    )
    assert result.returncode == EXIT_INVALID_ARGUMENT, result.stderr
    status = json.loads(result.stderr)
    details = {d["@type"]: d for d in status["details"]}
    bad = details["type.googleapis.com/google.rpc.BadRequest"]
    assert "configs[0].interval" in [v["field"] for v in bad["fieldViolations"]]


def test_other_organization_key_in_a_header(grpcurl):
    answer = grpcurl.call(
        "commenda.sync.v1.SyncService/ListSyncs",
        {"company_id": 900},
        headers=("x-api-key: commenda-other-org-key",),
    )
    assert all(s["companyId"] == "900" for s in answer.get("syncs", []))


def json_messages(text: str) -> list[dict]:
    """The JSON objects grpcurl prints one after another for a streaming call."""
    decoder = json.JSONDecoder()
    messages, at = [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return messages
        message, at = decoder.raw_decode(text, at)
        messages.append(message)


def pick(message: dict, name: str):
    """A field by its proto name, or by its JSON (lowerCamel) name, whichever grpcurl used."""
    head, *rest = name.split("_")
    return message.get(name, message.get(head + "".join(w.title() for w in rest)))


def test_watch_sync_streams_to_the_final_state(grpcurl):
    # Another test of this module may have left a sync running on some company.
    for company in (499, 498, 497, 496):
        result = grpcurl.run(
            "commenda.sync.v1.SyncService/CreateSync", data={"company_id": company}
        )
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stderr
    sync_id = pick(json.loads(result.stdout), "sync_id")

    result = grpcurl.run("commenda.sync.v1.SyncService/WatchSync", data={"sync_id": sync_id})
    assert result.returncode == 0, result.stderr
    states = [m["state"] for m in json_messages(result.stdout) if "state" in m]
    assert states, result.stdout
    assert states[0]["sync"]["id"] == sync_id
    assert states[-1]["sync"]["status"] in FINAL_STATUSES, states[-1]
    assert len({s["revision"] for s in states}) == len(states), "each state is a change"


# The README's examples, run as written against a gateway with default settings.


def readme_grpcurl_commands(readme: Path) -> list[str]:
    """Every command in README's fenced code blocks that starts with `grpcurl`, with its
    backslash-continued lines joined."""
    commands: list[str] = []
    in_block = False
    pending: str | None = None
    for raw in readme.read_text().splitlines():
        line = raw.strip()
        if line.startswith("```"):
            in_block = not in_block
            pending = None
            continue
        if not in_block:
            continue
        if pending is not None:
            pending += " " + line.rstrip("\\").strip()
        elif line.startswith("grpcurl ") or line.startswith("$ grpcurl "):
            pending = line.removeprefix("$ ").rstrip("\\").strip()
        else:
            continue
        if not line.endswith("\\"):
            commands.append(pending)
            pending = None
    return commands


@pytest.fixture
def default_gateway(gateway_bin, tmp_path):
    gw = start_gateway(gateway_bin, tmp_path / "gateway")
    yield gw
    gw.stop()


def test_readme_grpcurl_examples_work_as_written(default_gateway, grpcurl_bin):
    readme = REPO_ROOT / "README.md"
    assert readme.is_file(), "README.md is missing"
    commands = readme_grpcurl_commands(readme)
    assert len(commands) >= MIN_README_COMMANDS, (
        f"README.md has {len(commands)} grpcurl examples in code blocks; "
        f"expected at least {MIN_README_COMMANDS}"
    )
    env = dict(os.environ)
    env["PATH"] = f"{grpcurl_bin.parent}{os.pathsep}{env.get('PATH', '')}"
    for command in commands:
        assert README_ADDRESS in command, f"example does not use {README_ADDRESS}: {command}"
        runnable = command.replace(README_ADDRESS, default_gateway.address)
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", runnable],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert result.returncode == 0, (
            f"README example failed ({result.returncode}): {command}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
