"""The proto contract as a Python client sees it: stubs generate from proto/ and import."""

from __future__ import annotations

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
