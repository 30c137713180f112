//! Caller credentials: bearer tokens compared in constant time, for the admin services (one
//! token) and for scoring (a file of tokens, re-read when it changes, as a mounted Kubernetes
//! secret does). A refused attempt is counted, logged (without the token) and answered only
//! after [`FAILURE_DELAY`], with at most [`MAX_DELAYED`] waiting at once: refusals go out at
//! a bounded rate over all callers, and a right token never waits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tonic::Status;

/// Shortest token accepted (admin and scoring): 32 bytes of a random source are beyond any
/// guessing, and a short one is refused when the server starts.
pub const MIN_TOKEN_BYTES: usize = 32;

/// How long a refused attempt waits before its answer.
pub const FAILURE_DELAY: Duration = Duration::from_millis(500);

/// Refused attempts waiting out their delay at once; more wait their turn. So refusals go out
/// at most this many per [`FAILURE_DELAY`] over all callers (2,048 a second), however many
/// guesses arrive together; a right token never waits.
const MAX_DELAYED: usize = 1024;

/// At most one warning per this interval, with the count since the last one.
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{what} is {len} bytes; at least {MIN_TOKEN_BYTES} are required (e.g. `openssl rand -hex 32`)")]
    TooShort { what: String, len: usize },
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no token")]
    Empty { path: String },
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request's `authorization` header, if it is text.
pub fn authorization<T>(req: &tonic::Request<T>) -> Option<&str> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
}

/// The token of an `authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> &str {
    header.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("")
}

/// Checks a token's length; `what` names it in the error.
pub fn check_token(what: &str, token: &str) -> Result<(), AuthError> {
    if token.len() < MIN_TOKEN_BYTES {
        return Err(AuthError::TooShort {
            what: what.to_string(),
            len: token.len(),
        });
    }
    Ok(())
}

/// The tokens of a file: one a line, blank lines and `#` comments ignored, each checked.
pub fn read_tokens(path: &str) -> Result<Vec<String>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::File {
        path: path.to_string(),
        source,
    })?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for (i, t) in tokens.iter().enumerate() {
        check_token(&format!("{path}: token {}", i + 1), t)?;
    }
    if tokens.is_empty() {
        return Err(AuthError::Empty {
            path: path.to_string(),
        });
    }
    Ok(tokens)
}

/// One service's credentials and the bookkeeping of refused attempts.
pub struct Gate {
    /// `admin` or `scoring`: the metric label and the log field.
    service: &'static str,
    tokens: ArcSwap<Vec<String>>,
    failures: prometheus::IntCounter,
    delayed: tokio::sync::Semaphore,
    /// When the last warning went out, and the refusals since.
    warned: Mutex<(Option<Instant>, u64)>,
}

impl Gate {
    pub fn new(
        service: &'static str,
        tokens: Vec<String>,
        failures: prometheus::IntCounter,
    ) -> Self {
        Gate {
            service,
            tokens: ArcSwap::from_pointee(tokens),
            failures,
            delayed: tokio::sync::Semaphore::new(MAX_DELAYED),
            warned: Mutex::new((None, 0)),
        }
    }

    /// Replaces the tokens (a rotated secret); requests in flight keep the set they took.
    pub fn replace(&self, tokens: Vec<String>) {
        self.tokens.store(Arc::new(tokens));
    }

    /// Whether `token` is one of the gate's; every token is compared, so the time says
    /// nothing about which one came close.
    pub fn accepts(&self, token: &str) -> bool {
        let tokens = self.tokens.load();
        let mut ok = false;
        for t in tokens.iter() {
            ok |= !token.is_empty() && same(token.as_bytes(), t.as_bytes());
        }
        ok
    }

    /// `Ok` for a known token; else, after the failure delay, `UNAUTHENTICATED` saying what
    /// `what` needs.
    pub async fn admit(&self, header: Option<&str>, what: &str) -> Result<(), Status> {
        if self.accepts(bearer(header)) {
            return Ok(());
        }
        self.failures.inc();
        self.warn_now_and_then();
        if let Ok(_slot) = self.delayed.acquire().await {
            tokio::time::sleep(FAILURE_DELAY).await;
        }
        Err(Status::unauthenticated(format!(
            "{what} needs `authorization: Bearer <{} token>`",
            self.service
        )))
    }

    fn warn_now_and_then(&self) {
        let Ok(mut w) = self.warned.lock() else {
            return;
        };
        w.1 += 1;
        if w.0.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                service = self.service,
                refused = w.1,
                "requests refused for a missing or wrong token"
            );
            *w = (Some(Instant::now()), 0);
        }
    }
}

/// Whether a path is one the scoring token guards: scoring, KServe V2 and the customer
/// state, but not `Forget` (it takes the admin token), health or reflection.
fn guarded(path: &str) -> bool {
    const SERVICES: [&str; 3] = [
        "/loyalscore.v1.Scoring/",
        "/inference.GRPCInferenceService/",
        "/loyalscore.v1.CustomerState/",
    ];
    path != "/loyalscore.v1.CustomerState/Forget" && SERVICES.iter().any(|s| path.starts_with(s))
}

/// Puts the scoring [`Gate`] before the scoring services.
#[derive(Clone)]
pub struct ScoringAuthLayer {
    pub gate: Option<Arc<Gate>>,
}

impl<S> tower::Layer<S> for ScoringAuthLayer {
    type Service = ScoringAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ScoringAuth {
            inner,
            gate: self.gate.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ScoringAuth<S> {
    inner: S,
    gate: Option<Arc<Gate>>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for ScoringAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let gate = match &self.gate {
            Some(g) if guarded(req.uri().path()) => g.clone(),
            _ => return Box::pin(self.inner.call(req)),
        };
        // The service polled ready is the one that must take the call (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let header = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            match gate.admit(header, "this service").await {
                Ok(()) => inner.call(req).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(tokens: &[&str]) -> Gate {
        let c = prometheus::IntCounter::new("f", "f").unwrap();
        Gate::new("scoring", tokens.iter().map(|t| t.to_string()).collect(), c)
    }

    #[test]
    fn only_a_listed_token_passes() {
        let a = "a".repeat(32);
        let b = "b".repeat(40);
        let g = gate(&[&a, &b]);
        assert!(g.accepts(&a) && g.accepts(&b));
        assert!(!g.accepts(""));
        assert!(!g.accepts(&a[..31]));
        assert!(!g.accepts(&format!("{a}x")));
        g.replace(vec![b.clone()]);
        assert!(!g.accepts(&a), "a rotated-out token still passed");
        assert_eq!(bearer(Some(&format!("Bearer {a}"))), a);
        assert_eq!(bearer(Some(&a)), "");
    }

    #[test]
    fn the_scoring_token_guards_scoring_and_state_but_not_forget_health_or_reflection() {
        assert!(guarded("/loyalscore.v1.Scoring/Score"));
        assert!(guarded("/inference.GRPCInferenceService/ModelInfer"));
        assert!(guarded("/loyalscore.v1.CustomerState/RecordPurchases"));
        assert!(!guarded("/loyalscore.v1.CustomerState/Forget"));
        assert!(!guarded("/grpc.health.v1.Health/Check"));
        assert!(!guarded(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!guarded("/loyalscore.v1.Registry/ListVersions"));
    }

    #[test]
    fn short_tokens_are_refused_with_the_length() {
        let e = check_token("--admin-token", "x").unwrap_err().to_string();
        assert!(e.contains("--admin-token is 1 bytes; at least 32"), "{e}");
        assert!(check_token("t", &"x".repeat(32)).is_ok());
    }

    #[tokio::test]
    async fn a_refusal_waits_and_is_counted() {
        let g = gate(&[&"k".repeat(32)]);
        let t0 = std::time::Instant::now();
        let r = g.admit(Some("Bearer nope"), "Score").await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(t0.elapsed() >= FAILURE_DELAY, "the refusal was not delayed");
        assert_eq!(g.failures.get(), 1);
        let token = format!("Bearer {}", "k".repeat(32));
        assert!(g.admit(Some(&token), "Score").await.is_ok());
        assert_eq!(g.failures.get(), 1, "a good token counted as a failure");
    }
}
