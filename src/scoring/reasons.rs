//! Reasons a CRM user (and the customer, who has the right to know why they are in a
//! segment) can read: the features that moved the churn probability and the CLV most, from
//! each forest's path attributions, and the rule that placed the customer in their segment.
//! In English or German.

use crate::features::{f as ix, FeatureVector, Rhythm, FEATURE_NAMES};
use crate::model::{Segment, SegmentInputs};

use super::{Locale, Model, Reason};

/// What a reason may speak of.
pub(super) struct Context<'a> {
    pub f: &'a FeatureVector,
    pub rhythm: &'a Rhythm,
    pub inputs: &'a SegmentInputs,
    pub locale: Locale,
    /// The silence is unusual for them (past the rules' `overdue_unusual`), whatever the
    /// segment: a `steady` customer may be overdue while the churn risk is still low.
    pub overdue: bool,
}

/// Features that say one thing to a person are credited together, under the first name:
/// recency, the gaps and both overdue measures all read "63 days since the last purchase;
/// usually every 42", and three reasons in those words would be one reason thrice.
fn family(name: &str) -> &'static str {
    match name {
        "recency_days"
        | "overdue_ratio"
        | "overdue_z"
        | "mean_gap_days"
        | "recent_gaps"
        | "recent_gap_log_mean"
        | "recent_gap_log_sd"
        | "recency_log_z" => "recency_days",
        "purchases_total" | "visits_total" => "purchases_total",
        _ => FEATURE_NAMES
            .iter()
            .find(|n| **n == name)
            .copied()
            .unwrap_or("recency_days"),
    }
}

/// Per-feature credit summed by family, largest first (either way).
fn by_family(contributions: &[f64]) -> Vec<(&'static str, f64)> {
    let mut credit: Vec<(&'static str, f64)> = Vec::with_capacity(FEATURE_NAMES.len());
    for (j, &v) in contributions.iter().enumerate() {
        let fam = family(FEATURE_NAMES[j]);
        match credit.iter_mut().find(|(n, _)| *n == fam) {
            Some((_, total)) => *total += v,
            None => credit.push((fam, v)),
        }
    }
    credit.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    credit
}

/// The `k` reasons that moved this customer's churn probability most, in calibrated points:
/// the path attributions of the raw forest, scaled so that they add up to the calibrated
/// probability's distance from the calibrated forest mean.
pub(super) fn churn_reasons(model: &Model, cx: &Context, raw: f64, k: usize) -> Vec<Reason> {
    let b = &model.bundle;
    let c = b.churn.contributions(cx.f);
    let (cal, cal_bias) = (b.calibration.apply(raw), b.calibration.apply(c.bias));
    let scale = if (raw - c.bias).abs() > 1e-12 {
        (cal - cal_bias) / (raw - c.bias)
    } else {
        0.0
    };
    by_family(&c.features)
        .into_iter()
        .take(k)
        .map(|(name, v)| (name, v * scale))
        .filter(|(_, v)| *v != 0.0)
        .map(|(name, v)| Reason {
            feature: name,
            contribution: v,
            text: format!("{} ({})", fact(name, cx), churn_effect(v, cx.locale)),
        })
        .collect()
}

/// The `k` reasons that moved this customer's expected spend most, in money.
pub(super) fn clv_reasons(model: &Model, cx: &Context, k: usize) -> Vec<Reason> {
    let c = model.bundle.clv.contributions(cx.f);
    by_family(&c.features)
        .into_iter()
        .take(k)
        .filter(|(_, v)| *v != 0.0)
        .map(|(name, v)| Reason {
            feature: name,
            contribution: v,
            text: format!("{} ({})", fact(name, cx), clv_effect(v, cx.locale)),
        })
        .collect()
}

fn churn_effect(v: f64, l: Locale) -> String {
    let points = num(100.0 * v.abs(), 1, l);
    match (l, v > 0.0) {
        (Locale::En, true) => format!("raises churn risk by {points} points"),
        (Locale::En, false) => format!("lowers churn risk by {points} points"),
        (Locale::De, true) => format!("erhöht das Abwanderungsrisiko um {points} Punkte"),
        (Locale::De, false) => format!("senkt das Abwanderungsrisiko um {points} Punkte"),
    }
}

fn clv_effect(v: f64, l: Locale) -> String {
    let money = num(v.abs(), 2, l);
    match (l, v > 0.0) {
        (Locale::En, true) => format!("raises expected spend by {money}"),
        (Locale::En, false) => format!("lowers expected spend by {money}"),
        (Locale::De, true) => format!("erhöht den erwarteten Umsatz um {money}"),
        (Locale::De, false) => format!("senkt den erwarteten Umsatz um {money}"),
    }
}

/// A number with `d` decimals, with a decimal comma in German.
fn num(v: f64, d: usize, l: Locale) -> String {
    let s = format!("{v:.d$}");
    match l {
        Locale::En => s,
        Locale::De => s.replace('.', ","),
    }
}

/// `1 purchase` or `3 purchases`.
fn count(n: f64, one: &str, many: &str) -> String {
    if (n - 1.0).abs() < 1e-9 {
        format!("1 {one}")
    } else {
        format!("{n:.0} {many}")
    }
}

/// A log ratio as a percentage change, the direction in words.
fn change(log_ratio: f64, l: Locale, (up, down): (&str, &str)) -> String {
    let p = (log_ratio.exp() - 1.0) * 100.0;
    let word = if p >= 0.0 { up } else { down };
    match l {
        Locale::En => format!("{word} {:.0}%", p.abs()),
        Locale::De => format!("{:.0} % {word}", p.abs()),
    }
}

/// "63 days since the last purchase; usually every 42" from the customer's rhythm.
fn rhythm_fact(cx: &Context) -> String {
    let r = cx.rhythm;
    let (rec, gap) = (r.recency_days, r.typical_gap_days);
    match cx.locale {
        Locale::En if rec < 1.0 => "bought within the last day".into(),
        Locale::De if rec < 1.0 => "hat innerhalb des letzten Tages gekauft".into(),
        Locale::En if r.own_gaps > 0 => {
            format!("{rec:.0} days since the last purchase; usually every {gap:.0}")
        }
        Locale::De if r.own_gaps > 0 => {
            format!("{rec:.0} Tage seit dem letzten Einkauf; sonst alle {gap:.0} Tage")
        }
        Locale::En => format!("{rec:.0} days since the only purchase day"),
        Locale::De => format!("{rec:.0} Tage seit dem einzigen Einkaufstag"),
    }
}

/// One statement about a feature's value.
fn fact(name: &str, cx: &Context) -> String {
    match cx.locale {
        Locale::En => fact_en(name, cx),
        Locale::De => fact_de(name, cx),
    }
}

fn fact_en(name: &str, cx: &Context) -> String {
    let v = |i: usize| cx.f[i];
    let m = |i: usize| num(cx.f[i], 2, Locale::En);
    match name {
        "recency_days" => rhythm_fact(cx),
        "tenure_days" => format!("a customer for {:.0} days", v(ix::TENURE_DAYS)),
        "purchases_total" => count(
            v(ix::PURCHASES_TOTAL),
            "purchase in total",
            "purchases in total",
        ),
        "purchases_90d" => count(
            v(ix::PURCHASES_90D),
            "purchase in the last 90 days",
            "purchases in the last 90 days",
        ),
        "purchases_365d" => count(
            v(ix::PURCHASES_365D),
            "purchase in the last year",
            "purchases in the last year",
        ),
        "visits_90d" => count(
            v(ix::VISITS_90D),
            "shopping day in the last 90 days",
            "shopping days in the last 90 days",
        ),
        "visits_prior_275d" => count(
            v(ix::VISITS_PRIOR_275D),
            "shopping day in the 275 days before",
            "shopping days in the 275 days before",
        ),
        "spend_90d" => format!("{} spent in the last 90 days", m(ix::SPEND_90D)),
        "spend_180d" => format!("{} spent in the last 180 days", m(ix::SPEND_180D)),
        "spend_365d" => format!("{} spent in the last year", m(ix::SPEND_365D)),
        "spend_total" => format!("{} spent in total", m(ix::SPEND_TOTAL)),
        "avg_basket" => format!("average basket {}", m(ix::AVG_BASKET)),
        "basket_trend" => format!(
            "recent baskets {} on the months before",
            change(v(ix::BASKET_TREND), Locale::En, ("up", "down"))
        ),
        "gap_cv" if v(ix::GAP_CV) < 0.5 => "buys on a regular rhythm".into(),
        "gap_cv" => "buys on an irregular rhythm".into(),
        "spend_trend" => format!(
            "spending {} on the previous 90 days",
            change(v(ix::SPEND_TREND), Locale::En, ("up", "down"))
        ),
        "visit_trend" => format!(
            "shopping days {} on the previous 90 days",
            change(v(ix::VISIT_TREND), Locale::En, ("up", "down"))
        ),
        "seasonality_purchases" => count(
            v(ix::SEASONALITY_PURCHASES),
            "purchase around this date last year",
            "purchases around this date last year",
        ),
        "points_earned_365d" => format!(
            "{:.0} points earned in the last year",
            v(ix::POINTS_EARNED_365D)
        ),
        "points_redeemed_365d" => format!(
            "{:.0} points redeemed in the last year",
            v(ix::POINTS_REDEEMED_365D)
        ),
        "redemption_ratio" => format!(
            "redeems {:.0}% of the points earned",
            100.0 * v(ix::REDEMPTION_RATIO)
        ),
        "distinct_channels" => count(v(ix::DISTINCT_CHANNELS), "channel used", "channels used"),
        other => other.replace('_', " "),
    }
}

fn fact_de(name: &str, cx: &Context) -> String {
    let v = |i: usize| cx.f[i];
    let m = |i: usize| num(cx.f[i], 2, Locale::De);
    match name {
        "recency_days" => rhythm_fact(cx),
        "tenure_days" => format!("Kunde seit {:.0} Tagen", v(ix::TENURE_DAYS)),
        "purchases_total" => count(
            v(ix::PURCHASES_TOTAL),
            "Einkauf insgesamt",
            "Einkäufe insgesamt",
        ),
        "purchases_90d" => count(
            v(ix::PURCHASES_90D),
            "Einkauf in den letzten 90 Tagen",
            "Einkäufe in den letzten 90 Tagen",
        ),
        "purchases_365d" => count(
            v(ix::PURCHASES_365D),
            "Einkauf im letzten Jahr",
            "Einkäufe im letzten Jahr",
        ),
        "visits_90d" => count(
            v(ix::VISITS_90D),
            "Einkaufstag in den letzten 90 Tagen",
            "Einkaufstage in den letzten 90 Tagen",
        ),
        "visits_prior_275d" => count(
            v(ix::VISITS_PRIOR_275D),
            "Einkaufstag in den 275 Tagen davor",
            "Einkaufstage in den 275 Tagen davor",
        ),
        "spend_90d" => format!("{} ausgegeben in den letzten 90 Tagen", m(ix::SPEND_90D)),
        "spend_180d" => format!("{} ausgegeben in den letzten 180 Tagen", m(ix::SPEND_180D)),
        "spend_365d" => format!("{} ausgegeben im letzten Jahr", m(ix::SPEND_365D)),
        "spend_total" => format!("{} ausgegeben insgesamt", m(ix::SPEND_TOTAL)),
        "avg_basket" => format!("durchschnittlicher Einkauf {}", m(ix::AVG_BASKET)),
        "basket_trend" => format!(
            "letzte Einkäufe {} als in den Monaten davor",
            change(v(ix::BASKET_TREND), Locale::De, ("größer", "kleiner"))
        ),
        "gap_cv" if v(ix::GAP_CV) < 0.5 => "kauft in regelmäßigem Rhythmus".into(),
        "gap_cv" => "kauft in unregelmäßigem Rhythmus".into(),
        "spend_trend" => format!(
            "Ausgaben {} als in den 90 Tagen davor",
            change(v(ix::SPEND_TREND), Locale::De, ("höher", "niedriger"))
        ),
        "visit_trend" => format!(
            "Einkaufstage {} als in den 90 Tagen davor",
            change(v(ix::VISIT_TREND), Locale::De, ("häufiger", "seltener"))
        ),
        "seasonality_purchases" => count(
            v(ix::SEASONALITY_PURCHASES),
            "Einkauf um dieses Datum im letzten Jahr",
            "Einkäufe um dieses Datum im letzten Jahr",
        ),
        "points_earned_365d" => format!(
            "{:.0} Punkte gesammelt im letzten Jahr",
            v(ix::POINTS_EARNED_365D)
        ),
        "points_redeemed_365d" => format!(
            "{:.0} Punkte eingelöst im letzten Jahr",
            v(ix::POINTS_REDEEMED_365D)
        ),
        "redemption_ratio" => format!(
            "löst {:.0} % der gesammelten Punkte ein",
            100.0 * v(ix::REDEMPTION_RATIO)
        ),
        "distinct_channels" => count(v(ix::DISTINCT_CHANNELS), "Kanal genutzt", "Kanäle genutzt"),
        other => other.replace('_', " "),
    }
}

/// Which rule placed the customer in `segment`, with the figures it looked at.
pub(super) fn segment_reason(segment: Segment, cx: &Context) -> String {
    let l = cx.locale;
    let c = cx.inputs;
    let risk = num(100.0 * c.churn, 0, l);
    let value = num(c.spend_365d, 2, l);
    let pct = num(100.0 * cx.rhythm.overdue_percentile, 0, l);
    let rhythm = rhythm_fact(cx);
    match (l, segment) {
        (Locale::En, Segment::New) => format!(
            "new: first purchase {:.0} days ago, no rhythm of their own yet",
            c.tenure_days
        ),
        (Locale::De, Segment::New) => format!(
            "neu: erster Einkauf vor {:.0} Tagen, noch kein eigener Rhythmus",
            c.tenure_days
        ),
        (Locale::En, Segment::AtRiskValuable) => format!(
            "valuable and at risk: {value} spent in the last year; {rhythm}, longer than {pct}% of their usual gaps; churn risk {risk}%"
        ),
        (Locale::De, Segment::AtRiskValuable) => format!(
            "wertvoll und gefährdet: {value} ausgegeben im letzten Jahr; {rhythm}, länger als {pct} % der üblichen Abstände; Abwanderungsrisiko {risk} %"
        ),
        (Locale::En, Segment::Dormant) => format!(
            "probably gone: churn risk {risk}%; {rhythm}, longer than {pct}% of their usual gaps"
        ),
        (Locale::De, Segment::Dormant) => format!(
            "wahrscheinlich verloren: Abwanderungsrisiko {risk} %; {rhythm}, länger als {pct} % der üblichen Abstände"
        ),
        (Locale::En, Segment::Lapsing) => format!(
            "overdue for them: {rhythm}, longer than {pct}% of their usual gaps; churn risk {risk}%"
        ),
        (Locale::De, Segment::Lapsing) => format!(
            "überfällig: {rhythm}, länger als {pct} % der üblichen Abstände; Abwanderungsrisiko {risk} %"
        ),
        (Locale::En, Segment::Loyal) => {
            format!("valuable and staying: {value} spent in the last year; churn risk {risk}%")
        }
        (Locale::De, Segment::Loyal) => format!(
            "wertvoll und treu: {value} ausgegeben im letzten Jahr; Abwanderungsrisiko {risk} %"
        ),
        (_, Segment::Rising) => rising_reason(cx),
        (Locale::En, Segment::Steady) if cx.overdue => format!(
            "overdue for them but not at risk yet: {rhythm}, longer than {pct}% of their usual gaps; churn risk only {risk}%"
        ),
        (Locale::De, Segment::Steady) if cx.overdue => format!(
            "überfällig, aber noch nicht gefährdet: {rhythm}, länger als {pct} % der üblichen Abstände; Abwanderungsrisiko nur {risk} %"
        ),
        (Locale::En, Segment::Steady) => format!("on their rhythm: {rhythm}; churn risk {risk}%"),
        (Locale::De, Segment::Steady) => {
            format!("im eigenen Rhythmus: {rhythm}; Abwanderungsrisiko {risk} %")
        }
    }
}

fn rising_reason(cx: &Context) -> String {
    let r = cx.rhythm;
    let l = cx.locale;
    let (ev, es) = (
        r.expected_visits_90d.unwrap_or(0.0),
        r.expected_spend_90d.unwrap_or(0.0),
    );
    let (v, s) = (num(r.visits_90d, 0, l), num(r.spend_90d, 2, l));
    let (ev, es) = (num(ev, 1, l), num(es, 2, l));
    match l {
        Locale::En => format!(
            "growing against their own past: {v} shopping days and {s} spent in the last 90 days, where their earlier rate gives {ev} and {es} at this time of year"
        ),
        Locale::De => format!(
            "wachsend gegenüber der eigenen Vergangenheit: {v} Einkaufstage und {s} ausgegeben in den letzten 90 Tagen, wo das frühere Tempo zu dieser Jahreszeit {ev} und {es} ergibt"
        ),
    }
}
