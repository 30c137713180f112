//! Prometheus metrics, one registry per server (tests run several in one process), served as
//! text on an HTTP port.

use std::net::SocketAddr;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Requests by method, gRPC code and answering version.
    pub requests: IntCounterVec,
    /// Request latency by method.
    pub latency: HistogramVec,
    /// BatchScore items by result (ok or the error code).
    pub batch_items: IntCounterVec,
    /// Model loads by result (ok, failed).
    pub loads: IntCounterVec,
    /// 1 for the version serving now.
    pub active: IntGaugeVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are constants: a failure here is a programming error at startup.
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("loyalscore".into()), None).unwrap_or_default();
        let requests = must(IntCounterVec::new(
            Opts::new(
                "requests_total",
                "gRPC requests by method, code and model version",
            ),
            &["method", "code", "version"],
        ));
        let latency = must(HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "gRPC request latency").buckets(vec![
                0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05,
                0.1, 0.5, 1.0, 5.0,
            ]),
            &["method"],
        ));
        let batch_items = must(IntCounterVec::new(
            Opts::new("batch_items_total", "BatchScore items by result"),
            &["result"],
        ));
        let loads = must(IntCounterVec::new(
            Opts::new("model_loads_total", "model version loads by result"),
            &["result"],
        ));
        let active = must(IntGaugeVec::new(
            Opts::new("active_model", "1 for the model version serving now"),
            &["version"],
        ));
        for c in [&requests, &batch_items, &loads] {
            let _ = registry.register(Box::new(c.clone()));
        }
        let _ = registry.register(Box::new(latency.clone()));
        let _ = registry.register(Box::new(active.clone()));
        Metrics {
            registry,
            requests,
            latency,
            batch_items,
            loads,
            active,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "metrics on /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move { m.render() }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
