//! Segments a CRM team acts on, by rules that mean the same thing in every version: absolute
//! thresholds on the calibrated churn probability, past value (net spend over the last
//! year), the customer's overdue state against their own rhythm, and their trend against
//! their own earlier rate at the same time of year. The thresholds are stored per version
//! and settable when training; none is a quantile of the population, so a segment's size
//! follows the risk rather than being fixed by it.

use serde::{Deserialize, Serialize};

/// The thresholds of the segment rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentRules {
    /// Calibrated churn probability at or above which a customer is probably gone.
    pub churn_gone: f64,
    /// At or above: at risk (`lapsing`, and `at_risk_valuable` for valuable customers).
    pub churn_risk: f64,
    /// At or below: staying (`loyal`, for valuable customers).
    pub churn_low: f64,
    /// Overdue percentile at or above which the silence is unusual for this customer: no
    /// customer is `lapsing`, `dormant` or `at_risk_valuable` before it. Also where the
    /// contact window opens.
    pub overdue_unusual: f64,
    /// Overdue percentile at which the contact window closes: a purchase this late is rare
    /// even by the customer's own rhythm.
    pub overdue_late: f64,
    /// Net spend over the last 365 days at or above which a customer is valuable, in the
    /// programme's currency.
    pub value_high: f64,
    /// `rising`: shopping days in the last 90 days at least this many times what the
    /// customer's own earlier rate gives for the same days at this time of year ...
    pub rising_visits: f64,
    /// ... and net spend at least this many times (growth in visits and in baskets both).
    pub rising_spend: f64,
    /// A customer with no gap yet (one purchase day) whose first purchase is at most this
    /// many days ago is `new`.
    pub new_days: f64,
}

impl Default for SegmentRules {
    fn default() -> Self {
        SegmentRules {
            churn_gone: 0.75,
            churn_risk: 0.4,
            churn_low: 0.2,
            overdue_unusual: 0.9,
            overdue_late: 0.99,
            value_high: 0.0,
            rising_visits: 1.25,
            rising_spend: 2.0,
            new_days: 90.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// No rhythm yet: one purchase day, recently.
    New,
    /// Valuable, at risk and overdue for them: worth a rescue offer now.
    AtRiskValuable,
    /// Probably gone, and overdue for them.
    Dormant,
    /// Overdue for them and at risk.
    Lapsing,
    /// Valuable and staying.
    Loyal,
    /// Growing against their own past: nurture.
    Rising,
    /// On their rhythm, nothing unusual.
    Steady,
}

impl Segment {
    pub const ALL: [Segment; 7] = [
        Segment::New,
        Segment::AtRiskValuable,
        Segment::Dormant,
        Segment::Lapsing,
        Segment::Loyal,
        Segment::Rising,
        Segment::Steady,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Segment::New => "new",
            Segment::AtRiskValuable => "at_risk_valuable",
            Segment::Dormant => "dormant",
            Segment::Lapsing => "lapsing",
            Segment::Loyal => "loyal",
            Segment::Rising => "rising",
            Segment::Steady => "steady",
        }
    }
}

/// What the rules look at for one customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentInputs {
    /// Calibrated churn probability.
    pub churn: f64,
    /// Net spend over the last 365 days.
    pub spend_365d: f64,
    pub visits: f64,
    pub tenure_days: f64,
    pub overdue_percentile: f64,
    /// ln(visits / expected) and ln(spend / expected) in the last 90 days against their own
    /// earlier rate; `None` without enough own past.
    pub visit_trend: Option<f64>,
    pub spend_trend: Option<f64>,
}

impl SegmentRules {
    /// The first rule that holds wins: new, rescue, dormant, lapsing, loyal, rising, steady.
    pub fn segment(&self, c: &SegmentInputs) -> Segment {
        let unusual = c.overdue_percentile >= self.overdue_unusual;
        let valuable = c.spend_365d >= self.value_high;
        let growing = |t: Option<f64>, ratio: f64| t.is_some_and(|t| t >= ratio.ln());
        if c.visits < 2.0 && c.tenure_days <= self.new_days {
            Segment::New
        } else if unusual && valuable && c.churn >= self.churn_risk {
            Segment::AtRiskValuable
        } else if unusual && c.churn >= self.churn_gone {
            Segment::Dormant
        } else if unusual && c.churn >= self.churn_risk {
            Segment::Lapsing
        } else if valuable && c.churn <= self.churn_low {
            Segment::Loyal
        } else if growing(c.visit_trend, self.rising_visits)
            && growing(c.spend_trend, self.rising_spend)
        {
            Segment::Rising
        } else {
            Segment::Steady
        }
    }

    /// Checks the thresholds are probabilities and ratios that make sense.
    pub fn validate(&self) -> Result<(), String> {
        let prob = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        let checks = [
            (prob(self.churn_gone), "churn_gone must be a probability"),
            (prob(self.churn_risk), "churn_risk must be a probability"),
            (prob(self.churn_low), "churn_low must be a probability"),
            (
                self.churn_low <= self.churn_risk && self.churn_risk <= self.churn_gone,
                "churn thresholds must rise: churn_low <= churn_risk <= churn_gone",
            ),
            (
                prob(self.overdue_unusual) && prob(self.overdue_late),
                "overdue percentiles must be probabilities",
            ),
            (
                self.overdue_unusual < self.overdue_late,
                "overdue_unusual must be below overdue_late",
            ),
            (self.value_high.is_finite(), "value_high must be finite"),
            (
                self.rising_visits.is_finite() && self.rising_visits >= 1.0,
                "rising_visits must be at least 1",
            ),
            (
                self.rising_spend.is_finite() && self.rising_spend >= 1.0,
                "rising_spend must be at least 1",
            ),
            (
                self.new_days.is_finite() && self.new_days >= 0.0,
                "new_days must be a number of days",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, why)) => Err((*why).to_string()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer() -> SegmentInputs {
        SegmentInputs {
            churn: 0.3,
            spend_365d: 100.0,
            visits: 10.0,
            tenure_days: 400.0,
            overdue_percentile: 0.5,
            visit_trend: Some(0.0),
            spend_trend: Some(0.0),
        }
    }

    #[test]
    fn the_risk_rules_apply_in_order() {
        let r = SegmentRules {
            value_high: 500.0,
            ..SegmentRules::default()
        };
        let c = customer();
        assert_eq!(r.segment(&c), Segment::Steady);
        let with = |f: &dyn Fn(&mut SegmentInputs)| {
            let mut x = c;
            f(&mut x);
            r.segment(&x)
        };
        assert_eq!(
            with(&|x| {
                x.visits = 1.0;
                x.tenure_days = 20.0
            }),
            Segment::New
        );
        assert_eq!(
            with(&|x| {
                x.visits = 1.0;
                x.tenure_days = 200.0
            }),
            Segment::Steady,
            "one old purchase is not new"
        );
        assert_eq!(
            with(&|x| {
                x.overdue_percentile = 0.95;
                x.churn = 0.5;
                x.spend_365d = 900.0
            }),
            Segment::AtRiskValuable
        );
        assert_eq!(
            with(&|x| {
                x.overdue_percentile = 0.95;
                x.churn = 0.9
            }),
            Segment::Dormant
        );
        assert_eq!(
            with(&|x| {
                x.overdue_percentile = 0.95;
                x.churn = 0.5
            }),
            Segment::Lapsing
        );
        // Without an unusual silence, no risk segment, however high the churn risk.
        assert_eq!(with(&|x| x.churn = 0.95), Segment::Steady);
    }

    #[test]
    fn value_and_growth_rules_come_after_the_risk_rules() {
        let r = SegmentRules {
            value_high: 500.0,
            ..SegmentRules::default()
        };
        let with = |f: &dyn Fn(&mut SegmentInputs)| {
            let mut x = customer();
            f(&mut x);
            r.segment(&x)
        };
        assert_eq!(
            with(&|x| {
                x.churn = 0.1;
                x.spend_365d = 900.0
            }),
            Segment::Loyal
        );
        assert_eq!(
            with(&|x| {
                x.visit_trend = Some(0.6);
                x.spend_trend = Some(0.9)
            }),
            Segment::Rising
        );
        assert_eq!(
            with(&|x| {
                x.visit_trend = Some(0.6);
                x.spend_trend = Some(0.1)
            }),
            Segment::Steady,
            "more visits with the same spend is not growth"
        );
        assert_eq!(
            with(&|x| {
                x.churn = 0.1;
                x.spend_365d = 900.0;
                x.visit_trend = Some(0.6);
                x.spend_trend = Some(0.9)
            }),
            Segment::Loyal,
            "the best customers are loyal, even while they grow"
        );
    }

    #[test]
    fn thresholds_are_checked() {
        assert!(SegmentRules::default().validate().is_ok());
        let bad = SegmentRules {
            churn_low: 0.5,
            churn_risk: 0.4,
            ..SegmentRules::default()
        };
        assert!(bad.validate().unwrap_err().contains("must rise"));
    }
}
