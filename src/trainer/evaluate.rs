//! The honest read of an evaluated pair of forests: both models and both baselines on the
//! same validation rows, calibrated and raw, per validation quarter, and the segments the
//! rules give those rows with what the customers then did.

use crate::features::{Rhythm, RhythmModel, RhythmPrior};
use crate::forest::FlatForest;
use crate::model::{
    expected_calibration_error, Calibration, Evaluation, Metrics, QuarterMetrics, Segment,
    SegmentRow, SegmentRules,
};
use crate::scoring::segment_inputs;
use crate::time::fmt_ts;

use super::curves;
use super::dataset::Rows;
use super::eval::{churn_metrics, clv_metrics, roc_auc, spearman};

/// What the evaluation found.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub metrics: Metrics,
    pub segment_table: Vec<SegmentRow>,
    /// The report's curves; the fit adds importances and data quality.
    pub curves: Evaluation,
}

/// Another version (the one in production) against the candidate on the same validation
/// rows: only the rows whose labels start on or after the day that version's data ended, so
/// it is never scored on purchases it was fitted on (a published version is refitted on the
/// latest labelled data, which overlaps the next candidate's earlier validation windows).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Compared {
    /// The other version's data end: rows from this snapshot on are compared.
    pub from: String,
    pub rows: u64,
    /// Validation snapshots compared.
    pub snapshots: Vec<String>,
    pub candidate: Scores,
    pub other: Scores,
}

/// One side of a comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scores {
    pub churn: crate::model::ChurnMetrics,
    pub clv: crate::model::ClvMetrics,
}

/// What a comparison found: figures, or no validation row after the other version's data.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Comparison {
    Compared(Box<Compared>),
    NoFairRows {
        /// The other version's data end.
        from: String,
        /// The candidate's latest validation snapshot.
        latest_validation: String,
    },
}

/// The candidate (its evaluated forests and calibration) and `other` on the validation rows
/// at or after `from` (the other version's data end).
pub fn compare(
    [churn_f, clv_f]: [&FlatForest; 2],
    calibration: &Calibration,
    other: &crate::model::ModelBundle,
    val: &Rows,
    from: i64,
) -> Comparison {
    let idx: Vec<usize> = (0..val.len()).filter(|&i| val.as_of(i) >= from).collect();
    if idx.is_empty() {
        return Comparison::NoFairRows {
            from: fmt_ts(from),
            latest_validation: val
                .snapshots
                .last()
                .map_or_else(String::new, |&t| fmt_ts(t)),
        };
    }
    let rows = val.select(&idx);
    let p = Predictions::of([churn_f, clv_f], calibration, &rows);
    let candidate = Scores::of(&p.churn, &p.clv, &rows);
    let scored: Vec<crate::model::Scores> = (0..rows.len())
        .map(|i| other.scores(rows.x.row(i)))
        .collect();
    let churn: Vec<f64> = scored.iter().map(|s| s.churn).collect();
    let clv: Vec<f64> = scored.iter().map(|s| s.clv).collect();
    let other = Scores::of(&churn, &clv, &rows);
    let mut snapshots: Vec<String> = idx.iter().map(|&i| fmt_ts(val.as_of(i))).collect();
    snapshots.dedup();
    Comparison::Compared(Box::new(Compared {
        from: fmt_ts(from),
        rows: idx.len() as u64,
        snapshots,
        candidate,
        other,
    }))
}

/// The 90-day rule, made a probability: the churn rate of its two groups on the training rows.
fn ninety_day_rule(train: &Rows) -> impl Fn(f64) -> f64 {
    let r = train.feature("recency_days");
    let rate = |flagged: bool| {
        let (mut n, mut c) = (0.0, 0.0);
        for (i, &rd) in r.iter().enumerate() {
            if (rd > 90.0) == flagged {
                n += 1.0;
                c += f64::from(u8::from(train.churned[i]));
            }
        }
        (n > 0.0).then(|| c / n)
    };
    let overall = train.churned.iter().filter(|&&c| c).count() as f64 / train.len().max(1) as f64;
    let (p1, p0) = (
        rate(true).unwrap_or(overall),
        rate(false).unwrap_or(overall),
    );
    move |rd: f64| if rd > 90.0 { p1 } else { p0 }
}

/// Predictions of one model on the validation rows.
struct Predictions {
    raw: Vec<f64>,
    churn: Vec<f64>,
    clv: Vec<f64>,
}

impl Predictions {
    /// Both forests on `rows`, as `ModelBundle::scores` computes them: the churn forest
    /// calibrated, the CLV never below 0.
    fn of([churn_f, clv_f]: [&FlatForest; 2], calibration: &Calibration, rows: &Rows) -> Self {
        let raw = churn_f.predict(&rows.x);
        Predictions {
            churn: raw.iter().map(|&r| calibration.apply(r)).collect(),
            clv: clv_f
                .predict(&rows.x)
                .into_iter()
                .map(|v| v.max(0.0))
                .collect(),
            raw,
        }
    }
}

impl Scores {
    fn of(churn: &[f64], clv: &[f64], rows: &Rows) -> Self {
        Scores {
            churn: churn_metrics(churn, &rows.churned),
            clv: clv_metrics(clv, &rows.spend_next),
        }
    }
}

/// Both models and both baselines on the same validation rows; the segment table on them.
pub fn evaluate(
    [churn_f, clv_f]: [&FlatForest; 2],
    calibration: &Calibration,
    prior: &RhythmPrior,
    rules: &SegmentRules,
    train: &Rows,
    val: &Rows,
) -> Evaluated {
    let p = Predictions::of([churn_f, clv_f], calibration, val);
    let rule = ninety_day_rule(train);
    let recency = val.feature("recency_days");
    let base: Vec<f64> = recency.iter().copied().map(&rule).collect();
    let metrics = Metrics {
        churn: churn_metrics(&p.churn, &val.churned),
        churn_uncalibrated: Some(churn_metrics(&p.raw, &val.churned)),
        churn_baseline: churn_metrics(&base, &val.churned),
        clv: clv_metrics(&p.clv, &val.spend_next),
        clv_baseline: clv_metrics(&val.spend_prev, &val.spend_next),
        by_quarter: by_quarter(&p, val),
    };
    let flagged: Vec<bool> = recency.iter().map(|&r| r > 90.0).collect();
    Evaluated {
        metrics,
        segment_table: segment_table(&p, prior, rules, val),
        curves: report_curves(&p, val, &flagged),
    }
}

/// What the report plots of these predictions.
fn report_curves(p: &Predictions, val: &Rows, flagged: &[bool]) -> Evaluation {
    let (roc, pr) = curves::roc_and_pr(&p.churn, &val.churned);
    Evaluation {
        roc,
        pr,
        rule: curves::rule_point(flagged, &val.churned),
        churn_gains: curves::gains(&p.churn, &val.churn_target()),
        clv_gains: curves::gains(&p.clv, &val.spend_next),
        clv_bins: curves::clv_bins(&p.clv, &val.spend_next),
        churn_histogram: curves::churn_histogram(&p.churn, &val.churned),
        clv_histogram: curves::clv_histogram(&p.clv),
        ..Evaluation::default()
    }
}

/// The figures of each validation snapshot on its own.
fn by_quarter(p: &Predictions, val: &Rows) -> Vec<QuarterMetrics> {
    (0..val.snapshots.len())
        .map(|k| {
            let idx: Vec<usize> = (0..val.len())
                .filter(|&i| usize::from(val.snapshot[i]) == k)
                .collect();
            let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
            let (churn, clv) = (pick(&p.churn), pick(&p.clv));
            let labels: Vec<bool> = idx.iter().map(|&i| val.churned[i]).collect();
            let spend: Vec<f64> = idx.iter().map(|&i| val.spend_next[i]).collect();
            let n = idx.len().max(1) as f64;
            QuarterMetrics {
                as_of: fmt_ts(val.snapshots[k]),
                rows: idx.len() as u64,
                churn_rate: labels.iter().filter(|&&l| l).count() as f64 / n,
                roc_auc: roc_auc(&churn, &labels),
                brier: churn
                    .iter()
                    .zip(&labels)
                    .map(|(p, &l)| (p - f64::from(u8::from(l))).powi(2))
                    .sum::<f64>()
                    / n,
                ece: expected_calibration_error(&churn, &labels),
                clv_spearman: spearman(&clv, &spend),
            }
        })
        .collect()
}

/// Each segment's size, the churn it was given and what its customers then did.
fn segment_table(
    p: &Predictions,
    prior: &RhythmPrior,
    rules: &SegmentRules,
    val: &Rows,
) -> Vec<SegmentRow> {
    let model = RhythmModel::new(prior.clone());
    // (rows, predicted churn, churned, spend) per segment, in Segment::ALL order.
    let mut acc = [(0u64, 0.0f64, 0u64, 0.0f64); Segment::ALL.len()];
    for i in 0..val.len() {
        let x: [f64; crate::features::N_FEATURES] = val
            .x
            .row(i)
            .try_into()
            .unwrap_or([0.0; crate::features::N_FEATURES]);
        let rhythm = Rhythm::from_features(&x, val.as_of(i), &model);
        let seg = rules.segment(&segment_inputs(&x, &rhythm, p.churn[i]));
        let a = &mut acc[Segment::ALL.iter().position(|s| *s == seg).unwrap_or(0)];
        a.0 += 1;
        a.1 += p.churn[i];
        a.2 += u64::from(val.churned[i]);
        a.3 += val.spend_next[i];
    }
    let total = val.len().max(1) as f64;
    Segment::ALL
        .iter()
        .zip(acc)
        .map(|(s, (n, churn, churned, spend))| {
            let d = n.max(1) as f64;
            SegmentRow {
                segment: s.as_str().into(),
                rows: n,
                share: n as f64 / total,
                mean_churn: churn / d,
                realised_churn: churned as f64 / d,
                mean_spend: spend / d,
            }
        })
        .collect()
}
