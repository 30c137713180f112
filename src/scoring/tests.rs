use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::features::{f as ix, RhythmPrior, DAY, FEATURE_NAMES};
use crate::forest::{fit_forest, ForestParams, Matrix, TrainingMatrix};
use crate::model::{
    Calibration, ChurnMetrics, ClvMetrics, DataLineage, Hyperparameters, Metrics, SegmentRules,
    SplitInfo, TrainerInfo,
};

fn churn_metrics() -> ChurnMetrics {
    ChurnMetrics {
        rows: 0,
        churn_rate: 0.0,
        roc_auc: 0.5,
        pr_auc: 0.0,
        brier: 0.0,
        log_loss: 0.0,
        top_decile_lift: 1.0,
        ece: 0.0,
        calibration: vec![],
    }
}

fn clv_metrics() -> ClvMetrics {
    ClvMetrics {
        rows: 0,
        mean_actual: 0.0,
        mean_predicted: 0.0,
        mae: 0.0,
        rmse: 0.0,
        spearman: 0.0,
        normalized_gini: 0.0,
        top_decile_capture: 0.0,
    }
}

/// A small model on random rows where churn rises with recency.
pub(crate) fn tiny_model() -> Model {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut x = Matrix::new(N_FEATURES);
    let (mut yc, mut yv) = (Vec::new(), Vec::new());
    for _ in 0..400 {
        let row: Vec<f64> = (0..N_FEATURES)
            .map(|_| rng.random_range(0.0..200.0))
            .collect();
        yc.push(f64::from(u8::from(row[0] > 100.0)));
        yv.push(row[6] * 2.0);
        x.push_row(&row);
    }
    let tm = TrainingMatrix::new(&x).unwrap();
    let p = ForestParams {
        n_trees: 8,
        ..Default::default()
    };
    let churn = fit_forest(&tm, &yc, &p, 1, &|_| {}).unwrap();
    let clv = fit_forest(&tm, &yv, &p, 1, &|_| {}).unwrap();
    let segments = SegmentRules {
        value_high: 300.0,
        ..SegmentRules::default()
    };
    let bundle = ModelBundle {
        schema: FeatureSchema::current(),
        horizon_days: 180,
        churn,
        clv,
        calibration: Calibration::None,
        rhythm: RhythmPrior::default(),
        segments: segments.clone(),
    };
    Model::new(test_manifest(p, segments), bundle).unwrap()
}

/// A manifest with nothing measured, for a model made in a test.
fn test_manifest(p: ForestParams, segments: SegmentRules) -> Manifest {
    Manifest {
        format: 2,
        version: "vtest".into(),
        created_at: String::new(),
        trainer: TrainerInfo {
            version: String::new(),
            git_commit: None,
            args: vec![],
        },
        data: DataLineage {
            source: String::new(),
            sha256: String::new(),
            rows_read: 0,
            rows_rejected: 0,
            rows_duplicate: 0,
            customers: 0,
            first_purchase: String::new(),
            last_purchase: String::new(),
        },
        split: SplitInfo {
            method: String::new(),
            validation_as_of: String::new(),
            validation_snapshots: vec![],
            horizon_days: 180,
            lookback_days: 365,
            train_snapshots: vec![],
            refit_snapshots: vec![],
            train_rows: 0,
            validation_rows: 0,
            refit_rows: 0,
        },
        hyperparameters: Hyperparameters {
            churn: p.clone(),
            clv: p,
            calibration: "none".into(),
            snapshot_stride_days: 30,
            selected_by: "flags".into(),
            grid: vec![],
        },
        feature_schema: FeatureSchema::current(),
        metrics: Metrics {
            churn: churn_metrics(),
            churn_uncalibrated: None,
            by_quarter: vec![],
            churn_baseline: churn_metrics(),
            clv: clv_metrics(),
            clv_baseline: clv_metrics(),
        },
        beats_baselines: true,
        forced: false,
        segments,
        segment_table: vec![],
        rhythm: RhythmPrior::default(),
        feature_ranges: vec![],
        profile: None,
        files: vec![],
    }
}

fn names() -> Vec<String> {
    FEATURE_NAMES.iter().map(|s| s.to_string()).collect()
}

fn field_of(e: ScoringError) -> String {
    match e {
        ScoringError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn named_features_in_any_order() {
    let schema = FeatureSchema::current();
    // Distinct values, each inside its feature's domain.
    let values: Vec<f64> = (0..N_FEATURES).map(|i| i as f64 / 10.0).collect();
    let f = features_from_named(&schema, &names(), &values).unwrap();
    assert_eq!(f.to_vec(), values);
    let mut rev_names = names();
    rev_names.reverse();
    let mut rev_values = values.clone();
    rev_values.reverse();
    assert_eq!(
        features_from_named(&schema, &rev_names, &rev_values).unwrap(),
        f
    );
}

#[test]
fn named_features_errors_name_the_field() {
    let schema = FeatureSchema::current();
    let values = vec![1.0; N_FEATURES];
    let mut n = names();
    n[4] = "shoe_size".into();
    assert_eq!(
        field_of(features_from_named(&schema, &n, &values).unwrap_err()),
        "features.names[4]"
    );
    let mut n = names();
    n[4] = n[3].clone();
    let e = features_from_named(&schema, &n, &values).unwrap_err();
    assert!(e.to_string().contains("given twice"), "{e}");
    let e = features_from_named(&schema, &names()[1..], &values[1..]).unwrap_err();
    assert!(
        e.to_string().contains("missing feature \"recency_days\""),
        "{e}"
    );
    // All the missing names in one answer.
    let e = features_from_named(&schema, &names()[3..], &values[3..]).unwrap_err();
    assert!(
        e.to_string()
            .contains("missing features \"recency_days\", \"tenure_days\", \"purchases_total\""),
        "{e}"
    );
    let mut v = values.clone();
    v[2] = f64::NAN;
    assert_eq!(
        field_of(features_from_named(&schema, &names(), &v).unwrap_err()),
        "features.values[2]"
    );
    v[2] = f64::INFINITY;
    assert_eq!(
        field_of(features_from_named(&schema, &names(), &v).unwrap_err()),
        "features.values[2]"
    );
    assert_eq!(
        field_of(features_from_named(&schema, &names(), &values[1..]).unwrap_err()),
        "features.values"
    );
}

#[test]
fn history_errors_name_the_transaction() {
    let limits = Limits {
        max_history: 3,
        max_batch: 10,
        ..Limits::default()
    };
    let t = |day: i64, amount: f64| Transaction::new(20_000 * DAY + day * DAY, amount);
    let as_of = 20_000 * DAY + 100 * DAY;
    let model = tiny_model();
    let features_from_history = |txs: &[Transaction], as_of, limits: &Limits| {
        features_from_history(&model, txs, as_of, limits)
    };
    assert!(features_from_history(&[t(1, 5.0), t(3, 9.0)], as_of, &limits).is_ok());
    assert_eq!(
        field_of(features_from_history(&[], as_of, &limits).unwrap_err()),
        "history.transactions"
    );
    let long = vec![t(1, 1.0); 4];
    assert!(features_from_history(&long, as_of, &limits)
        .unwrap_err()
        .to_string()
        .contains("more than the limit of 3"));
    assert_eq!(
        field_of(features_from_history(&[t(1, 5.0), t(2, -2e9)], as_of, &limits).unwrap_err()),
        "history.transactions[1].amount"
    );
    // A return is history, not an error; returns alone are nothing to score.
    assert!(features_from_history(&[t(1, 5.0), t(2, -1.0)], as_of, &limits).is_ok());
    assert!(features_from_history(&[t(2, -1.0)], as_of, &limits)
        .unwrap_err()
        .to_string()
        .contains("no purchase"));
    assert_eq!(
        field_of(features_from_history(&[t(1, f64::NAN)], as_of, &limits).unwrap_err()),
        "history.transactions[0].amount"
    );
    assert_eq!(
        field_of(features_from_history(&[t(1, 5.0), t(100, 1.0)], as_of, &limits).unwrap_err()),
        "history.transactions[1].time"
    );
    let before_1970 = Transaction::new(-DAY, 1.0);
    assert_eq!(
        field_of(features_from_history(&[before_1970], as_of, &limits).unwrap_err()),
        "history.transactions[0].time"
    );
}

/// A regular customer in feature form: 180 days since the last purchase, gaps of about 50.
fn regular_customer() -> FeatureVector {
    let mut f = [50.0; N_FEATURES];
    f[ix::RECENCY_DAYS] = 180.0;
    f[ix::TENURE_DAYS] = 900.0;
    f[ix::RECENT_GAPS] = 8.0;
    f[ix::RECENT_GAP_LOG_MEAN] = 50f64.ln();
    f[ix::RECENT_GAP_LOG_SD] = 0.3;
    f
}

const AS_OF: i64 = 20_000 * DAY;

#[test]
fn score_uses_both_forests_and_explains() {
    let m = tiny_model();
    let f = regular_customer();
    let explain = Explain {
        reasons: true,
        locale: Locale::En,
    };
    let s = score(&m, &f, AS_OF, explain);
    assert_eq!(s.churn, m.bundle.churn.predict_row(&f));
    assert_eq!(s.clv, m.bundle.clv.predict_row(&f).max(0.0));
    assert_eq!(s.reasons.len(), 3);
    assert_eq!(
        s.reasons[0].feature, "recency_days",
        "recency drives churn in this model"
    );
    assert!(s.reasons[0].contribution > 0.0);
    let gap = s.timing.typical_gap_days;
    assert!((40.0..50.0).contains(&gap), "{gap}");
    assert!(
        s.reasons[0].text.contains(&format!(
            "180 days since the last purchase; usually every {gap:.0}"
        )),
        "{}",
        s.reasons[0].text
    );
    assert!(s.reasons[0].text.contains("raises churn risk"));
    let texts: std::collections::HashSet<&str> =
        s.reasons.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts.len(), 3, "three different reasons: {:?}", s.reasons);
    assert_eq!(s.clv_reasons.len(), 3);
    assert!(
        s.clv_reasons[0].text.contains("expected spend by"),
        "{:?}",
        s.clv_reasons
    );
    assert!(!s.segment_reason.is_empty());
    let plain = score(&m, &f, AS_OF, Explain::default());
    assert!(plain.reasons.is_empty() && plain.clv_reasons.is_empty());
    assert!(plain.segment_reason.is_empty());
    assert_eq!(
        (plain.churn, plain.segment, plain.timing),
        (s.churn, s.segment, s.timing)
    );
}

/// Overdue for their own rhythm while the churn probability stays under the risk threshold:
/// `steady` by the rules, and the reason says they are overdue, not "on their rhythm".
#[test]
fn a_steady_customer_past_their_rhythm_is_told_overdue() {
    let m = tiny_model();
    let mut f = regular_customer();
    f[ix::RECENCY_DAYS] = 90.0;
    f[ix::RECENT_GAP_LOG_MEAN] = 7f64.ln();
    // Nothing in the last 90 days: not growing against their own past.
    f[ix::VISITS_90D] = 0.0;
    f[ix::SPEND_90D] = 0.0;
    let explain = Explain {
        reasons: true,
        ..Explain::default()
    };
    let s = score(&m, &f, AS_OF, explain);
    assert!(s.churn < m.bundle.segments.churn_risk, "{}", s.churn);
    assert!(s.timing.overdue_percentile >= m.bundle.segments.overdue_unusual);
    assert_eq!(s.segment, Segment::Steady);
    assert!(
        s.segment_reason
            .starts_with("overdue for them but not at risk yet: 90 days since the last purchase"),
        "{}",
        s.segment_reason
    );
    f[ix::RECENCY_DAYS] = 5.0;
    let on_time = score(&m, &f, AS_OF, explain);
    assert!(
        on_time.segment_reason.starts_with("on their rhythm"),
        "{}",
        on_time.segment_reason
    );
}

/// 180 days of silence against gaps of about 50: far beyond their usual gaps, so the
/// contact window has passed; the timing is consistent with itself.
#[test]
fn timing_follows_the_customers_rhythm() {
    let m = tiny_model();
    let t = score(&m, &regular_customer(), AS_OF, Explain::default()).timing;
    let last = AS_OF - 180 * DAY;
    assert!(t.overdue_percentile > 0.99, "{t:?}");
    assert!((t.days_overdue - (180.0 - t.typical_gap_days)).abs() < 1e-9);
    assert_eq!(
        t.expected_next_purchase,
        last + (t.typical_gap_days * DAY as f64) as i64
    );
    assert!(last < t.contact_from && t.contact_from <= t.contact_by && t.contact_by < AS_OF);
}

#[test]
fn reasons_speak_german_when_asked() {
    let m = tiny_model();
    let de = Explain {
        reasons: true,
        locale: Locale::parse("de-AT").unwrap(),
    };
    let s = score(&m, &regular_customer(), AS_OF, de);
    assert!(
        s.reasons[0].text.contains("Tage seit dem letzten Einkauf"),
        "{}",
        s.reasons[0].text
    );
    assert!(s.reasons[0].text.contains("Abwanderungsrisiko"));
    assert!(s.clv_reasons[0].text.contains("erwarteten Umsatz"));
    assert!(Locale::parse("fr").is_err());
}

#[test]
fn a_model_of_another_schema_is_refused() {
    let m = tiny_model();
    let mut bundle = m.bundle.clone();
    bundle.schema.version += 1;
    assert!(Model::new(m.manifest.clone(), bundle)
        .unwrap_err()
        .to_string()
        .contains("feature schema"));
}

/// Beyond the longest silence the version was fitted on, the forests see the customer as at
/// its end: the churn probability cannot fall with a longer absence, and the answer says
/// which features are outside what the version saw. The timing still reads the real as_of.
#[test]
fn scores_hold_beyond_the_longest_silence_and_say_so() {
    let mut model = tiny_model();
    model.manifest.feature_ranges = FEATURE_NAMES
        .iter()
        .map(|n| crate::model::FeatureRange {
            name: n.to_string(),
            min: 0.0,
            max: if *n == "recency_days" { 365.0 } else { 1e6 },
        })
        .collect();
    let t = |day: i64, amount: f64| Transaction::new(20_000 * DAY + day * DAY, amount);
    let summary = CustomerSummary::from_transactions(&[t(0, 40.0), t(30, 25.0)]).unwrap();
    let at = |days_after: i64| {
        let as_of = 20_000 * DAY + (30 + days_after) * DAY;
        let input = ModelInput::of(&model, &summary, as_of).unwrap();
        (
            input.clone(),
            score_input(&model, &input, as_of, Default::default()),
        )
    };
    let (near, near_s) = at(200);
    assert!(near.edge.is_none() && near_s.out_of_range.is_empty());
    let (one, one_s) = at(366);
    let (two, two_s) = at(730);
    assert!(one.edge.is_some());
    assert_eq!(one.edge, two.edge, "both are seen at the edge");
    assert_eq!((one_s.churn, one_s.clv), (two_s.churn, two_s.clv));
    assert_eq!(two_s.out_of_range, vec!["recency_days"]);
    assert!(two_s.timing.days_overdue > one_s.timing.days_overdue + 300.0);
    // A feature vector given as is is only flagged.
    let mut f = regular_customer();
    f[crate::features::f::RECENCY_DAYS] = 900.0;
    assert_eq!(
        score(&model, &f, 0, Default::default()).out_of_range,
        vec!["recency_days"]
    );
}
