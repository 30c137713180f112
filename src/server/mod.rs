//! The gRPC server: the only module that knows tonic (with the CLI client). Services are
//! thin (validate → domain → convert); model state lives in [`models`].
//!
//! [`serve`] takes bound listeners and a shutdown future, so tests run the real server on
//! `127.0.0.1:0`.

mod auth;
mod config;
mod conn;
mod convert;
mod metrics;
mod models;
mod outcomes;
mod pool;
mod registry_api;
mod scoring_api;
mod shadow;
mod state_api;
mod v2_api;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

/// The router with every request passing the outcomes layer first.
type Router = tonic::transport::server::Router<
    tower::layer::util::Stack<outcomes::OutcomesLayer, tower::layer::util::Identity>,
>;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

pub use config::Config;
pub use metrics::Metrics;
pub use models::{LoadError, Models};

/// The health-check service name that is SERVING while the process runs (liveness probes).
pub const LIVENESS_SERVICE: &str = "liveness";

/// After the drain, at most this long for the exposure log's last flush and the metrics
/// port together. The chart's grace period is the drain plus 10 s, so Kubernetes never kills
/// a server that is still flushing.
pub const AFTER_DRAIN: Duration = Duration::from_secs(8);

use crate::exposure::{ExposureLog, Writer};
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::proto::v1::customer_state_server::CustomerStateServer;
use crate::proto::v1::registry_server::RegistryServer;
use crate::proto::v1::scoring_server::ScoringServer;
use crate::registry::{Registry, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("exposure log: {0}")]
    Exposure(#[from] crate::exposure::ExposureError),
    #[error("--exposure-log needs --exposure-key (LOYALSCORE_EXPOSURE_KEY)")]
    ExposureKeyMissing,
    #[error("customer state (--state): {0}")]
    State(#[from] crate::state::StateError),
}

/// Runs the server on `grpc` (and `metrics`, if given) until `shutdown` resolves, then drains
/// in-flight requests for at most `drain_secs`.
pub async fn serve(
    config: Config,
    grpc: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let registry = Registry::open(&config.registry.registry)?;
    let metrics = Arc::new(Metrics::new());
    let (health, health_service) = health().await;
    let models = Arc::new(Models::new(
        registry,
        config.alias.alias.clone(),
        (metrics.clone(), config.max_pinned_versions),
        health,
    ));
    let (exposures, exposure_writer) = start_exposures(&config)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let follower = tokio::spawn(models.clone().follow(
        Duration::from_secs(config.poll_interval_secs.max(1)),
        stop_rx.clone(),
    ));
    let metrics_task = metrics_listener.map(|l| {
        let mut rx = stop_rx.clone();
        tokio::spawn(metrics::serve_metrics(l, metrics.clone(), async move {
            let _ = rx.changed().await;
        }))
    });
    let (shadows, shadow_task) = shadow::Shadows::start(config.shadow_queue, metrics.clone());
    let state = crate::state::open(&config.state.state).await?;
    if state.is_some() {
        tracing::info!(state = %config.state.state, "customer state on: Score by customer id, RecordPurchases");
    }
    let (scoring, state_service, work) =
        scoring_services(&config, &models, &metrics, (shadows, exposures, state));
    let router = services(&config, &models, &metrics, scoring, work)?
        .add_service(health_service)
        .add_service(
            CustomerStateServer::new(state_service)
                .max_decoding_message_size(config.max_message_bytes),
        );

    let addr = grpc.local_addr()?;
    tracing::info!(%addr, registry = %config.registry.registry, alias = %config.alias.alias, "serving gRPC");
    let result = run_until(
        router,
        grpc,
        shutdown,
        (&config, &metrics),
        stop_tx,
        stop_rx,
    )
    .await;
    follower.abort();
    shadow_task.abort();
    let after = tokio::time::Instant::now() + AFTER_DRAIN;
    if let Some(w) = exposure_writer {
        match w.close(AFTER_DRAIN).await {
            Some(s) => tracing::info!(written = s.written, lost = s.lost, "exposure log flushed"),
            None => tracing::error!(
                limit_secs = AFTER_DRAIN.as_secs(),
                "exposure log did not flush in time"
            ),
        }
    }
    if let Some(t) = metrics_task {
        let _ = tokio::time::timeout_at(after, t).await;
    }
    result
}

/// The Scoring and CustomerState services, with the scoring pool and the in-flight limit
/// they share with KServe V2.
fn scoring_services(
    config: &Config,
    models: &Arc<Models>,
    metrics: &Arc<Metrics>,
    (shadows, exposures, state): (
        shadow::Shadows,
        Option<ExposureLog>,
        Option<Arc<dyn crate::state::CustomerStore>>,
    ),
) -> (
    scoring_api::ScoringService,
    state_api::StateService,
    (pool::ScoringPool, Arc<tokio::sync::Semaphore>),
) {
    let pool = pool::ScoringPool::new(config.scoring_threads);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        config.max_concurrent_requests.max(1),
    ));
    let scoring = scoring_api::ScoringService {
        pool: pool.clone(),
        in_flight: in_flight.clone(),
        models: models.clone(),
        metrics: metrics.clone(),
        limits: config.limits(),
        shadows,
        exposures,
        state: state.clone(),
    };
    let state_service = state_api::StateService {
        store: state,
        metrics: metrics.clone(),
        limits: config.limits(),
        lateness: config.state.state_lateness_secs.max(0),
        admin_token: config.admin_token.clone().filter(|t| !t.is_empty()),
    };
    (scoring, state_service, (pool, in_flight))
}

/// The health service, NOT_SERVING for scoring until a model is loaded.
async fn health() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (health, service) = tonic_health::server::health_reporter();
    for s in models::HEALTH_SERVICES {
        health
            .set_service_status(s, ServingStatus::NotServing)
            .await;
    }
    // Liveness must not depend on a model: an empty registry is a reason not to take
    // traffic, not a reason for Kubernetes to restart the pod.
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    (health, service)
}

/// The exposure log's writer, when `--exposure-log` is set.
fn start_exposures(config: &Config) -> Result<(Option<ExposureLog>, Option<Writer>), ServerError> {
    let Some(url) = config.exposure_log.as_deref().filter(|u| !u.is_empty()) else {
        return Ok((None, None));
    };
    let secret = config.exposure_key.as_deref().unwrap_or_default();
    if secret.is_empty() {
        return Err(ServerError::ExposureKeyMissing);
    }
    let key = crate::exposure::CustomerKey::new(secret)?;
    let (log, writer) = crate::exposure::start(url, key, Default::default())?;
    tracing::info!(%url, "exposure log on");
    Ok((Some(log), Some(writer)))
}

/// Scoring, KServe V2, reflection and (with a token) the admin service.
fn services(
    config: &Config,
    models: &Arc<Models>,
    metrics: &Arc<Metrics>,
    scoring: scoring_api::ScoringService,
    (pool, in_flight): (pool::ScoringPool, Arc<tokio::sync::Semaphore>),
) -> Result<Router, ServerError> {
    let scoring = ScoringServer::new(scoring).max_decoding_message_size(config.max_message_bytes);
    let inference = GrpcInferenceServiceServer::new(v2_api::InferenceService {
        models: models.clone(),
        metrics: metrics.clone(),
        limits: config.limits(),
        pool,
        in_flight,
    })
    .max_decoding_message_size(config.max_message_bytes);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let admin = config
        .admin_token
        .clone()
        .filter(|t| !t.is_empty())
        .map(|token| {
            RegistryServer::new(registry_api::RegistryService {
                models: models.clone(),
                token,
            })
        });
    if admin.is_none() {
        tracing::info!("no admin token: the Registry admin service is off");
    }
    let keepalive =
        (config.http2_keepalive_secs > 0).then(|| Duration::from_secs(config.http2_keepalive_secs));
    Ok(Server::builder()
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(outcomes::OutcomesLayer {
            metrics: metrics.clone(),
        })
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(scoring)
        .add_service(inference)
        .add_optional_service(admin))
}

/// Serves until `shutdown`, then stops accepting and drains in-flight requests for at most
/// `drain_secs`.
async fn run_until(
    router: Router,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()>,
    (config, metrics): (&Config, &Arc<Metrics>),
    stop_tx: watch::Sender<bool>,
    mut drain_rx: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    // Without TCP_NODELAY a response that spans several segments waits for the client's
    // delayed ACK: 40 ms added to every large answer (explained scores, batches).
    let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
    let refused = metrics.connections_refused.clone();
    let incoming = conn::limit(
        incoming,
        config.connection_limit(),
        Duration::from_secs(config.handshake_timeout_secs.max(1)),
        move || refused.inc(),
    );
    let server = router.serve_with_incoming_shutdown(incoming, async move {
        let _ = drain_rx.changed().await;
    });
    let mut server = Box::pin(server);
    let drain = Duration::from_secs(config.drain_secs);
    let result = tokio::select! {
        r = &mut server => r.map_err(ServerError::from),
        () = shutdown => {
            tracing::info!(drain_secs = config.drain_secs, "shutting down: draining in-flight requests");
            let _ = stop_tx.send(true);
            match tokio::time::timeout(drain, &mut server).await {
                Ok(r) => r.map_err(ServerError::from),
                Err(_) => {
                    tracing::warn!("drain time limit reached; closing remaining connections");
                    Ok(())
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    // Dropping the server drops the services, and with them the shadow and exposure queues.
    drop(server);
    result
}
