"""The gateway called through grpcio stubs generated from proto/, as a Python service would."""

from __future__ import annotations

import re

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

DOMAIN = "sync.commenda.io"
OTHER_ORG_KEY = "commenda-other-org-key"
UNKNOWN_SYNC_ID = "no-such-sync-0000"
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def metadata_value(call, key: str) -> str | None:
    """The first value of `key` in the initial or trailing metadata of a finished call."""
    for md in (call.initial_metadata() or (), call.trailing_metadata() or ()):
        for item in md:
            if item.key == key:
                return item.value
    return None


def known_values(enum, *excluded: str) -> set[int]:
    return {v.number for v in enum.DESCRIPTOR.values if v.name not in excluded}


def sync_statuses(pb) -> set[int]:
    return known_values(pb.messages.SyncStatus, "SYNC_STATUS_UNSPECIFIED")


def job_statuses(pb) -> set[int]:
    return known_values(pb.messages.JobStatus, "JOB_STATUS_UNSPECIFIED")


def rich_error(error: grpc.RpcError) -> dict[str, object]:
    """The details of a failed call, decoded from grpc-status-details-bin, by type name."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no grpc-status-details-bin"
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    decoded = {}
    for detail in status.details:
        name = detail.TypeName()
        message_type = getattr(error_details_pb2, name.rsplit(".", 1)[-1], None)
        assert message_type is not None, f"unexpected detail type {name}"
        message = message_type()
        assert detail.Unpack(message)
        decoded[name] = message
    return decoded


def assert_error_info(details: dict[str, object]):
    info = details.get("google.rpc.ErrorInfo")
    assert info is not None, f"no ErrorInfo among {sorted(details)}"
    assert info.domain == DOMAIN
    assert UPPER_SNAKE.match(info.reason), info.reason
    return info


def test_create_get_and_list_jobs_agree(pb, sync_stub):
    m = pb.messages

    created, call = sync_stub.CreateSync.with_call(m.CreateSyncRequest(company_id=496), timeout=10)
    assert created.sync_id
    assert list(created.data_models_syncing), "a new sync runs at least one data model"
    assert len(set(created.data_models_syncing)) == len(created.data_models_syncing)
    assert metadata_value(call, "x-request-id"), "CreateSync sent no x-request-id"

    got, call = sync_stub.GetSync.with_call(m.GetSyncRequest(sync_id=created.sync_id), timeout=10)
    assert metadata_value(call, "x-request-id"), "GetSync sent no x-request-id"
    sync = got.sync
    assert sync.id == created.sync_id
    assert sync.company_id == 496
    assert sync.integration_type == "NETSUITE"
    assert sorted(sync.data_models) == sorted(created.data_models_syncing)
    assert sync.status in sync_statuses(pb)
    assert sync.upstream_status
    assert sync.HasField("create_time")
    assert sync.job_counts.total >= len(created.data_models_syncing)
    assert sync.data_model_counts.total == len(created.data_models_syncing)

    jobs, call = sync_stub.ListSyncJobs.with_call(
        m.ListSyncJobsRequest(sync_id=created.sync_id, page_size=100), timeout=10
    )
    assert metadata_value(call, "x-request-id"), "ListSyncJobs sent no x-request-id"
    assert jobs.jobs
    assert {job.data_model for job in jobs.jobs} == set(created.data_models_syncing)
    assert jobs.total_size == len(jobs.jobs)
    assert jobs.next_page_token == ""
    for job in jobs.jobs:
        assert job.id
        assert job.status in job_statuses(pb), job
        assert job.job_type == m.JOB_TYPE_PULL
        assert job.HasField("create_time")


def test_new_sync_is_listed_first(pb, sync_stub):
    m = pb.messages
    created = sync_stub.CreateSync(m.CreateSyncRequest(company_id=497), timeout=10)

    page = sync_stub.ListSyncs(m.ListSyncsRequest(company_id=497), timeout=10)
    assert page.syncs[0].id == created.sync_id
    assert page.total_size >= 3, "the new sync and the seeded historical ones"
    assert all(s.company_id == 497 for s in page.syncs)
    assert all(s.status in sync_statuses(pb) for s in page.syncs)


def test_get_unknown_sync_is_not_found_with_error_details(pb, sync_stub):
    with pytest.raises(grpc.RpcError) as caught:
        sync_stub.GetSync(pb.messages.GetSyncRequest(sync_id=UNKNOWN_SYNC_ID), timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details()

    details = rich_error(error)
    info = assert_error_info(details)
    assert "404" in info.metadata.values(), dict(info.metadata)
    resource = details.get("google.rpc.ResourceInfo")
    assert resource is not None, f"no ResourceInfo among {sorted(details)}"
    assert UNKNOWN_SYNC_ID in resource.resource_name
    request = details.get("google.rpc.RequestInfo")
    assert request is not None, f"no RequestInfo among {sorted(details)}"
    assert request.request_id


def test_get_sync_with_slash_in_id_is_invalid_argument(pb, sync_stub):
    with pytest.raises(grpc.RpcError) as caught:
        sync_stub.GetSync(pb.messages.GetSyncRequest(sync_id="a/b"), timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    details = rich_error(error)
    assert_error_info(details)
    bad = details.get("google.rpc.BadRequest")
    assert bad is not None, f"no BadRequest among {sorted(details)}"
    assert [v.field for v in bad.field_violations] == ["sync_id"]
    assert bad.field_violations[0].description


def test_negative_page_size_names_the_field(pb, sync_stub):
    with pytest.raises(grpc.RpcError) as caught:
        sync_stub.ListSyncs(pb.messages.ListSyncsRequest(company_id=496, page_size=-1), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = rich_error(caught.value).get("google.rpc.BadRequest")
    assert bad is not None
    assert "page_size" in [v.field for v in bad.field_violations]


def test_other_organization_key_sees_only_its_company(pb, sync_stub):
    m = pb.messages
    theirs = [("x-api-key", OTHER_ORG_KEY)]
    page = sync_stub.ListSyncs(m.ListSyncsRequest(company_id=900), metadata=theirs, timeout=10)
    assert all(s.company_id == 900 for s in page.syncs)

    with pytest.raises(grpc.RpcError) as caught:
        sync_stub.ListSyncs(m.ListSyncsRequest(company_id=496), metadata=theirs, timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    bearer = [("authorization", f"Bearer {OTHER_ORG_KEY}")]
    with pytest.raises(grpc.RpcError) as caught:
        sync_stub.ListSyncs(m.ListSyncsRequest(company_id=498), metadata=bearer, timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_default_key_cannot_reach_another_organization(pb, sync_stub):
    with pytest.raises(grpc.RpcError) as caught:
        sync_stub.CreateSync(pb.messages.CreateSyncRequest(company_id=900), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert_error_info(rich_error(caught.value))


def test_organization_sync_config_lists_data_models(pb, config_stub):
    m = pb.messages
    response, call = config_stub.GetOrganizationSyncConfig.with_call(
        m.GetOrganizationSyncConfigRequest(integration_type=m.INTEGRATION_TYPE_NETSUITE),
        timeout=10,
    )
    assert metadata_value(call, "x-request-id")
    assert response.configs
    for config in response.configs:
        assert config.data_model
        assert config.category in known_values(m.IntegrationCategory)
        assert config.frequency in known_values(m.SyncFrequency)


def test_page_token_is_bound_to_its_filters(pb, sync_stub):
    m = pb.messages
    first = sync_stub.ListSyncs(m.ListSyncsRequest(company_id=498, page_size=1), timeout=10)
    assert first.next_page_token
    assert first.next_page_token not in {s.id for s in first.syncs}, "tokens must be opaque"

    second = sync_stub.ListSyncs(
        m.ListSyncsRequest(company_id=498, page_size=1, page_token=first.next_page_token),
        timeout=10,
    )
    assert [s.id for s in second.syncs] != [s.id for s in first.syncs]

    with pytest.raises(grpc.RpcError) as caught:
        sync_stub.ListSyncs(
            m.ListSyncsRequest(company_id=499, page_size=1, page_token=first.next_page_token),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = rich_error(caught.value).get("google.rpc.BadRequest")
    assert bad is not None
    assert [v.field for v in bad.field_violations] == ["page_token"]


def test_unknown_key_is_unauthenticated(pb, sync_stub):
    with pytest.raises(grpc.RpcError) as caught:
        sync_stub.ListSyncs(
            pb.messages.ListSyncsRequest(company_id=496),
            metadata=[("x-api-key", "not-a-commenda-key")],
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    details = rich_error(caught.value)
    assert_error_info(details)
    assert "not-a-commenda-key" not in caught.value.details(), "keys are never echoed"
