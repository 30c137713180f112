//! The gRPC server: the only module that knows tonic (with the CLI client). Services are
//! thin (validate → domain → convert); model state lives in [`models`].
//!
//! [`serve`] takes bound listeners and a shutdown future, so tests run the real server on
//! `127.0.0.1:0`.

mod convert;
mod metrics;
mod models;
mod registry_api;
mod scoring_api;
mod shadow;
mod v2_api;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;

pub use metrics::Metrics;

/// The health-check service name that is SERVING while the process runs (liveness probes).
pub const LIVENESS_SERVICE: &str = "liveness";
pub use models::Models;

use crate::proto::v1::registry_server::RegistryServer;
use crate::proto::v1::scoring_server::ScoringServer;
use crate::registry::{Registry, RegistryError};
use crate::scoring::Limits;

/// Every server setting; each flag can also be set by its environment variable.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// gRPC listen address.
    #[arg(long, env = "LOYALSCORE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Registry path or URL (file://, s3://bucket/prefix, gs://, az://).
    #[arg(long, env = "LOYALSCORE_REGISTRY", default_value = "models")]
    pub registry: String,
    /// The alias whose version is served.
    #[arg(long, env = "LOYALSCORE_ALIAS", default_value = "production")]
    pub alias: String,
    /// Seconds between checks of the alias.
    #[arg(long, env = "LOYALSCORE_POLL_INTERVAL_SECS", default_value_t = 10)]
    pub poll_interval_secs: u64,
    /// Prometheus metrics listen address (GET /metrics); "off" disables it.
    #[arg(
        long,
        env = "LOYALSCORE_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: String,
    /// Most customers in one BatchScore.
    #[arg(long, env = "LOYALSCORE_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Most transactions in one customer's history.
    #[arg(long, env = "LOYALSCORE_MAX_HISTORY", default_value_t = 10_000)]
    pub max_history: usize,
    /// Largest request message, in bytes.
    #[arg(long, env = "LOYALSCORE_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Seconds to finish in-flight requests after SIGTERM or SIGINT.
    #[arg(long, env = "LOYALSCORE_DRAIN_SECS", default_value_t = 20)]
    pub drain_secs: u64,
    /// Log format: text or json.
    #[arg(long, env = "LOYALSCORE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "LOYALSCORE_LOG", default_value = "info")]
    pub log: String,
    /// Token for the Registry admin service; without one the service is off.
    #[arg(long, env = "LOYALSCORE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Where experiment exposures are appended as JSON lines: a folder or a bucket URL.
    /// Off when unset.
    #[arg(long, env = "LOYALSCORE_EXPOSURE_LOG")]
    pub exposure_log: Option<String>,
    /// Secret key for the hash that stands for customer ids in the exposure log (at least
    /// 16 bytes); the read-out needs the same key.
    #[arg(long, env = "LOYALSCORE_EXPOSURE_KEY", hide_env_values = true)]
    pub exposure_key: Option<String>,
    /// Shadow scoring jobs queued at most; past it they are dropped and counted.
    #[arg(long, env = "LOYALSCORE_SHADOW_QUEUE", default_value_t = 10_000)]
    pub shadow_queue: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("exposure log: {0}")]
    Exposure(#[from] crate::exposure::ExposureError),
    #[error("{0}")]
    Config(String),
}

/// Runs the server on `grpc` (and `metrics`, if given) until `shutdown` resolves, then drains
/// in-flight requests for at most `drain_secs`.
pub async fn serve(
    config: Config,
    grpc: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let registry = Registry::open(&config.registry)?;
    let metrics = Arc::new(Metrics::new());
    let (health, health_service) = tonic_health::server::health_reporter();
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
    let models = Arc::new(Models::new(
        registry,
        config.alias.clone(),
        metrics.clone(),
        health,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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

    let (exposures, exposure_writer) = match &config.exposure_log {
        Some(url) if !url.is_empty() => {
            let secret = config.exposure_key.as_deref().unwrap_or_default();
            if secret.is_empty() {
                return Err(ServerError::Config(
                    "--exposure-log needs --exposure-key (LOYALSCORE_EXPOSURE_KEY)".into(),
                ));
            }
            let key = crate::exposure::CustomerKey::new(secret)?;
            let (log, writer) = crate::exposure::start(url, key, Default::default())?;
            tracing::info!(%url, "exposure log on");
            (Some(log), Some(writer))
        }
        _ => (None, None),
    };
    let (shadows, shadow_task) = shadow::Shadows::start(config.shadow_queue, metrics.clone());
    let limits = Limits {
        max_history: config.max_history,
        max_batch: config.max_batch,
    };
    let scoring = ScoringServer::new(scoring_api::ScoringService {
        models: models.clone(),
        metrics: metrics.clone(),
        limits,
        shadows,
        exposures,
    })
    .max_decoding_message_size(config.max_message_bytes);
    let inference =
        crate::proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer::new(
            v2_api::InferenceService {
                models: models.clone(),
                metrics: metrics.clone(),
                limits,
            },
        )
        .max_decoding_message_size(config.max_message_bytes);
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
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

    let addr = grpc.local_addr()?;
    tracing::info!(%addr, registry = %config.registry, alias = %config.alias, "serving gRPC");
    let mut drain_rx = stop_rx.clone();
    // Without TCP_NODELAY a response that spans several segments waits for the client's
    // delayed ACK: 40 ms added to every large answer (explained scores, batches).
    let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(scoring)
        .add_service(inference)
        .add_optional_service(admin)
        .serve_with_incoming_shutdown(incoming, async move {
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
    follower.abort();
    shadow_task.abort();
    if let Some(w) = exposure_writer {
        match w.close(Duration::from_secs(10)).await {
            Some(s) => tracing::info!(written = s.written, lost = s.lost, "exposure log flushed"),
            None => tracing::error!("exposure log did not flush within 10 s"),
        }
    }
    if let Some(t) = metrics_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    result
}
