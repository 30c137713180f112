//! The report's curves from the validation predictions: ROC and precision-recall with the
//! 90-day rule's point, cumulative gains by decile, predicted against realised CLV, and the
//! score histograms. Aggregates only (`model::Evaluation`).

use crate::model::{ClvBin, Gain, Histogram, RulePoint};

/// Points kept per curve: enough for a smooth line, few enough for a small file.
const CURVE_POINTS: usize = 200;

/// Row indices by descending score (ties by position, so the order is stable).
fn by_score_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}

/// Every `k`-th point and the last, so a curve keeps its ends.
fn thin(points: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    let k = points.len().div_ceil(CURVE_POINTS).max(1);
    let last = points.len().saturating_sub(1);
    points
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % k == 0 || *i == last)
        .map(|(_, p)| p)
        .collect()
}

/// ROC (fpr, tpr) and precision-recall (recall, precision) points, one per distinct
/// threshold, from the strictest to the loosest.
pub fn roc_and_pr(scores: &[f64], labels: &[bool]) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
    let pos = labels.iter().filter(|&&l| l).count().max(1) as f64;
    let neg = (labels.len() as f64 - pos).max(1.0);
    let idx = by_score_desc(scores);
    let (mut roc, mut pr) = (vec![[0.0, 0.0]], Vec::new());
    let (mut tp, mut fp, mut i) = (0.0, 0.0, 0);
    while i < idx.len() {
        let t = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == t {
            if labels[idx[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        roc.push([fp / neg, tp / pos]);
        pr.push([tp / pos, tp / (tp + fp)]);
    }
    (thin(roc), thin(pr))
}

/// Where a yes/no rule sits: its false and true positive rates and its precision.
pub fn rule_point(flagged: &[bool], labels: &[bool]) -> RulePoint {
    let count = |f: bool, l: bool| {
        flagged
            .iter()
            .zip(labels)
            .filter(|&(&a, &b)| a == f && b == l)
            .count() as f64
    };
    let (tp, fp, fn_, tn) = (
        count(true, true),
        count(true, false),
        count(false, true),
        count(false, false),
    );
    RulePoint {
        fpr: fp / (fp + tn).max(1.0),
        tpr: tp / (tp + fn_).max(1.0),
        precision: tp / (tp + fp).max(1.0),
    }
}

/// Cumulative gains by decile of `scores`: the share of `value` (churners as 1, or spend)
/// in the top deciles. Negative values (returns) count as nothing.
pub fn gains(scores: &[f64], value: &[f64]) -> Vec<Gain> {
    let idx = by_score_desc(scores);
    let total: f64 = value.iter().map(|v| v.max(0.0)).sum();
    (1..=10)
        .map(|d| {
            let top = (idx.len() * d).div_ceil(10);
            let got: f64 = idx[..top].iter().map(|&i| value[i].max(0.0)).sum();
            let targeted = d as f64 / 10.0;
            let captured = if total > 0.0 { got / total } else { targeted };
            Gain {
                targeted,
                captured,
                lift: captured / targeted,
            }
        })
        .collect()
}

/// Mean predicted and realised CLV per twentieth of the rows by prediction.
pub fn clv_bins(pred: &[f64], actual: &[f64]) -> Vec<ClvBin> {
    let mut idx: Vec<usize> = (0..pred.len()).collect();
    idx.sort_by(|&a, &b| pred[a].total_cmp(&pred[b]).then(a.cmp(&b)));
    let n = idx.len();
    (0..20)
        .filter_map(|b| {
            let part = &idx[b * n / 20..(b + 1) * n / 20];
            let k = part.len() as f64;
            (!part.is_empty()).then(|| ClvBin {
                rows: part.len() as u64,
                mean_predicted: part.iter().map(|&i| pred[i]).sum::<f64>() / k,
                mean_realised: part.iter().map(|&i| actual[i]).sum::<f64>() / k,
            })
        })
        .collect()
}

/// Counts of `values` in `edges.len() - 1` bins; values past the ends go to the end bins.
fn counts(edges: &[f64], values: impl Iterator<Item = f64>) -> Vec<u64> {
    let bins = edges.len() - 1;
    let mut c = vec![0u64; bins];
    for v in values {
        let b = edges[1..bins].partition_point(|&e| e <= v);
        c[b] += 1;
    }
    c
}

/// Churn probabilities in bins of 0.05, churners and the rest apart.
pub fn churn_histogram(p: &[f64], labels: &[bool]) -> Histogram {
    let edges: Vec<f64> = (0..=20).map(|i| f64::from(i) / 20.0).collect();
    let pick = |l: bool| {
        p.iter()
            .zip(labels)
            .filter(move |(_, &y)| y == l)
            .map(|(&v, _)| v)
    };
    Histogram {
        groups: vec!["churned".into(), "stayed".into()],
        counts: vec![counts(&edges, pick(true)), counts(&edges, pick(false))],
        edges,
    }
}

/// Predicted CLV in twenty bins from 0 to its 99th percentile.
pub fn clv_histogram(pred: &[f64]) -> Histogram {
    let mut sorted = pred.to_vec();
    sorted.sort_by(f64::total_cmp);
    let top = sorted
        .get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(1.0)
        .max(1e-9);
    let edges: Vec<f64> = (0..=20).map(|i| top * f64::from(i) / 20.0).collect();
    Histogram {
        groups: vec!["customers".into()],
        counts: vec![counts(&edges, pred.iter().copied())],
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_score_hugs_the_corner_and_gains_fill_first() {
        let labels: Vec<bool> = (0..1000).map(|i| i < 200).collect();
        let perfect: Vec<f64> = labels.iter().map(|&l| if l { 0.9 } else { 0.1 }).collect();
        let (roc, pr) = roc_and_pr(&perfect, &labels);
        assert!(roc.contains(&[0.0, 1.0]), "{roc:?}");
        assert_eq!(roc.last(), Some(&[1.0, 1.0]));
        assert_eq!(pr[0], [1.0, 1.0]);
        let y: Vec<f64> = labels.iter().map(|&l| f64::from(u8::from(l))).collect();
        let g = gains(&perfect, &y);
        assert!((g[1].captured - 1.0).abs() < 1e-12 && (g[1].lift - 5.0).abs() < 1e-9);
        assert!((g[9].captured - 1.0).abs() < 1e-12);
        let rule = rule_point(&labels, &labels);
        assert_eq!((rule.fpr, rule.tpr, rule.precision), (0.0, 1.0, 1.0));
    }

    #[test]
    fn histograms_count_every_row_once() {
        let p: Vec<f64> = (0..=100).map(|i| f64::from(i) / 100.0).collect();
        let labels: Vec<bool> = (0..=100).map(|i| i % 2 == 0).collect();
        let h = churn_histogram(&p, &labels);
        assert_eq!(h.counts.iter().flatten().sum::<u64>(), 101);
        let c = clv_histogram(&[0.0, 5.0, 1e9]);
        assert_eq!(c.counts[0].iter().sum::<u64>(), 3);
        let bins = clv_bins(&p, &p);
        assert_eq!(bins.iter().map(|b| b.rows).sum::<u64>(), 101);
        assert!(bins
            .windows(2)
            .all(|w| w[0].mean_predicted <= w[1].mean_predicted));
    }
}
