//! The feature schema: names, order and version. Stored in every manifest and checked by the
//! server, so a model is never fed a vector laid out for another schema.

use serde::{Deserialize, Serialize};

/// Bump when a name, its order or its definition changes. Version 2: spend is net of returns,
/// a day with only returns is not a visit, and six rhythm features were added.
pub const SCHEMA_VERSION: u32 = 2;

pub const N_FEATURES: usize = 29;

/// Each feature's position in the vector, by name (a test checks them against
/// [`FEATURE_NAMES`]).
pub mod f {
    pub const RECENCY_DAYS: usize = 0;
    pub const TENURE_DAYS: usize = 1;
    pub const PURCHASES_TOTAL: usize = 2;
    pub const VISITS_TOTAL: usize = 3;
    pub const PURCHASES_90D: usize = 4;
    pub const PURCHASES_365D: usize = 5;
    pub const SPEND_90D: usize = 6;
    pub const SPEND_180D: usize = 7;
    pub const SPEND_365D: usize = 8;
    pub const SPEND_TOTAL: usize = 9;
    pub const AVG_BASKET: usize = 10;
    pub const BASKET_TREND: usize = 11;
    pub const MEAN_GAP_DAYS: usize = 12;
    pub const GAP_CV: usize = 13;
    pub const OVERDUE_RATIO: usize = 14;
    pub const OVERDUE_Z: usize = 15;
    pub const SPEND_TREND: usize = 16;
    pub const VISIT_TREND: usize = 17;
    pub const SEASONALITY_PURCHASES: usize = 18;
    pub const POINTS_EARNED_365D: usize = 19;
    pub const POINTS_REDEEMED_365D: usize = 20;
    pub const REDEMPTION_RATIO: usize = 21;
    pub const DISTINCT_CHANNELS: usize = 22;
    pub const RECENT_GAPS: usize = 23;
    pub const RECENT_GAP_LOG_MEAN: usize = 24;
    pub const RECENT_GAP_LOG_SD: usize = 25;
    pub const VISITS_90D: usize = 26;
    pub const VISITS_PRIOR_275D: usize = 27;
    pub const RECENCY_LOG_Z: usize = 28;
}

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
    "recent_gaps",
    "recent_gap_log_mean",
    "recent_gap_log_sd",
    "visits_90d",
    "visits_prior_275d",
    "recency_log_z",
];

/// Counts of purchases or visits: a customer with more than this does not exist.
const COUNT: (f64, f64) = (0.0, 1e9);
/// Days (recency, tenure, gaps): a century and more is not a loyalty programme's customer.
const DAYS: (f64, f64) = (0.0, 1e5);
/// Net spend (negative after returns) and points: transactions are at most 1e9 each.
const MONEY: (f64, f64) = (-1e15, 1e15);
const POINTS: (f64, f64) = (0.0, 1e15);
/// Log ratios of amounts within [`MONEY`] stay within ±35.
const LOG_RATIO: (f64, f64) = (-100.0, 100.0);
/// The z-scores are clamped to ±10 where they are computed.
const Z: (f64, f64) = (-10.0, 10.0);

/// The values each feature can take for any customer, whatever their history, in vector
/// order; the feature code never computes one outside (a test checks). A value outside is a
/// caller's mistake or a probe, and is refused with the feature named, not scored.
pub const FEATURE_DOMAIN: [(f64, f64); N_FEATURES] = [
    DAYS,
    DAYS,
    COUNT,
    COUNT,
    COUNT,
    COUNT,
    MONEY,
    MONEY,
    MONEY,
    MONEY,
    MONEY,
    LOG_RATIO,
    DAYS,
    // Gap standard deviation over the mean gap (at least a day).
    DAYS,
    // Recency over the mean gap, capped at 1000.
    (0.0, 1000.0),
    Z,
    LOG_RATIO,
    LOG_RATIO,
    COUNT,
    POINTS,
    POINTS,
    // Redeemed over earned, capped at 100.
    (0.0, 100.0),
    COUNT,
    COUNT,
    // Mean and deviation of ln(gap in days).
    (0.0, 20.0),
    (0.0, 20.0),
    COUNT,
    COUNT,
    Z,
];

/// Why value `v` cannot be feature `j`, if it cannot: not finite, or outside its domain.
pub fn check_value(j: usize, v: f64) -> Result<(), String> {
    let name = FEATURE_NAMES.get(j).copied().unwrap_or("feature");
    let (lo, hi) = FEATURE_DOMAIN
        .get(j)
        .copied()
        .unwrap_or((f64::MIN, f64::MAX));
    if !v.is_finite() {
        return Err(format!("{name} is {v}, not a finite number"));
    }
    if v < lo || v > hi {
        return Err(format!(
            "{name} is {}, outside what any customer can have ({} to {})",
            short(v),
            short(lo),
            short(hi)
        ));
    }
    Ok(())
}

/// A number as a person reads it in a message: 1e308, not 309 digits.
fn short(v: f64) -> String {
    if v != 0.0 && !(1e-4..1e9).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

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

#[cfg(test)]
mod tests {
    use super::{check_value, f, FEATURE_NAMES};

    #[test]
    fn values_outside_a_features_domain_are_named_and_refused() {
        assert!(check_value(f::RECENCY_DAYS, 30.0).is_ok());
        let e = check_value(f::RECENCY_DAYS, -1.0).unwrap_err();
        assert!(e.starts_with("recency_days is -1, outside"), "{e}");
        let e = check_value(f::SPEND_TOTAL, 1e308).unwrap_err();
        assert_eq!(
            e,
            "spend_total is 1e308, outside what any customer can have (-1e15 to 1e15)"
        );
        assert!(
            check_value(f::SPEND_TOTAL, -500.0).is_ok(),
            "returns make spend negative"
        );
        let e = check_value(f::PURCHASES_TOTAL, f64::NAN).unwrap_err();
        assert!(e.contains("not a finite number"), "{e}");
        assert!(check_value(f::OVERDUE_Z, 10.5).is_err());
    }

    #[test]
    fn the_named_indices_match_the_names() {
        let pairs = [
            (f::RECENCY_DAYS, "recency_days"),
            (f::TENURE_DAYS, "tenure_days"),
            (f::PURCHASES_TOTAL, "purchases_total"),
            (f::VISITS_TOTAL, "visits_total"),
            (f::PURCHASES_90D, "purchases_90d"),
            (f::PURCHASES_365D, "purchases_365d"),
            (f::SPEND_90D, "spend_90d"),
            (f::SPEND_180D, "spend_180d"),
            (f::SPEND_365D, "spend_365d"),
            (f::SPEND_TOTAL, "spend_total"),
            (f::AVG_BASKET, "avg_basket"),
            (f::BASKET_TREND, "basket_trend"),
            (f::MEAN_GAP_DAYS, "mean_gap_days"),
            (f::GAP_CV, "gap_cv"),
            (f::OVERDUE_RATIO, "overdue_ratio"),
            (f::OVERDUE_Z, "overdue_z"),
            (f::SPEND_TREND, "spend_trend"),
            (f::VISIT_TREND, "visit_trend"),
            (f::SEASONALITY_PURCHASES, "seasonality_purchases"),
            (f::POINTS_EARNED_365D, "points_earned_365d"),
            (f::POINTS_REDEEMED_365D, "points_redeemed_365d"),
            (f::REDEMPTION_RATIO, "redemption_ratio"),
            (f::DISTINCT_CHANNELS, "distinct_channels"),
            (f::RECENT_GAPS, "recent_gaps"),
            (f::RECENT_GAP_LOG_MEAN, "recent_gap_log_mean"),
            (f::RECENT_GAP_LOG_SD, "recent_gap_log_sd"),
            (f::VISITS_90D, "visits_90d"),
            (f::VISITS_PRIOR_275D, "visits_prior_275d"),
            (f::RECENCY_LOG_Z, "recency_log_z"),
        ];
        assert_eq!(pairs.len(), FEATURE_NAMES.len());
        for (i, name) in pairs {
            assert_eq!(FEATURE_NAMES[i], name);
        }
    }
}
