//! Segments and timing that follow each customer's own rhythm, checked against the ground
//! truth the generator knows: long-rhythm customers on schedule are left alone, the risk
//! segments hold the drifters, the personal overdue signal comes before the 90-day rule,
//! and `rising` does not follow the calendar.

use std::collections::HashMap;

use loyalscore::features::{CustomerSummary, FeatureVector, DAY};
use loyalscore::model::Segment;
use loyalscore::scoring::{score, Explain, Model, Scored};
use loyalscore::trainer::generate::{Kind, Truth};
use loyalscore::trainer::{
    load_transactions, train, FitOptions, LoadOptions, Overrides, RunInfo, Silent, TransactionLog,
};

use crate::support::sample;

/// The customer's features from their purchases before `as_of`, if they have any.
fn features_at(log: &TransactionLog, c: usize, as_of: i64) -> Option<FeatureVector> {
    let mut s = CustomerSummary::new();
    for r in log.history(c, as_of) {
        s.update(&r.tx()).ok()?;
    }
    s.features(as_of).ok()
}

fn score_at(model: &Model, log: &TransactionLog, c: usize, as_of: i64) -> Option<Scored> {
    features_at(log, c, as_of).map(|f| score(model, &f, as_of, Explain::default()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct World {
    log: TransactionLog,
    truth: HashMap<String, Truth>,
    model: Model,
    /// The end of the log's last day.
    end: i64,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let (csv, truth) = sample(dir.path(), 12_000, 1095, 31);
    let log = load_transactions(
        std::fs::File::open(&csv).unwrap(),
        "rhythm",
        &LoadOptions::default(),
        |_| {},
    )
    .unwrap();
    let fixed = Overrides {
        max_depth: Some(Some(10)),
        min_samples_leaf: Some(20),
    };
    let opts = FitOptions {
        n_trees: 40,
        churn: fixed.clone(),
        clv: fixed,
        ..FitOptions::default()
    };
    let run = RunInfo {
        args: vec![],
        created_at: chrono::Utc::now(),
    };
    let t = train(&log, &opts, &run, &Silent).unwrap();
    let model = Model::new(t.manifest, t.bundle).unwrap();
    let end = (log.quality.last_ts.div_euclid(DAY) + 1) * DAY;
    World {
        truth: truth.into_iter().map(|t| (t.id.clone(), t)).collect(),
        log,
        model,
        end,
    }
}

#[test]
fn segments_and_timing_follow_each_customers_rhythm() {
    let w = world();
    let truth = |c: usize| &w.truth[&w.log.ids[c]];
    let scored: Vec<(usize, Scored)> = (0..w.log.n_customers())
        .filter_map(|c| score_at(&w.model, &w.log, c, w.end).map(|s| (c, s)))
        .collect();

    // Truly steady customers with a rhythm of 120 days or more, silent no longer than their
    // usual gap: neither lapsing nor dormant.
    let on_schedule: Vec<&Scored> = scored
        .iter()
        .filter(|(c, _)| {
            let t = truth(*c);
            let last = w
                .log
                .history(*c, w.end)
                .iter()
                .rev()
                .find(|r| r.amount >= 0.0);
            t.kind == Kind::Steady
                && t.mean_gap_days >= 120.0
                && last.is_some_and(|r| (w.end - r.ts) as f64 / DAY as f64 <= t.mean_gap_days)
        })
        .map(|(_, s)| s)
        .collect();
    let alarmed = on_schedule
        .iter()
        .filter(|s| matches!(s.segment, Segment::Lapsing | Segment::Dormant))
        .count();
    let left_alone = 1.0 - alarmed as f64 / on_schedule.len() as f64;
    eprintln!(
        "long-rhythm steady on schedule: {} of {} left alone ({left_alone:.3})",
        on_schedule.len() - alarmed,
        on_schedule.len()
    );
    assert!(on_schedule.len() >= 50, "{}", on_schedule.len());
    assert!(left_alone >= 0.9, "{left_alone}");

    // The risk segments hold at least twice the population's share of drifters.
    let drifted = |c: usize| {
        let t = truth(c);
        t.kind == Kind::Drifter && t.event_ts.is_some_and(|e| e < w.end)
    };
    let share = |v: &[&(usize, Scored)]| {
        v.iter().filter(|(c, _)| drifted(*c)).count() as f64 / v.len().max(1) as f64
    };
    let all: Vec<&(usize, Scored)> = scored.iter().collect();
    let flagged: Vec<&(usize, Scored)> = scored
        .iter()
        .filter(|(_, s)| matches!(s.segment, Segment::Lapsing | Segment::Dormant))
        .collect();
    eprintln!(
        "drifter share: population {:.3}, lapsing or dormant {:.3} ({} customers)",
        share(&all),
        share(&flagged),
        flagged.len()
    );
    assert!(share(&flagged) >= 2.0 * share(&all));

    // Among drifters, their silence turns unusual for them (overdue percentile 0.9: the
    // contact window opens) sooner after the drift than the 90-day rule would flag them.
    let (mut personal, mut rule) = (Vec::new(), Vec::new());
    for c in 0..w.log.n_customers() {
        let t = truth(c);
        let Some(drift) = t.event_ts.filter(|&e| t.kind == Kind::Drifter && e < w.end) else {
            continue;
        };
        let Some(s) = score_at(&w.model, &w.log, c, drift) else {
            continue;
        };
        let last = w
            .log
            .history(c, drift)
            .iter()
            .rev()
            .find(|r| r.amount >= 0.0);
        let Some(last) = last else { continue };
        personal.push((s.timing.contact_from - drift) as f64 / DAY as f64);
        rule.push((last.ts + 90 * DAY - drift) as f64 / DAY as f64);
    }
    let (p, r) = (median(personal.clone()), median(rule));
    eprintln!(
        "days from the drift to the flag, median over {} drifters: own rhythm {p:.1}, 90-day rule {r:.1}",
        personal.len()
    );
    assert!(personal.len() >= 200);
    assert!(p < r, "{p} vs {r}");

    // Rising does not follow the calendar: its share among customers active in the year
    // before is about the same at four dates a quarter apart.
    let shares: Vec<f64> = (0..4)
        .map(|q| {
            let at = w.end - q * 91 * DAY;
            let active: Vec<Scored> = (0..w.log.n_customers())
                .filter(|&c| {
                    w.log
                        .history(c, at)
                        .iter()
                        .any(|r| r.amount >= 0.0 && r.ts >= at - 365 * DAY)
                })
                .filter_map(|c| score_at(&w.model, &w.log, c, at))
                .collect();
            active
                .iter()
                .filter(|s| s.segment == Segment::Rising)
                .count() as f64
                / active.len() as f64
        })
        .collect();
    eprintln!("rising share at four quarters: {shares:.3?}");
    let spread = shares.iter().copied().fold(f64::MIN, f64::max)
        - shares.iter().copied().fold(f64::MAX, f64::min);
    assert!(spread < 0.05, "{shares:?}");
}
