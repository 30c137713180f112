//! The binary bundle: a magic, a format number, then bincode.

use serde::{Deserialize, Serialize};

use super::{Calibration, ModelError, SegmentRules};
use crate::features::{FeatureSchema, RhythmPrior};
use crate::forest::FlatForest;

/// File name of the bundle inside a version.
pub const BUNDLE_FILE: &str = "model.bin";

const MAGIC: &[u8; 4] = b"LYSC";
/// Format 2 added the calibration, the population's rhythm and the segment rules.
const FORMAT: u32 = 2;

/// Everything the scorer needs from one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBundle {
    pub schema: FeatureSchema,
    /// Horizon of the churn label and the CLV target, in days.
    pub horizon_days: u32,
    /// Probability of no purchase within the horizon, before calibration.
    pub churn: FlatForest,
    /// Expected net spend within the horizon.
    pub clv: FlatForest,
    /// Raw churn probability to calibrated.
    pub calibration: Calibration,
    /// The population's rhythm: what customers with few gaps are shrunk toward, and the season.
    pub rhythm: RhythmPrior,
    pub segments: SegmentRules,
}

/// What both forests say of one feature row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// The churn forest's probability before calibration.
    pub raw: f64,
    /// Calibrated probability of no purchase within the horizon.
    pub churn: f64,
    /// Expected net spend within the horizon, never below 0.
    pub clv: f64,
}

impl ModelBundle {
    /// The scores of a feature row: what the server answers and the training profile
    /// records.
    pub fn scores(&self, x: &[f64]) -> Scores {
        let raw = self.churn.predict_row(x);
        Scores {
            raw,
            churn: self.calibration.apply(raw),
            clv: self.clv.predict_row(x).max(0.0),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, ModelError> {
        let mut out = Vec::with_capacity(64 + 16 * (self.churn.n_nodes() + self.clv.n_nodes()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        bincode::serialize_into(&mut out, self).map_err(|e| ModelError::Decode {
            file: BUNDLE_FILE.into(),
            reason: e.to_string(),
        })?;
        Ok(out)
    }

    /// Decodes and checks a bundle: forests structurally sound and as wide as the schema.
    pub fn decode(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(ModelError::BadFormat {
                file: BUNDLE_FILE.into(),
                format: 0,
            });
        }
        let format = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if format != FORMAT {
            return Err(ModelError::BadFormat {
                file: BUNDLE_FILE.into(),
                format,
            });
        }
        let b: ModelBundle = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes()
            .with_limit(bytes.len() as u64)
            .deserialize(&bytes[8..])
            .map_err(|e| ModelError::Decode {
                file: BUNDLE_FILE.into(),
                reason: e.to_string(),
            })?;
        b.check()?;
        Ok(b)
    }

    fn check(&self) -> Result<(), ModelError> {
        self.calibration
            .validate()
            .map_err(|e| ModelError::Inconsistent(format!("calibration: {e}")))?;
        self.segments
            .validate()
            .map_err(|e| ModelError::Inconsistent(format!("segment rules: {e}")))?;
        let r = &self.rhythm;
        let finite = [r.log_gap_mean, r.log_gap_sd, r.prior_gaps]
            .iter()
            .chain(&r.season)
            .all(|v| v.is_finite());
        if !finite || r.log_gap_sd <= 0.0 || r.prior_gaps <= 0.0 {
            return Err(ModelError::Inconsistent(
                "rhythm prior: values must be finite, spread and weight positive".into(),
            ));
        }
        for (name, f) in [("churn", &self.churn), ("clv", &self.clv)] {
            f.validate()
                .map_err(|e| ModelError::Inconsistent(format!("{name} forest: {e}")))?;
            if f.n_features() != self.schema.len() {
                return Err(ModelError::Inconsistent(format!(
                    "{name} forest takes {} features, schema has {}",
                    f.n_features(),
                    self.schema.len()
                )));
            }
        }
        Ok(())
    }
}

use bincode::Options;
