//! Shadow scoring: an experiment's shadow versions score the same customers off the request
//! path, and only the disagreement with the answer is measured. A bounded queue sits between:
//! when it is full the job is dropped and counted, so shadows never slow a caller.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::metrics::Metrics;
use crate::features::FeatureVector;
use crate::routing::Routing;

/// One answered customer to score again with every shadow version.
pub struct ShadowJob {
    pub routing: Arc<Routing>,
    /// The version that answered, and its answer.
    pub version: String,
    pub churn: f64,
    pub clv: f64,
    pub features: FeatureVector,
}

/// The request side: never blocks.
#[derive(Clone)]
pub struct Shadows {
    tx: mpsc::Sender<ShadowJob>,
    metrics: Arc<Metrics>,
}

impl Shadows {
    /// Starts the worker; it stops when every `Shadows` is dropped.
    pub fn start(capacity: usize, metrics: Arc<Metrics>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(work(rx, metrics.clone()));
        (Shadows { tx, metrics }, task)
    }

    pub fn submit(&self, job: ShadowJob) {
        if let Err(mpsc::error::TrySendError::Full(job)) = self.tx.try_send(job) {
            self.metrics
                .shadow_dropped
                .with_label_values(&[job.routing.experiment.as_str()])
                .inc();
        }
    }
}

async fn work(mut rx: mpsc::Receiver<ShadowJob>, metrics: Arc<Metrics>) {
    while let Some(job) = rx.recv().await {
        let exp = job.routing.experiment.as_str();
        for m in &job.routing.shadows {
            let s = crate::scoring::score(m, &job.features, false);
            let shadow = m.version.as_str();
            metrics
                .shadow_scores
                .with_label_values(&[exp, shadow])
                .inc();
            let labels = [exp, shadow, job.version.as_str()];
            metrics
                .shadow_churn_diff
                .with_label_values(&labels)
                .observe((s.churn - job.churn).abs());
            metrics
                .shadow_clv_diff
                .with_label_values(&labels)
                .observe((s.clv - job.clv).abs());
        }
        // Requests come first on shared cores.
        tokio::task::yield_now().await;
    }
}
