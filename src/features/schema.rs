//! The feature schema: names, order and version. Stored in every manifest and checked by the
//! server, so a model is never fed a vector laid out for another schema.

use serde::{Deserialize, Serialize};

/// Bump when a name, its order or its definition changes.
pub const SCHEMA_VERSION: u32 = 1;

pub const N_FEATURES: usize = 23;

/// Feature names in vector order. Definitions are in `summary.rs` and README.md.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "recency_days",
    "tenure_days",
    "purchases_total",
    "visits_total",
    "purchases_90d",
    "purchases_365d",
    "spend_90d",
    "spend_180d",
    "spend_365d",
    "spend_total",
    "avg_basket",
    "basket_trend",
    "mean_gap_days",
    "gap_cv",
    "overdue_ratio",
    "overdue_z",
    "spend_trend",
    "visit_trend",
    "seasonality_purchases",
    "points_earned_365d",
    "points_redeemed_365d",
    "redemption_ratio",
    "distinct_channels",
];

/// The schema as it travels in a manifest or a model bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSchema {
    pub version: u32,
    pub names: Vec<String>,
}

impl FeatureSchema {
    /// The schema this build computes.
    pub fn current() -> Self {
        FeatureSchema {
            version: SCHEMA_VERSION,
            names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Position of a feature by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
