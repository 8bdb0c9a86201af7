"""The proto contract as a Python client sees it: stubs generate and import, and the vendored
google.rpc detail messages agree with the published ones that clients decode them with."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_tools import protoc

from conftest import PROTO_DIR

SYNC_RPCS = {
    "CreateSync",
    "ListSyncs",
    "GetSync",
    "ListSyncJobs",
    "CancelSync",
    "RetrySync",
}
CONFIG_RPCS = {
    "GetOrganizationSyncConfig",
    "UpdateOrganizationSyncConfig",
    "UpdateCompanySyncConfig",
}


def test_generated_stubs_expose_both_services(pb):
    services = pb.messages.DESCRIPTOR.services_by_name
    assert set(services) >= {"SyncService", "SyncConfigService"}
    assert set(services["SyncService"].methods_by_name) >= SYNC_RPCS
    assert set(services["SyncConfigService"].methods_by_name) >= CONFIG_RPCS
    assert pb.messages.DESCRIPTOR.package == "commenda.sync.v1"
    assert hasattr(pb.services, "SyncServiceStub")
    assert hasattr(pb.services, "SyncConfigServiceStub")


def test_generated_messages_round_trip(pb):
    m = pb.messages
    request = m.CreateSyncRequest(
        company_id=496,
        data_models=[m.DataModelSelection(data_model="ACCOUNT")],
        full_sync=True,
    )
    decoded = m.CreateSyncRequest.FromString(request.SerializeToString())
    assert decoded == request
    assert decoded.HasField("full_sync")
    assert not decoded.HasField("manual_sync")


def compile_descriptor(tmp_path: Path, proto: str) -> descriptor_pb2.FileDescriptorProto:
    include = Path(protoc.__file__).resolve().parent / "_proto"
    out = tmp_path / "set.pb"
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--descriptor_set_out={out}", proto]
    )
    assert code == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return fds.file[0]


def fields_of(message) -> dict[str, tuple[int, int, str]]:
    return {f.name: (f.number, f.type, f.type_name.lstrip(".")) for f in message.field}


def test_vendored_error_details_match_published_messages(tmp_path):
    vendored = compile_descriptor(tmp_path, "google/rpc/error_details.proto")
    assert vendored.package == "google.rpc"
    published = descriptor_pb2.FileDescriptorProto()
    error_details_pb2.DESCRIPTOR.CopyToProto(published)
    published_messages = {m.name: m for m in published.message_type}

    assert {m.name for m in vendored.message_type} >= {
        "ErrorInfo",
        "BadRequest",
        "RequestInfo",
        "ResourceInfo",
        "RetryInfo",
    }
    for message in vendored.message_type:
        expected = published_messages[message.name]
        for name, shape in fields_of(message).items():
            assert fields_of(expected).get(name) == shape, f"{message.name}.{name}"
        expected_nested = {n.name: n for n in expected.nested_type}
        for nested in message.nested_type:
            if nested.options.map_entry:
                continue
            for name, shape in fields_of(nested).items():
                want = fields_of(expected_nested[nested.name]).get(name)
                assert want == shape, f"{message.name}.{nested.name}.{name}"
