//! The streaming and long-poll RPCs of `SyncService`: `WatchSync`, `WatchCompanySyncs` and
//! `WaitSync`, all served from the shared pollers of [`crate::watch`].

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::SyncApi;
use super::sync_service::{job_type_filter, sync_id};
use crate::pb::v1 as pb;
use crate::status::{self, Violation};
use crate::validate::{self, Violations};
use crate::watch::{self, WatchCompanySyncsStream, WatchStream, WatchSyncStream};

/// How long WaitSync waits when the caller gives no timeout.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The longest WaitSync waits, whatever the caller asks.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// The WaitSync timeout: the caller's (default 30 s, at most 300 s), cut to its deadline.
fn wait_timeout(
    requested: Option<&prost_types::Duration>,
    deadline: Option<Duration>,
) -> Result<Duration, Violation> {
    let asked = match requested {
        None => DEFAULT_WAIT,
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            return Err(Violation::new("timeout", "must not be negative"));
        }
        Some(d) if d.seconds == 0 && d.nanos == 0 => DEFAULT_WAIT,
        Some(d) => Duration::try_from(*d).unwrap_or(MAX_WAIT),
    };
    let capped = asked.min(MAX_WAIT);
    Ok(deadline.map_or(capped, |left| capped.min(left)))
}

/// Runs `open` within the caller's time, answering DEADLINE_EXCEEDED when it runs out.
async fn within<T>(
    time_left: Option<Duration>,
    open: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match time_left {
        None => open.await,
        Some(left) => tokio::time::timeout(left, open)
            .await
            .unwrap_or_else(|_| Err(status::deadline_exceeded())),
    }
}

impl SyncApi {
    /// `WatchSync`: subscribes to the shared poller and waits for its first state.
    #[instrument(skip_all, fields(sync.id = %request.get_ref().sync_id))]
    pub(super) async fn watch(
        &self,
        request: Request<pb::WatchSyncRequest>,
    ) -> Result<Response<WatchSyncStream>, Status> {
        let opened = Instant::now();
        let meta = self.gateway.meta(&request)?;
        let message = request.into_inner();
        let sync_id = sync_id(&message.sync_id)?;

        let feed = self.watches.subscribe_sync(meta.key, meta.source, sync_id);
        let heartbeat = self.watches.settings().heartbeat_interval;
        let shutdown = self.watches.shutdown_signal();
        let open = WatchStream::open(feed, shutdown, message.revision, heartbeat);
        let stream = within(meta.time_left, open).await?;
        let stream = stream.until(
            meta.time_left
                .map(|left| left.saturating_sub(opened.elapsed())),
        );
        let stream = stream.tracked(self.watches.track_stream());
        Ok(Response::new(stream))
    }

    /// `WatchCompanySyncs`: subscribes to the company's shared poller and waits for its
    /// first list.
    #[instrument(skip_all, fields(company.id = request.get_ref().company_id))]
    pub(super) async fn watch_company(
        &self,
        request: Request<pb::WatchCompanySyncsRequest>,
    ) -> Result<Response<WatchCompanySyncsStream>, Status> {
        let opened = Instant::now();
        let meta = self.gateway.meta(&request)?;
        let message = request.into_inner();
        let mut violations = Violations::default();
        let company = violations.check(validate::company_id("company_id", message.company_id));
        let job_type = violations.check(job_type_filter(message.job_type));
        violations.finish()?;

        let (company, job_type) = (company.unwrap_or_default(), job_type.unwrap_or_default());
        let feed = self
            .watches
            .subscribe_company(meta.key, meta.source, company, job_type);
        let heartbeat = self.watches.settings().heartbeat_interval;
        let shutdown = self.watches.shutdown_signal();
        let open = WatchStream::open(feed, shutdown, 0, heartbeat);
        let stream = within(meta.time_left, open).await?;
        let stream = stream.until(
            meta.time_left
                .map(|left| left.saturating_sub(opened.elapsed())),
        );
        let stream = stream.tracked(self.watches.track_stream());
        Ok(Response::new(stream))
    }

    /// `WaitSync`: subscribes to the shared poller and waits for a change or the timeout.
    #[instrument(skip_all, fields(sync.id = %request.get_ref().sync_id))]
    pub(super) async fn wait(
        &self,
        request: Request<pb::WaitSyncRequest>,
    ) -> Result<Response<pb::WaitSyncResponse>, Status> {
        let meta = self.gateway.meta(&request)?;
        let message = request.into_inner();
        let sync_id = sync_id(&message.sync_id)?;
        let timeout = wait_timeout(message.timeout.as_ref(), meta.time_left)
            .map_err(|violation| status::invalid_argument(vec![violation]))?;

        let feed = self.watches.subscribe_sync(meta.key, meta.source, sync_id);
        let shutdown = self.watches.shutdown_signal();
        let outcome = watch::wait(feed, shutdown, message.revision, timeout).await?;
        Ok(Response::new(pb::WaitSyncResponse {
            state: Some((*outcome.state).clone()),
            changed: outcome.changed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    #[test]
    fn wait_timeout_defaults_caps_and_follows_the_deadline() {
        assert_eq!(wait_timeout(None, None), Ok(DEFAULT_WAIT));
        assert_eq!(wait_timeout(Some(&duration(0, 0)), None), Ok(DEFAULT_WAIT));
        assert_eq!(wait_timeout(Some(&duration(9999, 0)), None), Ok(MAX_WAIT));
        let short = Some(Duration::from_millis(250));
        assert_eq!(
            wait_timeout(Some(&duration(5, 0)), short),
            Ok(Duration::from_millis(250))
        );
        let refused = wait_timeout(Some(&duration(-1, 0)), None).expect_err("negative");
        assert_eq!(refused.field, "timeout");
    }
}
