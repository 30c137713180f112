//! What the report of a version plots, kept in the version as `evaluation.json` so that a
//! report can be drawn again for any version: curves, gains, histograms and importances of
//! the evaluated forests on the validation rows, and the data-quality counts. Aggregates
//! only: no customer id and no row of any customer.

use serde::{Deserialize, Serialize};

/// File name inside a version.
pub const EVALUATION_FILE: &str = "evaluation.json";

/// The training report a fit writes into the version (`report::version_page`).
pub const REPORT_FILE: &str = "report.html";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Evaluation {
    /// (false positive rate, true positive rate) of the calibrated churn probability, from
    /// the strictest threshold to the loosest.
    pub roc: Vec<[f64; 2]>,
    /// (recall, precision) at the same thresholds.
    pub pr: Vec<[f64; 2]>,
    /// Where "no purchase for 90 days" sits on both curves.
    pub rule: RulePoint,
    /// Deciles of customers by predicted churn: the share of churners in the top ones.
    pub churn_gains: Vec<Gain>,
    /// Deciles by predicted CLV: the share of realised spend in the top ones.
    pub clv_gains: Vec<Gain>,
    /// Predicted CLV against realised spend, per twentieth of the rows by prediction.
    pub clv_bins: Vec<ClvBin>,
    /// The calibrated churn probability in twenty bins of 0.05, for churners and the rest.
    pub churn_histogram: Histogram,
    /// Predicted CLV in twenty bins up to its 99th percentile (the last holds the rest).
    pub clv_histogram: Histogram,
    /// One per feature, in schema order: what drives the published forests.
    pub importance: Vec<Importance>,
    /// Rows rejected by reason (`DataQuality`), and the returns kept as net spend.
    pub rejected: Vec<(String, u64)>,
    pub returns: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RulePoint {
    pub fpr: f64,
    pub tpr: f64,
    pub precision: f64,
}

/// One decile of a gains chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gain {
    /// Share of customers targeted (0.1 to 1.0).
    pub targeted: f64,
    /// Share of what is sought (churners, spend) among them.
    pub captured: f64,
    /// `captured / targeted`.
    pub lift: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvBin {
    pub rows: u64,
    pub mean_predicted: f64,
    pub mean_realised: f64,
}

/// Counts per bin: `edges` has one more entry than each count vector.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Histogram {
    pub edges: Vec<f64>,
    /// One series per group (`groups` names them).
    pub groups: Vec<String>,
    pub counts: Vec<Vec<u64>>,
}

/// One feature's importance in both published forests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    pub feature: String,
    /// Mean decrease in impurity, as a share of the forest's total.
    pub churn_mdi: f64,
    pub clv_mdi: f64,
    /// Mean absolute path attribution: churn in probability, CLV in money.
    pub churn_attribution: f64,
    pub clv_attribution: f64,
}

impl Evaluation {
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, super::ModelError> {
        serde_json::from_slice(bytes).map_err(|e| super::ModelError::Decode {
            file: EVALUATION_FILE.into(),
            reason: e.to_string(),
        })
    }
}
