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
    /// The instant the features describe.
    pub as_of: i64,
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
            let s = crate::scoring::score(m, &job.features, job.as_of, Default::default());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Arm, Experiment};
    use crate::scoring::tests::tiny_model;

    /// With the worker unable to run (a current-thread runtime, no await between submits),
    /// a queue of two takes two jobs and drops and counts the rest at once; the worker then
    /// scores what was queued.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Arc::new(Metrics::new());
        let answer = Arc::new(tiny_model());
        let mut s = tiny_model();
        s.version = "shadow".into();
        let shadow = Arc::new(s);
        let exp = Experiment {
            name: "e".into(),
            salt: "e".into(),
            arms: vec![Arm {
                name: "a".into(),
                version: answer.version.clone(),
                weight: 1,
            }],
            shadow: vec!["shadow".into()],
            holdout: 0.0,
        };
        let routing = Arc::new(
            Routing::new(1, &exp, |v| {
                [&answer, &shadow]
                    .into_iter()
                    .find(|m| m.version == v)
                    .cloned()
            })
            .unwrap(),
        );
        let (shadows, task) = Shadows::start(2, metrics.clone());
        for _ in 0..5 {
            shadows.submit(ShadowJob {
                routing: routing.clone(),
                version: answer.version.clone(),
                churn: 0.5,
                clv: 10.0,
                features: [1.0; crate::features::N_FEATURES],
                as_of: 1_700_000_000,
            });
        }
        assert_eq!(metrics.shadow_dropped.with_label_values(&["e"]).get(), 3);
        drop(shadows);
        task.await.unwrap();
        assert_eq!(
            metrics
                .shadow_scores
                .with_label_values(&["e", "shadow"])
                .get(),
            2
        );
    }
}
