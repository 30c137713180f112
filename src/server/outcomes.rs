//! Every scoring request counted by its gRPC code, also those our handlers never see: a
//! message that fails to decode, or a deadline that passes while it is still being read.
//! The layer wraps the whole router; a handler that counts its request itself says so
//! through the [`Counted`] mark in the request's extensions, and the layer counts the rest
//! (from the `grpc-status` of the answer, or DEADLINE_EXCEEDED / CANCELLED when the request
//! was dropped unanswered).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;

use super::metrics::Metrics;

/// Set by a handler once it has counted its request; also carries the request's deadline,
/// taken when its headers arrived (before a large body is read and decoded).
#[derive(Clone, Default)]
pub struct Counted(Arc<AtomicBool>, pub Option<Instant>);

impl Counted {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct OutcomesLayer {
    pub metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for OutcomesLayer {
    type Service = Outcomes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Outcomes {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Outcomes<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The method a path names, when it is one of the scoring services'.
fn scoring_method(path: &str) -> Option<&'static str> {
    const METHODS: [(&str, &str); 3] = [
        ("/loyalscore.v1.Scoring/Score", "Score"),
        ("/loyalscore.v1.Scoring/BatchScore", "BatchScore"),
        ("/inference.GRPCInferenceService/ModelInfer", "ModelInfer"),
    ];
    METHODS.iter().find(|(p, _)| *p == path).map(|(_, m)| *m)
}

/// Counts the request on drop unless its handler did.
struct Guard {
    metrics: Arc<Metrics>,
    method: &'static str,
    counted: Counted,
    start: Instant,
    deadline: Option<Instant>,
    code: Option<Code>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.counted.is_set() {
            return;
        }
        // Past the deadline the client has gone (its stream reset, which fails the read of
        // a request still arriving): whatever failed, the deadline is why.
        let unanswered = super::pool::unanswered(self.start, self.deadline);
        let code = match self.code {
            Some(Code::Ok) => Code::Ok,
            _ if unanswered == Code::DeadlineExceeded => unanswered,
            Some(c) => c,
            None => unanswered,
        };
        self.metrics
            .observe_request(self.method, code, "", self.start);
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Outcomes<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(method) = scoring_method(req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let start = Instant::now();
        let deadline = super::pool::deadline(
            &tonic::metadata::MetadataMap::from_headers(req.headers().clone()),
            start,
        );
        let counted = Counted(Arc::default(), deadline);
        req.extensions_mut().insert(counted.clone());
        let mut guard = Guard {
            metrics: self.metrics.clone(),
            method,
            counted,
            start,
            deadline,
            code: None,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            if let Ok(resp) = &r {
                // A trailers-only answer carries its status in the headers.
                let status = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<i32>().ok());
                guard.code = Some(status.map_or(Code::Ok, Code::from_i32));
            }
            drop(guard);
            r
        })
    }
}
