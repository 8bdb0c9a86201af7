//! A tower layer that times every gRPC call and records its status code, read from the
//! response headers (trailers-only answers) or from the trailers at the end of the body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::Metrics;

/// Adds call metrics to a service.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] wraps around the gRPC router.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// Records one call once, when its status is known or when the body is dropped unfinished
/// (the client went away: CANCELLED).
struct Recorder {
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
    done: bool,
}

impl Recorder {
    fn finish(&mut self, code: tonic::Code) {
        if !self.done {
            self.done = true;
            self.metrics
                .record_rpc(&self.method, code, self.started.elapsed());
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

fn status_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let raw = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(tonic::Code::from_i32(raw))
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for MetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut recorder = Recorder {
            metrics: self.metrics.clone(),
            method: request.uri().path().to_owned(),
            started: Instant::now(),
            done: false,
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            if let Some(code) = status_code(response.headers()) {
                recorder.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| {
                tonic::body::Body::new(RecordingBody {
                    inner: body,
                    recorder,
                })
            }))
        })
    }
}

/// The response body, watched for the trailers that carry `grpc-status`.
struct RecordingBody {
    inner: tonic::body::Body,
    recorder: Recorder,
}

impl Body for RecordingBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_code) {
                    self.recorder.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.recorder.finish(tonic::Code::Internal),
            Poll::Ready(None) => self.recorder.finish(tonic::Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
