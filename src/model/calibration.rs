//! Churn calibration: a monotone map from the forest's raw probability to one that matches
//! observed rates, learnt by the trainer on predictions for rows the forests did not see.
//!
//! The forest stays bit-identical to smartcore; the calibration is applied after it. Two
//! methods: isotonic regression (pool adjacent violators, then linear between the pooled
//! blocks' centres, so the map is strictly increasing between its end points and the ranking
//! barely changes) and Platt scaling (a logistic curve on the raw log-odds).

use serde::{Deserialize, Serialize};

/// A monotone map from raw to calibrated churn probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Calibration {
    /// Raw probabilities are used as they are.
    None,
    /// Knots `(x[i], y[i])`, both increasing; linear between them, flat outside.
    Isotonic { x: Vec<f64>, y: Vec<f64> },
    /// `1 / (1 + exp(-(a * logit(p) + b)))`.
    Platt { a: f64, b: f64 },
}

/// Raw probabilities are kept this far from 0 and 1 before taking log-odds.
const EPS: f64 = 1e-6;

fn logit(p: f64) -> f64 {
    let p = p.clamp(EPS, 1.0 - EPS);
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Calibration {
    pub fn method(&self) -> &'static str {
        match self {
            Calibration::None => "none",
            Calibration::Isotonic { .. } => "isotonic",
            Calibration::Platt { .. } => "platt",
        }
    }

    /// The calibrated probability of a raw one.
    pub fn apply(&self, p: f64) -> f64 {
        match self {
            Calibration::None => p,
            Calibration::Platt { a, b } => sigmoid(a * logit(p) + b),
            Calibration::Isotonic { x, y } => {
                let i = x.partition_point(|&k| k < p);
                if i == 0 {
                    y[0]
                } else if i == x.len() {
                    y[y.len() - 1]
                } else {
                    let (x0, x1, y0, y1) = (x[i - 1], x[i], y[i - 1], y[i]);
                    y0 + (y1 - y0) * (p - x0) / (x1 - x0)
                }
            }
        }
    }

    /// Pool adjacent violators on `(raw, label)` pairs; the knots are the blocks' mean raw
    /// probability and their observed rate.
    pub fn isotonic(raw: &[f64], labels: &[bool]) -> Self {
        let mut idx: Vec<usize> = (0..raw.len()).collect();
        idx.sort_by(|&a, &b| raw[a].total_cmp(&raw[b]));
        // Blocks of (sum of raw, sum of labels, count), kept non-decreasing in rate.
        let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
        let mut i = 0;
        while i < idx.len() {
            // Equal raw values form one block from the start: the map cannot split them.
            let mut j = i;
            let (mut sx, mut sy) = (0.0, 0.0);
            while j < idx.len() && raw[idx[j]] == raw[idx[i]] {
                sx += raw[idx[j]];
                sy += f64::from(u8::from(labels[idx[j]]));
                j += 1;
            }
            blocks.push((sx, sy, (j - i) as f64));
            while blocks.len() >= 2 {
                let (b, a) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
                if a.1 / a.2 < b.1 / b.2 {
                    break;
                }
                blocks.pop();
                let last = blocks.len() - 1;
                blocks[last] = (a.0 + b.0, a.1 + b.1, a.2 + b.2);
            }
            i = j;
        }
        if blocks.len() < 2 {
            return Calibration::None;
        }
        Calibration::Isotonic {
            x: blocks.iter().map(|b| b.0 / b.2).collect(),
            y: blocks.iter().map(|b| b.1 / b.2).collect(),
        }
    }

    /// Logistic regression of the labels on the raw log-odds (Newton's method with step
    /// halving, so the likelihood never gets worse, and Platt's target smoothing so that a
    /// separable sample stays finite). Starts at the identity; keeps it unless the fit is
    /// better and increasing.
    pub fn platt(raw: &[f64], labels: &[bool]) -> Self {
        let pos = labels.iter().filter(|&&l| l).count() as f64;
        let neg = labels.len() as f64 - pos;
        if pos == 0.0 || neg == 0.0 {
            return Calibration::None;
        }
        let (t1, t0) = ((pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0));
        let z: Vec<f64> = raw.iter().map(|&p| logit(p)).collect();
        let target: Vec<f64> = labels.iter().map(|&l| if l { t1 } else { t0 }).collect();
        let loss = |a: f64, b: f64| -> f64 {
            z.iter()
                .zip(&target)
                .map(|(&zi, &t)| {
                    let p = sigmoid(a * zi + b).clamp(1e-15, 1.0 - 1e-15);
                    -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
                })
                .sum()
        };
        let (mut a, mut b) = (1.0, 0.0);
        let mut current = loss(a, b);
        let identity = current;
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for (&zi, &t) in z.iter().zip(&target) {
                let p = sigmoid(a * zi + b);
                let d = p - t;
                let w = (p * (1.0 - p)).max(1e-12);
                ga += d * zi;
                gb += d;
                haa += w * zi * zi;
                hab += w * zi;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-12 {
                break;
            }
            let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
            let mut step = 1.0;
            let improved = loop {
                let (na, nb) = (a - step * da, b - step * db);
                let l = loss(na, nb);
                if l.is_finite() && l <= current {
                    break Some((na, nb, l));
                }
                step /= 2.0;
                if step < 1e-6 {
                    break None;
                }
            };
            let Some((na, nb, l)) = improved else { break };
            let converged = (current - l).abs() < 1e-10 * current.max(1.0);
            (a, b, current) = (na, nb, l);
            if converged {
                break;
            }
        }
        if a.is_finite() && b.is_finite() && a > 0.0 && current < identity {
            Calibration::Platt { a, b }
        } else {
            Calibration::None
        }
    }

    /// Checks what `apply` relies on, so a decoded artifact cannot misbehave.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Calibration::None => Ok(()),
            Calibration::Platt { a, b } => (a.is_finite() && b.is_finite() && *a > 0.0)
                .then_some(())
                .ok_or_else(|| "Platt coefficients must be finite, with a positive slope".into()),
            Calibration::Isotonic { x, y } => {
                let ok = !x.is_empty()
                    && x.len() == y.len()
                    && x.iter()
                        .chain(y)
                        .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
                    && x.windows(2).all(|w| w[0] < w[1])
                    && y.windows(2).all(|w| w[0] <= w[1]);
                ok.then_some(()).ok_or_else(|| {
                    "isotonic knots must be increasing probabilities of equal count".into()
                })
            }
        }
    }
}

/// Expected calibration error over ten equal-width probability bins: the row-weighted mean
/// of |mean predicted − observed rate|.
pub fn expected_calibration_error(p: &[f64], labels: &[bool]) -> f64 {
    let mut bins = [(0.0f64, 0.0f64, 0usize); 10];
    for (&pi, &l) in p.iter().zip(labels) {
        let b = ((pi * 10.0).floor().max(0.0) as usize).min(9);
        bins[b].0 += pi;
        bins[b].1 += f64::from(u8::from(l));
        bins[b].2 += 1;
    }
    let n = p.len().max(1) as f64;
    bins.iter()
        .filter(|b| b.2 > 0)
        .map(|b| (b.0 - b.1).abs() / n)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Raw scores that are too timid (true rate = raw²·… ): both methods bring the error down,
    /// and the isotonic map keeps the order of distinct raw values.
    #[test]
    fn calibration_fixes_a_timid_forest_and_keeps_the_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let raw: Vec<f64> = (0..20_000).map(|_| rng.random_range(0.2..0.8)).collect();
        let labels: Vec<bool> = raw
            .iter()
            .map(|&p| rng.random::<f64>() < ((p - 0.2) / 0.6).powi(2))
            .collect();
        let before = expected_calibration_error(&raw, &labels);
        for c in [
            Calibration::isotonic(&raw, &labels),
            Calibration::platt(&raw, &labels),
        ] {
            c.validate().unwrap();
            let cal: Vec<f64> = raw.iter().map(|&p| c.apply(p)).collect();
            let after = expected_calibration_error(&cal, &labels);
            assert!(after < before / 3.0, "{}: {before} -> {after}", c.method());
            assert!(cal.iter().all(|p| (0.0..=1.0).contains(p)));
        }
        let iso = Calibration::isotonic(&raw, &labels);
        let (a, b) = (0.41, 0.57);
        assert!(iso.apply(a) <= iso.apply(b));
    }

    #[test]
    fn degenerate_samples_fall_back_to_no_calibration() {
        assert_eq!(
            Calibration::isotonic(&[0.3, 0.3], &[true, false]),
            Calibration::None
        );
        assert_eq!(
            Calibration::platt(&[0.3, 0.6], &[true, true]),
            Calibration::None
        );
        assert_eq!(Calibration::None.apply(0.37), 0.37);
        assert!(Calibration::Isotonic {
            x: vec![0.5, 0.2],
            y: vec![0.1, 0.2]
        }
        .validate()
        .is_err());
    }
}
