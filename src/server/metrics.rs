//! Prometheus metrics, one registry per server (tests run several in one process), served as
//! text on an HTTP port.

use std::time::Instant;

use tonic::Code;

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
    /// 1 once a version is served, 0 before (an alert can see "up but no model").
    pub model_served: prometheus::IntGauge,
    /// Traffic document applications by result (ok, failed).
    pub traffic_loads: IntCounterVec,
    /// Experiment answers by experiment, arm and version.
    pub exp_requests: IntCounterVec,
    /// Score latency by experiment and arm.
    pub exp_latency: HistogramVec,
    /// Churn probabilities and CLVs given, by experiment, arm and version.
    pub exp_churn: HistogramVec,
    pub exp_clv: HistogramVec,
    /// Shadow scores by experiment and shadow version, and those dropped (queue full).
    pub shadow_scores: IntCounterVec,
    pub shadow_dropped: IntCounterVec,
    /// |shadow - answer| by experiment, shadow version and answering version.
    pub shadow_churn_diff: HistogramVec,
    pub shadow_clv_diff: HistogramVec,
    /// Exposure records by result (queued, dropped).
    pub exposures: IntCounterVec,
    /// Purchase events by outcome (applied, duplicate, late, rejected).
    pub state_events: IntCounterVec,
    /// State store calls by operation (get, apply), in seconds.
    pub state_latency: HistogramVec,
    /// Customers scored (Score and BatchScore items, as each chunk finishes): a batch that
    /// stops at its deadline stops adding here.
    pub scored_items: prometheus::IntCounter,
    /// Pinned version loads by result (ok, failed).
    pub pin_loads: IntCounterVec,
    /// Connections closed on arrival because every slot was taken.
    pub connections_refused: prometheus::IntCounter,
    /// Items per BatchScore request.
    pub batch_size: prometheus::Histogram,
    /// 1 while the alias names a version other than the one served (its load failed and is
    /// retried with backoff).
    pub model_stale: prometheus::IntGauge,
    /// Corrupt records on top of the followed alias, skipped for the last readable one.
    pub alias_corrupt: prometheus::IntGauge,
    /// Requests refused for a missing or wrong credential, by service (admin, scoring).
    pub auth_failures: IntCounterVec,
    /// Exposure records accepted but not yet written: what a crash would lose now.
    pub exposure_pending: prometheus::IntGauge,
    /// TLS handshakes on the gRPC port that failed or timed out.
    pub tls_handshake_failures: prometheus::IntCounter,
    /// The exposure log's own count of those, read into the gauge at each scrape.
    exposure_source: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// The Kafka consumer's and the segment changes' counts.
    pub stream: std::sync::Arc<crate::stream::kafka::StreamMetrics>,
    /// The served version's drift, read at each scrape.
    drift: DriftGauges,
    drift_source: std::sync::OnceLock<DriftSource>,
}

/// Where the served version's drift comes from (`None`: no version, or one without a
/// training profile).
pub type DriftSource = Box<dyn Fn() -> Option<crate::drift::Report> + Send + Sync>;

/// The drift gauges: the population stability index of every feature and both scores over
/// the last hour against the training profile, the segments' shares, and how many rows.
struct DriftGauges {
    feature_psi: prometheus::GaugeVec,
    score_psi: prometheus::GaugeVec,
    segment_share: prometheus::GaugeVec,
    rows: prometheus::IntGauge,
}

impl DriftGauges {
    fn new(registry: &Registry) -> Self {
        let vec = |name: &str, help: &str, label: &str| {
            let g = must(prometheus::GaugeVec::new(Opts::new(name, help), &[label]));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let rows = must(prometheus::IntGauge::new(
            "drift_rows",
            "rows scored in the drift window (the last hour) by the served version",
        ));
        let _ = registry.register(Box::new(rows.clone()));
        DriftGauges {
            feature_psi: vec(
                "feature_psi",
                "population stability index of a feature over the last hour against the served version's training profile",
                "feature",
            ),
            score_psi: vec(
                "score_psi",
                "population stability index of a score (churn, clv) over the last hour against the training profile",
                "score",
            ),
            segment_share: vec(
                "segment_share",
                "share of the rows scored in the last hour in each segment",
                "segment",
            ),
            rows,
        }
    }

    fn set(&self, report: Option<crate::drift::Report>) {
        for g in [&self.feature_psi, &self.score_psi, &self.segment_share] {
            g.reset();
        }
        let Some(r) = report else {
            self.rows.set(0);
            return;
        };
        self.rows.set(i64::try_from(r.rows).unwrap_or(i64::MAX));
        for d in &r.distributions {
            let g = match d.kind {
                "feature" => &self.feature_psi,
                _ => &self.score_psi,
            };
            g.with_label_values(&[d.name.as_str()]).set(d.psi);
        }
        for (s, share) in &r.segments {
            self.segment_share
                .with_label_values(&[s.as_str()])
                .set(*share);
        }
    }
}

/// The gRPC code's name as a metric label (and in BatchScore item errors).
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::NotFound => "NOT_FOUND",
        Code::Unavailable => "UNAVAILABLE",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::Aborted => "ABORTED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::Cancelled => "CANCELLED",
        Code::Internal => "INTERNAL",
        _ => "OTHER",
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are constants: a failure here is a programming error at startup.
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5,
        1.0, 5.0,
    ]
}

impl Metrics {
    // Long: one definition per exported metric; splitting it would only scatter the list.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("loyalscore".into()), None).unwrap_or_default();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = must(HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets),
                labels,
            ));
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        let requests = counter(
            "requests_total",
            "gRPC requests by method, code and model version",
            &["method", "code", "version"],
        );
        let latency = histogram(
            "request_duration_seconds",
            "gRPC request latency",
            &["method"],
            latency_buckets(),
        );
        let batch_items = counter(
            "batch_items_total",
            "BatchScore items by result",
            &["result"],
        );
        let loads = counter(
            "model_loads_total",
            "model version loads by result",
            &["result"],
        );
        let active = must(IntGaugeVec::new(
            Opts::new("active_model", "1 for the model version serving now"),
            &["version"],
        ));
        let _ = registry.register(Box::new(active.clone()));
        let model_served = must(prometheus::IntGauge::new(
            "model_served",
            "1 while a model version is served, 0 before the first one loads",
        ));
        let _ = registry.register(Box::new(model_served.clone()));
        let exp_labels = ["experiment", "arm", "version"];
        let shadow_labels = ["experiment", "shadow_version", "version"];
        let tenths: Vec<f64> = (1..=10).map(|i| f64::from(i) / 10.0).collect();
        let money = vec![
            1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
        ];
        let diffs = vec![0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
        let traffic_loads = counter(
            "traffic_loads_total",
            "traffic document applications by result",
            &["result"],
        );
        let exp_requests = counter(
            "experiment_requests_total",
            "customers answered in an experiment, by experiment, arm and version",
            &exp_labels,
        );
        let exp_latency = histogram(
            "experiment_request_duration_seconds",
            "Score latency in an experiment, by experiment and arm",
            &["experiment", "arm"],
            latency_buckets(),
        );
        let exp_churn = histogram(
            "experiment_churn_probability",
            "churn probabilities given in an experiment",
            &exp_labels,
            tenths,
        );
        let exp_clv = histogram(
            "experiment_clv",
            "CLVs given in an experiment",
            &exp_labels,
            money.clone(),
        );
        let shadow_scores = counter(
            "shadow_scores_total",
            "shadow scores by experiment and shadow version",
            &["experiment", "shadow_version"],
        );
        let shadow_dropped = counter(
            "shadow_dropped_total",
            "shadow scores dropped because the queue was full",
            &["experiment"],
        );
        let shadow_churn_diff = histogram(
            "shadow_churn_abs_diff",
            "|shadow churn probability - the answer's|",
            &shadow_labels,
            diffs,
        );
        let shadow_clv_diff = histogram(
            "shadow_clv_abs_diff",
            "|shadow CLV - the answer's|",
            &shadow_labels,
            money,
        );
        let exposures = counter(
            "exposures_total",
            "exposure log records by result (queued, dropped)",
            &["result"],
        );
        let state_events = counter(
            "state_events_total",
            "purchase events recorded into the customer state, by outcome",
            &["outcome"],
        );
        let state_latency = histogram(
            "state_store_duration_seconds",
            "customer state store calls by operation",
            &["op"],
            latency_buckets(),
        );
        let scored_items = must(prometheus::IntCounter::new(
            "scored_items_total",
            "customers scored, counted as each chunk of work finishes",
        ));
        let _ = registry.register(Box::new(scored_items.clone()));
        let connections_refused = must(prometheus::IntCounter::new(
            "connections_refused_total",
            "connections closed on arrival because --max-connections were open",
        ));
        let _ = registry.register(Box::new(connections_refused.clone()));
        let pin_loads = counter(
            "pinned_loads_total",
            "pinned version loads (off the request path) by result",
            &["result"],
        );
        let batch_size = must(prometheus::Histogram::with_opts(
            HistogramOpts::new("batch_size", "items per BatchScore request")
                .buckets(vec![1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0]),
        ));
        let _ = registry.register(Box::new(batch_size.clone()));
        let gauge = |name: &str, help: &str| {
            let g = must(prometheus::IntGauge::new(name, help));
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let model_stale = gauge(
            "model_stale",
            "1 while the served version is not the one the alias names (its load failed; retried with backoff)",
        );
        let alias_corrupt = gauge(
            "alias_corrupt_records",
            "corrupt records on top of the alias, skipped for the last readable one (loyalscore alias repair)",
        );
        let exposure_pending = gauge(
            "exposure_pending",
            "exposure records accepted but not yet written (lost if the process is killed now)",
        );
        let auth_failures = counter(
            "auth_failures_total",
            "requests refused for a missing or wrong credential, by service",
            &["service"],
        );
        let tls_handshake_failures = must(prometheus::IntCounter::new(
            "tls_handshake_failures_total",
            "TLS handshakes on the gRPC port that failed (no valid client certificate, say) or timed out",
        ));
        let _ = registry.register(Box::new(tls_handshake_failures.clone()));
        let m = Metrics {
            drift: DriftGauges::new(&registry),
            drift_source: Default::default(),
            stream: std::sync::Arc::new(crate::stream::kafka::StreamMetrics::new(&registry)),
            tls_handshake_failures,
            model_stale,
            alias_corrupt,
            auth_failures,
            exposure_pending,
            exposure_source: Default::default(),
            batch_size,
            pin_loads,
            connections_refused,
            scored_items,
            registry,
            state_events,
            state_latency,
            requests,
            latency,
            batch_items,
            loads,
            active,
            model_served,
            traffic_loads,
            exp_requests,
            exp_latency,
            exp_churn,
            exp_clv,
            shadow_scores,
            shadow_dropped,
            shadow_churn_diff,
            shadow_clv_diff,
            exposures,
        };
        m.zero_known_series();
        m
    }

    /// Every label value known in advance starts at 0, so dashboards and alerts see the series
    /// (an `increase()` needs a sample before the first failure) before anything happens.
    fn zero_known_series(&self) {
        for (counter, results) in [
            (&self.loads, &["ok", "failed"][..]),
            (&self.pin_loads, &["ok", "failed"]),
            (&self.traffic_loads, &["ok", "failed"]),
            (&self.batch_items, &["ok", "error"]),
            (&self.exposures, &["queued", "dropped"]),
            (&self.auth_failures, &["admin", "scoring"]),
        ] {
            for r in results {
                counter.with_label_values(&[r]).inc_by(0);
            }
        }
    }

    /// An experiment now in force: its drop counter starts at 0 (see `zero_known_series`).
    pub fn experiment_started(&self, experiment: &str) {
        self.shadow_dropped
            .with_label_values(&[experiment])
            .inc_by(0);
    }

    /// One answered request: counted by method, code and version, and timed.
    pub fn observe_request(&self, method: &str, code: Code, version: &str, start: Instant) {
        self.requests
            .with_label_values(&[method, code_name(code), version])
            .inc();
        self.latency
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
    }

    /// A BatchScore's items by result.
    pub fn count_batch_items(&self, ok: u64, failed: u64) {
        self.batch_size.observe((ok + failed) as f64);
        self.batch_items.with_label_values(&["ok"]).inc_by(ok);
        self.batch_items
            .with_label_values(&["error"])
            .inc_by(failed);
    }

    /// Follows the exposure log's count of records not yet written.
    pub fn watch_exposures(&self, pending: std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let _ = self.exposure_source.set(pending);
    }

    /// Follows the served version's drift.
    pub fn watch_drift(&self, source: DriftSource) {
        let _ = self.drift_source.set(source);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        if let Some(f) = self.drift_source.get() {
            self.drift.set(f());
        }
        if let Some(p) = self.exposure_source.get() {
            let n = p.load(std::sync::atomic::Ordering::Relaxed);
            self.exposure_pending
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
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
pub async fn serve_metrics<L>(
    listener: L,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "metrics on /metrics"),
        Err(e) => tracing::info!(error = %e, "metrics on /metrics (address unknown)"),
    }
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
