//! Validation metrics for churn probabilities and CLV predictions. Every metric is finite for
//! any input (a degenerate case, such as one class only, gives the uninformative value), so a
//! manifest never carries NaN.

use crate::model::{CalibrationBin, ChurnMetrics, ClvMetrics};

/// Ranks 1..=n with ties given their average rank.
fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Area under the ROC curve (Mann-Whitney, ties count half). 0.5 without both classes.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    let ranks = average_ranks(scores);
    let sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l)
        .map(|(r, _)| r)
        .sum();
    (sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Average precision: precision at each distinct threshold, weighted by the recall it adds.
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    if pos == 0.0 {
        return 0.0;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen, mut ap, mut i) = (0.0, 0.0, 0.0, 0);
    while i < idx.len() {
        let mut j = i;
        let mut group_tp = 0.0;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            group_tp += f64::from(u8::from(labels[idx[j]]));
            j += 1;
        }
        tp += group_tp;
        seen += (j - i) as f64;
        ap += (group_tp / pos) * (tp / seen);
        i = j;
    }
    ap
}

/// Indices of the top `ceil(n / 10)` rows by score (ties by position, so it is stable).
fn top_decile(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(scores.len().div_ceil(10));
    idx
}

pub fn churn_metrics(p: &[f64], labels: &[bool]) -> ChurnMetrics {
    let n = p.len().max(1) as f64;
    let y = |l: bool| f64::from(u8::from(l));
    let rate = labels.iter().map(|&l| y(l)).sum::<f64>() / n;
    let brier = p
        .iter()
        .zip(labels)
        .map(|(p, &l)| (p - y(l)).powi(2))
        .sum::<f64>()
        / n;
    let log_loss = -p
        .iter()
        .zip(labels)
        .map(|(p, &l)| {
            let p = p.clamp(1e-6, 1.0 - 1e-6);
            if l {
                p.ln()
            } else {
                (1.0 - p).ln()
            }
        })
        .sum::<f64>()
        / n;
    let top = top_decile(p);
    let top_rate = top.iter().map(|&i| y(labels[i])).sum::<f64>() / top.len().max(1) as f64;
    let mut bins: Vec<(u64, f64, f64)> = vec![(0, 0.0, 0.0); 10];
    for (&pi, &l) in p.iter().zip(labels) {
        let b = ((pi * 10.0).floor().max(0.0) as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += pi;
        bins[b].2 += y(l);
    }
    ChurnMetrics {
        rows: p.len() as u64,
        churn_rate: rate,
        roc_auc: roc_auc(p, labels),
        pr_auc: pr_auc(p, labels),
        brier,
        log_loss,
        top_decile_lift: if rate > 0.0 { top_rate / rate } else { 1.0 },
        ece: crate::model::expected_calibration_error(p, labels),
        calibration: bins
            .iter()
            .enumerate()
            .map(|(b, &(count, sp, sy))| {
                let c = count.max(1) as f64;
                CalibrationBin {
                    lower: b as f64 / 10.0,
                    upper: (b + 1) as f64 / 10.0,
                    count,
                    mean_predicted: sp / c,
                    observed_rate: sy / c,
                }
            })
            .collect(),
    }
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Spearman's rank correlation (Pearson on average ranks).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&average_ranks(a), &average_ranks(b))
}

/// Gini of `actual` ordered by `pred` (descending, ties by position).
fn gini(actual: &[f64], pred: &[f64]) -> f64 {
    let n = actual.len();
    let total: f64 = actual.iter().sum();
    if n == 0 || total == 0.0 {
        return 0.0;
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| pred[b].total_cmp(&pred[a]).then(a.cmp(&b)));
    let mut cum = 0.0;
    let mut sum = 0.0;
    for &i in &idx {
        cum += actual[i];
        sum += cum / total;
    }
    (sum - (n as f64 + 1.0) / 2.0) / n as f64
}

/// Gini of the predicted order over the Gini of the perfect order: 1 is perfect, 0 random.
pub fn normalized_gini(actual: &[f64], pred: &[f64]) -> f64 {
    let best = gini(actual, actual);
    if best == 0.0 {
        0.0
    } else {
        gini(actual, pred) / best
    }
}

pub fn clv_metrics(pred: &[f64], actual: &[f64]) -> ClvMetrics {
    let n = pred.len().max(1) as f64;
    let total: f64 = actual.iter().sum();
    let top = top_decile(pred);
    ClvMetrics {
        rows: pred.len() as u64,
        mean_actual: total / n,
        mean_predicted: pred.iter().sum::<f64>() / n,
        mae: pred
            .iter()
            .zip(actual)
            .map(|(p, a)| (p - a).abs())
            .sum::<f64>()
            / n,
        rmse: (pred
            .iter()
            .zip(actual)
            .map(|(p, a)| (p - a).powi(2))
            .sum::<f64>()
            / n)
            .sqrt(),
        spearman: spearman(pred, actual),
        normalized_gini: normalized_gini(actual, pred),
        top_decile_capture: if total > 0.0 {
            top.iter().map(|&i| actual[i]).sum::<f64>() / total
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_known_values() {
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = [false, false, true, true];
        assert!((roc_auc(&s, &l) - 0.75).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), 0.5);
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), 0.5);
        assert!((roc_auc(&[1.0, 2.0, 3.0], &[false, true, true]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn average_precision_known_values() {
        // Ranked: 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg): AP = (1 + 2/3) / 2.
        let ap = pr_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]);
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn spearman_and_gini() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((spearman(&a, &[10.0, 20.0, 30.0, 40.0, 50.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[5.0, 4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!((normalized_gini(&a, &a) - 1.0).abs() < 1e-12);
        assert!(normalized_gini(&a, &[5.0, 4.0, 3.0, 2.0, 1.0]) < 0.0);
    }

    #[test]
    fn churn_metrics_are_finite_for_one_class() {
        let m = churn_metrics(&[0.2, 0.9, 0.0], &[true, true, true]);
        for v in [m.roc_auc, m.pr_auc, m.brier, m.log_loss, m.top_decile_lift] {
            assert!(v.is_finite());
        }
        assert_eq!(m.calibration.iter().map(|b| b.count).sum::<u64>(), 3);
    }

    #[test]
    fn top_decile_capture_of_a_perfect_ranking() {
        let actual: Vec<f64> = (0..100).map(|i| if i < 10 { 100.0 } else { 0.0 }).collect();
        let m = clv_metrics(&actual, &actual);
        assert!((m.top_decile_capture - 1.0).abs() < 1e-12);
        assert_eq!(m.mae, 0.0);
    }
}
