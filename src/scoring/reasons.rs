//! Reasons a CRM user can read, from the churn forest's path attributions.

use crate::features::{FeatureVector, FEATURE_NAMES};

use super::{Model, Reason};

/// Features that say one thing to a person are credited together, under the first name:
/// recency, mean gap and both overdue measures all read "63 days since the last purchase;
/// usually every 42", and three reasons in those words would be one reason thrice.
fn family(name: &str) -> &'static str {
    match name {
        "recency_days" | "overdue_ratio" | "overdue_z" | "mean_gap_days" => "recency_days",
        "purchases_total" | "visits_total" => "purchases_total",
        _ => FEATURE_NAMES
            .iter()
            .find(|n| **n == name)
            .copied()
            .unwrap_or("recency_days"),
    }
}

/// The `k` reasons that moved this customer's churn probability most, either way.
pub(super) fn top_reasons(model: &Model, f: &FeatureVector, k: usize) -> Vec<Reason> {
    let c = model.bundle.churn.contributions(f);
    let mut credit: Vec<(&'static str, f64)> = Vec::with_capacity(FEATURE_NAMES.len());
    for (j, &v) in c.features.iter().enumerate() {
        let fam = family(FEATURE_NAMES[j]);
        match credit.iter_mut().find(|(n, _)| *n == fam) {
            Some((_, total)) => *total += v,
            None => credit.push((fam, v)),
        }
    }
    credit.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    credit
        .into_iter()
        .take(k)
        .filter(|(_, v)| *v != 0.0)
        .map(|(name, v)| Reason {
            feature: name,
            churn_contribution: v,
            text: reason_text(name, f, v),
        })
        .collect()
}

fn value(f: &FeatureVector, name: &str) -> f64 {
    FEATURE_NAMES
        .iter()
        .position(|n| *n == name)
        .map_or(0.0, |i| f[i])
}

fn pct(log_ratio: f64) -> String {
    let p = (log_ratio.exp() - 1.0) * 100.0;
    if p >= 0.0 {
        format!("up {p:.0}%")
    } else {
        format!("down {:.0}%", -p)
    }
}

fn plural(n: f64, one: &str, many: &str) -> String {
    if (n - 1.0).abs() < 1e-9 {
        format!("1 {one}")
    } else {
        format!("{n:.0} {many}")
    }
}

/// One sentence about a feature's value, and which way it pushes the churn risk.
pub fn reason_text(name: &str, f: &FeatureVector, contribution: f64) -> String {
    let effect = if contribution > 0.0 {
        "raises"
    } else {
        "lowers"
    };
    format!(
        "{} ({effect} churn risk by {:.1} points)",
        fact(name, f),
        100.0 * contribution.abs()
    )
}

/// What a feature's value says about the customer, in words.
fn fact(name: &str, f: &FeatureVector) -> String {
    let v = |n: &str| value(f, n);
    match name {
        "recency_days" | "overdue_ratio" | "overdue_z" | "mean_gap_days" => {
            if v("recency_days") < 1.0 {
                "bought within the last day".to_string()
            } else if v("visits_total") >= 2.0 {
                format!(
                    "{:.0} days since the last purchase; usually every {:.0}",
                    v("recency_days"),
                    v("mean_gap_days")
                )
            } else {
                format!("{:.0} days since the only purchase day", v("recency_days"))
            }
        }
        "tenure_days" => format!("a customer for {:.0} days", v("tenure_days")),
        "purchases_total" => plural(
            v("purchases_total"),
            "purchase in total",
            "purchases in total",
        ),
        "visits_total" => plural(
            v("visits_total"),
            "shopping day in total",
            "shopping days in total",
        ),
        "purchases_90d" => plural(
            v("purchases_90d"),
            "purchase in the last 90 days",
            "purchases in the last 90 days",
        ),
        "purchases_365d" => plural(
            v("purchases_365d"),
            "purchase in the last year",
            "purchases in the last year",
        ),
        "spend_90d" => format!("{:.2} spent in the last 90 days", v("spend_90d")),
        "spend_180d" => format!("{:.2} spent in the last 180 days", v("spend_180d")),
        "spend_365d" => format!("{:.2} spent in the last year", v("spend_365d")),
        "spend_total" => format!("{:.2} spent in total", v("spend_total")),
        "avg_basket" => format!("average basket {:.2}", v("avg_basket")),
        "basket_trend" => format!(
            "recent baskets {} on the months before",
            pct(v("basket_trend"))
        ),
        "gap_cv" => {
            if v("gap_cv") < 0.5 {
                "buys on a regular rhythm".to_string()
            } else {
                "buys on an irregular rhythm".to_string()
            }
        }
        "spend_trend" => format!("spending {} on the previous 90 days", pct(v("spend_trend"))),
        "visit_trend" => format!("visits {} on the previous 90 days", pct(v("visit_trend"))),
        "seasonality_purchases" => plural(
            v("seasonality_purchases"),
            "purchase around this date last year",
            "purchases around this date last year",
        ),
        "points_earned_365d" => format!(
            "{:.0} points earned in the last year",
            v("points_earned_365d")
        ),
        "points_redeemed_365d" => format!(
            "{:.0} points redeemed in the last year",
            v("points_redeemed_365d")
        ),
        "redemption_ratio" => format!(
            "redeems {:.0}% of the points earned",
            100.0 * v("redemption_ratio")
        ),
        "distinct_channels" => plural(v("distinct_channels"), "channel used", "channels used"),
        other => other.replace('_', " "),
    }
}
