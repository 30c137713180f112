//! What one model version is: the [`ModelBundle`] (both flat forests, the churn calibration,
//! the feature schema, the population's rhythm, the segment rules) and its [`Manifest`]
//! (metrics, lineage, hyper-parameters, checksums).
//! Encoding, decoding and checksums live here; storage and transport do not.

mod bundle;
mod calibration;
mod evaluation;
mod manifest;
mod profile;
mod segment;

pub use bundle::{ModelBundle, Scores, BUNDLE_FILE};
pub use calibration::{expected_calibration_error, Calibration};
pub use evaluation::{
    ClvBin, Evaluation, Gain, Histogram, Importance, RulePoint, EVALUATION_FILE, REPORT_FILE,
};
pub use manifest::{
    sha256_hex, CalibrationBin, ChurnMetrics, ClvMetrics, DataLineage, FeatureRange, FileEntry,
    GridPoint, Hyperparameters, Manifest, Metrics, QuarterMetrics, SegmentRow, SplitInfo,
    TrainerInfo, MANIFEST_FILE,
};
pub use profile::{Binned, Profile};
pub use segment::{Segment, SegmentInputs, SegmentRules};

/// Why a bundle or manifest could not be read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{file}: not a loyalscore model bundle (bad magic or format {format})")]
    BadFormat { file: String, format: u32 },
    #[error("{file}: cannot decode: {reason}")]
    Decode { file: String, reason: String },
    #[error("{file}: checksum mismatch (manifest says {expected}, file hashes to {actual})")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("manifest lists no file named {0}")]
    NotInManifest(String),
    #[error("inconsistent model: {0}")]
    Inconsistent(String),
}

/// Names that become object-store path segments (version ids, aliases, experiments, arms):
/// letters, digits, '.', '_' and '-', at most 128, not starting with '.'.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
