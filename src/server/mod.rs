//! The gRPC server: the only module that knows tonic (with the CLI client). Services are
//! thin (validate → domain → convert); model state lives in [`models`].
//!
//! [`serve`] takes bound listeners and a shutdown future, so tests run the real server on
//! `127.0.0.1:0`.

mod auth;
mod config;
mod conn;
mod convert;
mod follow;
mod metrics;
mod models;
mod outcomes;
mod pool;
mod registry_api;
mod scoring_api;
mod shadow;
mod state_api;
mod tls;
mod v2_api;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

/// The router with every request passing the outcomes layer first.
type Router = tonic::transport::server::Router<
    tower::layer::util::Stack<
        auth::ScoringAuthLayer,
        tower::layer::util::Stack<outcomes::OutcomesLayer, tower::layer::util::Identity>,
    >,
>;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

pub use config::Config;
pub use metrics::Metrics;
pub use models::{LoadError, Models, CURRENT_SERVICE};

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
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
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
    metrics.watch_drift(models::drift_source(&models));
    let gates = Gates::start(&config, &metrics)?;
    let tls = TlsPorts::start(&config)?;
    let (exposures, exposure_writer) = start_exposures(&config, &metrics)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let follower = tokio::spawn(models.clone().follow(
        Duration::from_secs(config.poll_interval_secs.max(1)),
        stop_rx.clone(),
    ));
    let metrics_task =
        metrics_listener.map(|l| start_metrics(l, &metrics, &tls, &config, &stop_rx));
    let (shadows, shadow_task) = shadow::Shadows::start(config.shadow_queue, metrics.clone());
    let (state, feed) = open_state(&config, (&models, &metrics), &stop_rx).await?;
    let (scoring, state_service, work) = scoring_services(
        &config,
        (&models, &metrics, &gates),
        (shadows, exposures, state),
    );
    let router = services(&config, (&models, &metrics, &gates), scoring, work)?
        .add_service(health_service)
        .add_service(
            CustomerStateServer::new(state_service)
                .max_decoding_message_size(config.max_message_bytes),
        );

    let addr = grpc.local_addr()?;
    tracing::info!(%addr, registry = %config.registry.registry, alias = %config.alias.alias, "serving gRPC");
    let result = run_until(
        router,
        (grpc, tls.grpc.clone()),
        shutdown,
        (&config, &metrics),
        stop_tx,
        stop_rx,
    )
    .await;
    for t in tls.followers {
        t.abort();
    }
    follower.abort();
    shadow_task.abort();
    if let Some(t) = feed {
        let _ = tokio::time::timeout(AFTER_DRAIN, t).await;
    }
    if let Some(t) = gates.follower {
        t.abort();
    }
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

/// The metrics port, over TLS when the gRPC port is, until the stop signal.
fn start_metrics(
    listener: TcpListener,
    metrics: &Arc<Metrics>,
    tls: &TlsPorts,
    config: &Config,
    stop_rx: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let mut rx = stop_rx.clone();
    let stop = async move {
        let _ = rx.changed().await;
    };
    match &tls.metrics {
        None => tokio::spawn(metrics::serve_metrics(listener, metrics.clone(), stop)),
        Some(t) => {
            let listener = tls::TlsListener {
                tcp: listener,
                tls: t.clone(),
                timeout: Duration::from_secs(config.handshake_timeout_secs.max(1)),
            };
            tokio::spawn(metrics::serve_metrics(listener, metrics.clone(), stop))
        }
    }
}

/// The customer state store (if on), and the Kafka consumer feeding it (if configured).
async fn open_state(
    config: &Config,
    (models, metrics): (&Arc<Models>, &Arc<Metrics>),
    stop: &watch::Receiver<bool>,
) -> Result<
    (
        Option<Arc<dyn crate::state::CustomerStore>>,
        Option<tokio::task::JoinHandle<()>>,
    ),
    ServerError,
> {
    let state = crate::state::open(&config.state.state).await?;
    if state.is_some() {
        tracing::info!(state = %config.state.state, "customer state on: Score by customer id, RecordPurchases");
    }
    let feed = start_feed(config, (models, metrics), state.clone(), stop)?;
    Ok((state, feed))
}

/// The Kafka consumer, when `--kafka-brokers` is set; it stops with the server, after
/// finishing (and committing) the batch in hand.
fn start_feed(
    config: &Config,
    (models, metrics): (&Arc<Models>, &Arc<Metrics>),
    state: Option<Arc<dyn crate::state::CustomerStore>>,
    stop: &watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServerError> {
    if config.kafka.client.kafka_brokers.is_none() {
        return Ok(None);
    }
    let store = state.ok_or_else(|| {
        ServerError::Config("--kafka-brokers needs the customer state (--state is off)".into())
    })?;
    let source = models.clone();
    let feed = Arc::new(crate::stream::kafka::Feed {
        args: config.kafka.clone(),
        store,
        model: Arc::new(move || source.active()),
        lateness: config.state.state_lateness_secs.max(0),
        metrics: metrics.stream.clone(),
    });
    let clients = feed
        .clients()
        .map_err(|e| ServerError::Config(format!("--kafka-*: {e}")))?;
    Ok(Some(tokio::spawn(feed.run(clients, stop.clone()))))
}

/// The Scoring and CustomerState services, with the scoring pool and the in-flight limit
/// they share with KServe V2.
fn scoring_services(
    config: &Config,
    (models, metrics, gates): (&Arc<Models>, &Arc<Metrics>, &Gates),
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
        admin: gates.admin.clone(),
    };
    (scoring, state_service, (pool, in_flight))
}

/// The health service, NOT_SERVING for scoring until a model is loaded.
async fn health() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (health, service) = tonic_health::server::health_reporter();
    for s in models::HEALTH_SERVICES
        .into_iter()
        .chain([models::CURRENT_SERVICE])
    {
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

/// The credential gates: the admin token's, and the scoring tokens' (with the task that
/// re-reads their file).
struct Gates {
    admin: Option<Arc<auth::Gate>>,
    scoring: Option<Arc<auth::Gate>>,
    follower: Option<tokio::task::JoinHandle<()>>,
}

/// TLS for the two ports (each offers its own protocol), and the tasks that reload it.
struct TlsPorts {
    grpc: Option<Arc<tls::Tls>>,
    metrics: Option<Arc<tls::Tls>>,
    followers: Vec<tokio::task::JoinHandle<()>>,
}

impl TlsPorts {
    fn start(config: &Config) -> Result<Self, ServerError> {
        let files = tls::TlsFiles::from_flags(
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
            config.tls_client_ca.as_deref(),
        )?;
        let Some(files) = files else {
            return Ok(TlsPorts {
                grpc: None,
                metrics: None,
                followers: Vec::new(),
            });
        };
        let grpc = tls::Tls::load(files.clone(), &[b"h2"])?;
        let metrics = tls::Tls::load(files.clone(), &[b"http/1.1"])?;
        tracing::info!(
            client_certificates = files.client_ca.is_some(),
            "TLS on the gRPC and metrics ports"
        );
        let followers = [&grpc, &metrics]
            .into_iter()
            .map(|t| {
                let tls = t.clone();
                tokio::spawn(follow::follow(
                    "TLS certificate",
                    t.paths(),
                    follow::FILE_CHECK,
                    move || tls.reload(),
                ))
            })
            .collect();
        Ok(TlsPorts {
            grpc: Some(grpc),
            metrics: Some(metrics),
            followers,
        })
    }
}

impl Gates {
    /// Refuses a token shorter than [`auth::MIN_TOKEN_BYTES`] before anything listens.
    fn start(config: &Config, metrics: &Metrics) -> Result<Self, ServerError> {
        let failures = |s: &str| metrics.auth_failures.with_label_values(&[s]);
        let admin = match config.admin_token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => {
                auth::check_token("--admin-token (LOYALSCORE_ADMIN_TOKEN)", t)?;
                Some(Arc::new(auth::Gate::new(
                    "admin",
                    vec![t.to_string()],
                    failures("admin"),
                )))
            }
            None => None,
        };
        let Some(path) = config
            .scoring_tokens_file
            .as_deref()
            .filter(|p| !p.is_empty())
        else {
            return Ok(Gates {
                admin,
                scoring: None,
                follower: None,
            });
        };
        let tokens = auth::read_tokens(path)?;
        tracing::info!(tokens = tokens.len(), "scoring callers need a token");
        let gate = Arc::new(auth::Gate::new("scoring", tokens, failures("scoring")));
        let (reloaded, file) = (gate.clone(), path.to_string());
        let follower = tokio::spawn(follow::follow(
            "scoring tokens",
            vec![path.to_string()],
            follow::FILE_CHECK,
            move || auth::read_tokens(&file).map(|t| reloaded.replace(t)),
        ));
        Ok(Gates {
            admin,
            scoring: Some(gate),
            follower: Some(follower),
        })
    }
}

/// The exposure log's writer, when `--exposure-log` is set.
fn start_exposures(
    config: &Config,
    metrics: &Metrics,
) -> Result<(Option<ExposureLog>, Option<Writer>), ServerError> {
    let Some(url) = config.exposure_log.as_deref().filter(|u| !u.is_empty()) else {
        return Ok((None, None));
    };
    let secret = config.exposure_key.as_deref().unwrap_or_default();
    if secret.is_empty() {
        return Err(ServerError::ExposureKeyMissing);
    }
    let key = crate::exposure::CustomerKey::new(secret)?;
    let opts = crate::exposure::SinkOptions {
        interval: Duration::from_millis(config.exposure_flush_ms.max(10)),
        ..Default::default()
    };
    let (log, writer) = crate::exposure::start(url, key, opts)?;
    metrics.watch_exposures(log.pending.clone());
    tracing::info!(%url, flush_ms = config.exposure_flush_ms, "exposure log on");
    Ok((Some(log), Some(writer)))
}

/// Scoring, KServe V2, reflection and (with a token) the admin service.
fn services(
    config: &Config,
    (models, metrics, gates): (&Arc<Models>, &Arc<Metrics>, &Gates),
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
    let admin = gates.admin.clone().map(|gate| {
        RegistryServer::new(registry_api::RegistryService {
            models: models.clone(),
            gate,
        })
    });
    if admin.is_none() {
        tracing::info!("no admin token: the Registry admin service is off");
    }
    // Reflection describes only the services this server runs.
    let mut on = vec![
        "loyalscore.v1.Scoring",
        "loyalscore.v1.CustomerState",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
    ];
    if admin.is_some() {
        on.push("loyalscore.v1.Registry");
    }
    let reflection = || {
        on.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |b, s| b.with_service_name(*s),
        )
    };
    let keepalive =
        (config.http2_keepalive_secs > 0).then(|| Duration::from_secs(config.http2_keepalive_secs));
    Ok(Server::builder()
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(outcomes::OutcomesLayer {
            metrics: metrics.clone(),
        })
        .layer(auth::ScoringAuthLayer {
            gate: gates.scoring.clone(),
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
    (grpc, tls): (TcpListener, Option<Arc<tls::Tls>>),
    shutdown: impl Future<Output = ()>,
    (config, metrics): (&Config, &Arc<Metrics>),
    stop_tx: watch::Sender<bool>,
    mut drain_rx: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    // Without TCP_NODELAY a response that spans several segments waits for the client's
    // delayed ACK: 40 ms added to every large answer (explained scores, batches).
    let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
    let refused = metrics.connections_refused.clone();
    let handshake = Duration::from_secs(config.handshake_timeout_secs.max(1));
    let incoming = conn::limit(incoming, config.connection_limit(), handshake, move || {
        refused.inc()
    });
    let failed = metrics.tls_handshake_failures.clone();
    let incoming = tls::handshakes(incoming, tls, handshake, move || failed.inc());
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
