#!/usr/bin/env python3
"""Starts a sync through the gateway, follows it with WatchSync to its final status, then
shows how a failed call's google.rpc details decode.

    python examples/python/sync_watch.py [ADDRESS] [COMPANY_ID]

ADDRESS defaults to localhost:50051 and COMPANY_ID to 499 (a company of the emulator's demo
key). Needs grpcio, grpcio-tools, grpcio-status and googleapis-common-protos, as pinned in
tests/python/requirements.txt. The stubs are generated from proto/ with grpc_tools.protoc
into a temporary directory at every run, so no generated code is kept in the repository.

Exit status: 0 when the sync reached a final status and GetSync of an unknown id failed with
NOT_FOUND whose google.rpc.ErrorInfo reason is RESOURCE_NOT_FOUND; 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
SYNC_PROTO = "commenda/sync/v1/sync.proto"

# A well-formed sync id that no sync has, so GetSync fails upstream with NOT_FOUND.
UNKNOWN_SYNC_ID = "00000000-0000-4000-8000-000000000000"

FINAL_STATUSES = {"SUCCESS", "FAILED", "PARTIAL_SUCCESS"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", nargs="?", default="localhost:50051", help="gateway host:port")
    parser.add_argument("company_id", nargs="?", type=int, default=499, help="company to sync")
    parser.add_argument("--api-key", help="sent as x-api-key; by default the gateway's own key")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="deadline of the watch, in seconds"
    )
    return parser.parse_args()


def load_stubs(workdir: str):
    """Generates the Python modules of sync.proto into workdir and imports them."""
    from grpc_tools import protoc

    # grpc_tools ships the google/protobuf/*.proto files that sync.proto imports.
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={workdir}",
            f"--grpc_python_out={workdir}",
            SYNC_PROTO,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")

    sys.path.insert(0, workdir)
    messages = importlib.import_module("commenda.sync.v1.sync_pb2")
    services = importlib.import_module("commenda.sync.v1.sync_pb2_grpc")
    return messages, services


def short_name(enum, value: int) -> str:
    """The enum value's name without its type prefix: SYNC_STATUS_RUNNING becomes RUNNING."""
    name = enum.Name(value)
    prefix = enum.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
    return name.removeprefix(prefix)


def describe_counts(counts) -> str:
    return (
        f"total={counts.total} success={counts.success} failed={counts.failed} "
        f"running={counts.running} pending={counts.pending}"
    )


def watch(pb, stub, sync_id: str, metadata, timeout: float) -> str | None:
    """Prints every message of the sync's WatchSync stream; returns the last status seen."""
    request = pb.WatchSyncRequest(sync_id=sync_id)
    status = None
    for event in stub.WatchSync(request, metadata=metadata, timeout=timeout):
        kind = event.WhichOneof("event")
        if kind == "state":
            sync = event.state.sync
            status = short_name(pb.SyncStatus, sync.status)
            print(
                f"state     revision={event.state.revision} status={status} "
                f"jobs: {describe_counts(sync.job_counts)}"
            )
        elif kind == "heartbeat":
            beat = event.heartbeat
            polled = beat.last_poll_time.ToJsonString() if beat.HasField("last_poll_time") else "-"
            print(f"heartbeat last_poll={polled} consecutive_failures={beat.consecutive_failures}")
    return status


def decode_detail(detail):
    """One google.protobuf.Any detail as its google.rpc message; None for other types."""
    name = detail.TypeName()
    message_type = getattr(error_details_pb2, name.rsplit(".", 1)[-1], None)
    if not name.startswith("google.rpc.") or message_type is None:
        return None
    message = message_type()
    detail.Unpack(message)
    return message


def show_error(error: grpc.RpcError) -> bool:
    """Prints a failed call's code, message and details; true when it is the expected
    NOT_FOUND whose google.rpc.ErrorInfo gives the reason RESOURCE_NOT_FOUND."""
    print(f"  code: {error.code().name}")
    print(f"  message: {error.details()}")
    status = rpc_status.from_call(error)
    if status is None:
        print("  no google.rpc.Status in grpc-status-details-bin")
        return False

    reasons = []
    for detail in status.details:
        message = decode_detail(detail)
        if message is None:
            print(f"  detail {detail.TypeName()} (not decoded, {len(detail.value)} bytes)")
            continue
        fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
        print(f"  detail {detail.TypeName()} {json.dumps(fields)}")
        if isinstance(message, error_details_pb2.ErrorInfo):
            reasons.append(message.reason)
    if error.code() != grpc.StatusCode.NOT_FOUND or reasons != ["RESOURCE_NOT_FOUND"]:
        print(f"  expected NOT_FOUND with ErrorInfo reason RESOURCE_NOT_FOUND, got {reasons}")
        return False
    return True


def run(args: argparse.Namespace, pb, services) -> int:
    metadata = [("x-api-key", args.api_key)] if args.api_key else []
    with grpc.insecure_channel(args.address) as channel:
        stub = services.SyncServiceStub(channel)

        created = stub.CreateSync(
            pb.CreateSyncRequest(company_id=args.company_id), metadata=metadata, timeout=30
        )
        models = ", ".join(created.data_models_syncing)
        print(f"created sync {created.sync_id} of company {args.company_id} ({models})")

        try:
            status = watch(pb, stub, created.sync_id, metadata, args.timeout)
        except grpc.RpcError as error:
            print(f"WatchSync failed: {error.code().name}: {error.details()}")
            return 1
        if status not in FINAL_STATUSES:
            print(f"the stream ended before a final status (last seen: {status})")
            return 1
        print(f"final status: {status}")

        print(f"GetSync of unknown sync {UNKNOWN_SYNC_ID}:")
        try:
            stub.GetSync(pb.GetSyncRequest(sync_id=UNKNOWN_SYNC_ID), metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            return 0 if show_error(error) else 1
        print("  unexpectedly succeeded")
        return 1


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="sync-stubs-") as workdir:
        pb, services = load_stubs(workdir)
        try:
            return run(args, pb, services)
        except grpc.RpcError as error:
            print(f"call failed: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
