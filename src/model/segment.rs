//! Segments: a CRM-ready label from churn probability, predicted CLV and the spend trend,
//! with thresholds learnt as quantiles of the validation population and stored per version.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentThresholds {
    /// Churn probability at or above which a customer is lapsing (70th percentile).
    pub churn_high: f64,
    /// At or above: dormant, most likely gone (90th percentile).
    pub churn_dormant: f64,
    /// At or below: loyal, if valuable enough (30th percentile).
    pub churn_low: f64,
    /// Predicted CLV at or above which a customer is valuable (80th percentile).
    pub clv_high: f64,
    /// Median predicted CLV.
    pub clv_median: f64,
    /// `spend_trend` at or above which a customer is rising (80th percentile, at least 0.1).
    pub spend_trend_rising: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// Valuable and likely to leave: worth a rescue offer now.
    AtRiskValuable,
    /// Very likely gone already.
    Dormant,
    /// Drifting away.
    Lapsing,
    /// Growing visits and baskets: nurture before a competitor does.
    Rising,
    /// Valuable and staying.
    Loyal,
    /// Everyone else.
    Steady,
}

impl Segment {
    pub fn as_str(self) -> &'static str {
        match self {
            Segment::AtRiskValuable => "at_risk_valuable",
            Segment::Dormant => "dormant",
            Segment::Lapsing => "lapsing",
            Segment::Rising => "rising",
            Segment::Loyal => "loyal",
            Segment::Steady => "steady",
        }
    }
}

impl SegmentThresholds {
    /// The first rule that holds wins, rescue first.
    pub fn segment(&self, churn: f64, clv: f64, spend_trend: f64) -> Segment {
        if churn >= self.churn_high && clv >= self.clv_high {
            Segment::AtRiskValuable
        } else if churn >= self.churn_dormant {
            Segment::Dormant
        } else if churn >= self.churn_high {
            Segment::Lapsing
        } else if spend_trend >= self.spend_trend_rising && clv >= self.clv_median {
            Segment::Rising
        } else if churn <= self.churn_low && clv >= self.clv_median {
            Segment::Loyal
        } else {
            Segment::Steady
        }
    }

    /// Thresholds from validation-population predictions.
    pub fn from_population(churn: &[f64], clv: &[f64], spend_trend: &[f64]) -> Self {
        SegmentThresholds {
            churn_high: quantile(churn, 0.7),
            churn_dormant: quantile(churn, 0.9),
            churn_low: quantile(churn, 0.3),
            clv_high: quantile(clv, 0.8),
            clv_median: quantile(clv, 0.5),
            spend_trend_rising: quantile(spend_trend, 0.8).max(0.1),
        }
    }
}

/// The q-quantile (nearest rank) of finite values; 0 for an empty slice.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    v[idx]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_apply_in_order() {
        let t = SegmentThresholds {
            churn_high: 0.6,
            churn_dormant: 0.9,
            churn_low: 0.2,
            clv_high: 100.0,
            clv_median: 40.0,
            spend_trend_rising: 0.3,
        };
        assert_eq!(t.segment(0.7, 150.0, 0.0), Segment::AtRiskValuable);
        assert_eq!(t.segment(0.95, 10.0, 0.0), Segment::Dormant);
        assert_eq!(t.segment(0.65, 10.0, 0.0), Segment::Lapsing);
        assert_eq!(t.segment(0.3, 50.0, 0.5), Segment::Rising);
        assert_eq!(t.segment(0.1, 50.0, 0.0), Segment::Loyal);
        assert_eq!(t.segment(0.4, 10.0, 0.0), Segment::Steady);
    }

    #[test]
    fn quantiles() {
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.7), 70.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
