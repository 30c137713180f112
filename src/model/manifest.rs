//! The manifest: the JSON record of what a version is, how it was made and how good it is.
//! Written last and create-if-absent, so its presence means the version is complete.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ModelError, SegmentRules};
use crate::features::{FeatureSchema, RhythmPrior};
use crate::forest::ForestParams;

/// File name of the manifest inside a version.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format, bumped on incompatible change.
    pub format: u32,
    pub version: String,
    pub created_at: String,
    pub trainer: TrainerInfo,
    pub data: DataLineage,
    pub split: SplitInfo,
    pub hyperparameters: Hyperparameters,
    pub feature_schema: FeatureSchema,
    pub metrics: Metrics,
    /// Whether both models beat their baselines on the validation rows.
    pub beats_baselines: bool,
    /// Published with `--force` although it did not beat its baselines.
    pub forced: bool,
    /// The segment rules' thresholds (also in the bundle).
    #[serde(default)]
    pub segments: SegmentRules,
    /// Each segment on the validation rows: size, predicted and realised churn, spend.
    #[serde(default)]
    pub segment_table: Vec<SegmentRow>,
    /// The population's rhythm the version learnt (also in the bundle).
    #[serde(default)]
    pub rhythm: RhythmPrior,
    /// Each feature's range on the rows the version was fitted on, in schema order: what a
    /// scored customer is compared with (`out_of_range`). Empty in versions before it.
    #[serde(default)]
    pub feature_ranges: Vec<FeatureRange>,
    /// The features' and scores' distribution on the validation rows, for drift at serve
    /// time. Absent in versions before it.
    #[serde(default)]
    pub profile: Option<super::Profile>,
    pub files: Vec<FileEntry>,
}

/// The smallest and largest value of one feature on the fitting rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRange {
    pub name: String,
    pub min: f64,
    pub max: f64,
}

/// One segment on the validation rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRow {
    pub segment: String,
    pub rows: u64,
    pub share: f64,
    /// Mean calibrated churn probability given.
    pub mean_churn: f64,
    /// Share of them with no purchase within the horizon.
    pub realised_churn: f64,
    /// Mean net spend within the horizon.
    pub mean_spend: f64,
}

/// The validation figures of one validation snapshot (one per calendar quarter where the
/// data allows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarterMetrics {
    pub as_of: String,
    pub rows: u64,
    pub churn_rate: f64,
    pub roc_auc: f64,
    pub brier: f64,
    pub ece: f64,
    pub clv_spearman: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerInfo {
    pub version: String,
    pub git_commit: Option<String>,
    /// The command line, without paths to customer data beyond the one recorded in `data`.
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataLineage {
    pub source: String,
    pub sha256: String,
    pub rows_read: u64,
    pub rows_rejected: u64,
    pub rows_duplicate: u64,
    pub customers: u64,
    pub first_purchase: String,
    pub last_purchase: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// `out_of_time` or `customer_hash_holdout`.
    pub method: String,
    /// The latest validation snapshot: features before it, labels in [it, it + horizon).
    pub validation_as_of: String,
    /// Every validation snapshot (one per calendar quarter where the data allows).
    #[serde(default)]
    pub validation_snapshots: Vec<String>,
    pub horizon_days: u32,
    pub lookback_days: u32,
    pub train_snapshots: Vec<String>,
    pub refit_snapshots: Vec<String>,
    pub train_rows: u64,
    pub validation_rows: u64,
    pub refit_rows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub churn: ForestParams,
    pub clv: ForestParams,
    /// How raw churn probabilities are calibrated: isotonic, platt or none.
    #[serde(default)]
    pub calibration: String,
    /// Days between training snapshots.
    #[serde(default)]
    pub snapshot_stride_days: u32,
    /// How `max_depth` and `min_samples_leaf` were chosen: `grid` or `flags`.
    pub selected_by: String,
    /// Every grid point tried, with its score on the inner validation split.
    pub grid: Vec<GridPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridPoint {
    pub model: String,
    pub max_depth: Option<u16>,
    pub min_samples_leaf: usize,
    pub metric: String,
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The calibrated churn probabilities.
    pub churn: ChurnMetrics,
    /// The forest's raw probabilities, before calibration.
    #[serde(default)]
    pub churn_uncalibrated: Option<ChurnMetrics>,
    /// "No purchase for 90 days", calibrated on the training rows.
    pub churn_baseline: ChurnMetrics,
    pub clv: ClvMetrics,
    /// "Spend over the last horizon repeats".
    pub clv_baseline: ClvMetrics,
    /// The same figures per validation snapshot (calendar quarter).
    #[serde(default)]
    pub by_quarter: Vec<QuarterMetrics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnMetrics {
    pub rows: u64,
    pub churn_rate: f64,
    pub roc_auc: f64,
    pub pr_auc: f64,
    pub brier: f64,
    pub log_loss: f64,
    pub top_decile_lift: f64,
    /// Expected calibration error over ten probability bins.
    #[serde(default)]
    pub ece: f64,
    pub calibration: Vec<CalibrationBin>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvMetrics {
    pub rows: u64,
    pub mean_actual: f64,
    pub mean_predicted: f64,
    pub mae: f64,
    pub rmse: f64,
    pub spearman: f64,
    pub normalized_gini: f64,
    pub top_decile_capture: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

impl Manifest {
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        serde_json::from_slice(bytes).map_err(|e| ModelError::Decode {
            file: MANIFEST_FILE.into(),
            reason: e.to_string(),
        })
    }

    /// Checks a file's bytes against the checksum the manifest records for it.
    pub fn verify_file(&self, name: &str, bytes: &[u8]) -> Result<(), ModelError> {
        let entry = self
            .files
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| ModelError::NotInManifest(name.into()))?;
        let actual = sha256_hex(bytes);
        if actual != entry.sha256 || bytes.len() as u64 != entry.bytes {
            return Err(ModelError::Checksum {
                file: name.into(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}
