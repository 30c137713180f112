//! The offline half: load a transaction log, build snapshot rows with the shared feature code,
//! fit, calibrate and evaluate both forests, learn the population's rhythm, and produce a
//! version to publish. Also the sample-data generator. Used by the `loyalscore-train`
//! binary; no gRPC here.

pub mod batch;
mod curves;
pub mod dataset;
pub mod dialect;
pub mod eval;
pub mod evaluate;
pub mod experiment;
pub mod fit;
pub mod generate;
mod grid;
pub mod load;
pub mod report;
pub mod rhythm;
pub mod split;
mod views;

use crate::features::FeatureError;
use crate::forest::ForestError;
use crate::model::{Metrics, ModelError};
use crate::registry::RegistryError;

pub use fit::{train, CalibrationMethod, FitOptions, Overrides, RunInfo, Trained};
pub use load::{load_transactions, LoadError, LoadOptions, TransactionLog};
pub use split::{plan_split, Split, SplitOptions};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("features: {0}")]
    Features(#[from] FeatureError),
    #[error("forest: {0}")]
    Forest(#[from] ForestError),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("split: {0}")]
    Split(String),
    #[error("report: {0}")]
    Report(#[from] crate::report::PlotError),
    #[error("not published: the models do not beat their baselines on the validation rows (churn ROC-AUC {:.4} vs {:.4}, CLV Spearman {:.4} vs {:.4}); pass --force to publish anyway", .0.churn.roc_auc, .0.churn_baseline.roc_auc, .0.clv.spearman, .0.clv_baseline.spearman)]
    NotBetter(Box<Metrics>),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Progress of one long step.
pub trait Tick: Sync {
    fn inc(&self, n: u64);
}

/// Starts progress reports for long steps; the binary draws bars, tests draw nothing.
pub trait Progress: Sync {
    fn start(&self, label: &str, total: u64) -> Box<dyn Tick + '_>;
}

/// Reports nothing.
pub struct Silent;

impl Tick for Silent {
    fn inc(&self, _: u64) {}
}

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) -> Box<dyn Tick + '_> {
        Box::new(Silent)
    }
}
