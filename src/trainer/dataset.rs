//! Snapshots to training rows: features from purchases before a snapshot `T`, labels from
//! purchases in `[T, T + H)`.

use crate::features::{CustomerSummary, FeatureError, FEATURE_NAMES, N_FEATURES};
use crate::forest::Matrix;

use super::load::TransactionLog;
use super::Tick;

/// Index of a feature by name, for the few the trainer reads itself.
pub fn feature_index(name: &str) -> usize {
    FEATURE_NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| unreachable!("unknown feature {name}"))
}

/// Feature rows with their labels and what the baselines need.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub x: Matrix,
    /// True when the customer made no purchase in `[T, T + H)`.
    pub churned: Vec<bool>,
    /// Spend in `[T, T + H)`.
    pub spend_next: Vec<f64>,
    /// Spend in `[T - H, T)`: the CLV baseline's prediction.
    pub spend_prev: Vec<f64>,
    pub cust: Vec<u32>,
    pub snapshot: Vec<u16>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.churned.len()
    }

    pub fn is_empty(&self) -> bool {
        self.churned.is_empty()
    }

    pub fn churn_target(&self) -> Vec<f64> {
        self.churned
            .iter()
            .map(|&c| f64::from(u8::from(c)))
            .collect()
    }

    pub fn feature(&self, name: &str) -> Vec<f64> {
        let j = feature_index(name);
        (0..self.len()).map(|i| self.x.row(i)[j]).collect()
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Rows {
        Rows {
            x: self.x.select(idx),
            churned: idx.iter().map(|&i| self.churned[i]).collect(),
            spend_next: idx.iter().map(|&i| self.spend_next[i]).collect(),
            spend_prev: idx.iter().map(|&i| self.spend_prev[i]).collect(),
            cust: idx.iter().map(|&i| self.cust[i]).collect(),
            snapshot: idx.iter().map(|&i| self.snapshot[i]).collect(),
        }
    }
}

/// Builds rows at each snapshot (ascending Unix seconds) for every customer `include` accepts
/// who bought something in the `lookback` seconds before the snapshot.
pub fn build_rows(
    log: &TransactionLog,
    snapshots: &[i64],
    horizon: i64,
    lookback: i64,
    include: &dyn Fn(usize) -> bool,
    tick: &dyn Tick,
) -> Result<Rows, FeatureError> {
    debug_assert!(snapshots.windows(2).all(|w| w[0] < w[1]));
    let mut rows = Rows {
        x: Matrix::new(N_FEATURES),
        ..Default::default()
    };
    for c in 0..log.n_customers() {
        if c % 4096 == 4095 {
            tick.inc(4096);
        }
        if !include(c) {
            continue;
        }
        let txs = log.customer(c);
        let mut summary = CustomerSummary::new();
        let mut folded = 0;
        for (k, &t) in snapshots.iter().enumerate() {
            let history = log.history(c, t).len();
            for r in &txs[folded..history] {
                summary.update(&r.tx())?;
            }
            folded = history;
            let Some(last) = summary.last_ts() else {
                continue;
            };
            if last < t - lookback {
                continue;
            }
            let features = summary.features(t)?;
            // Labels: what happens in [t, t + horizon), the history of t + horizon that is
            // not history at t.
            let next = &log.history(c, t + horizon)[folded..];
            let spend_next: f64 = next.iter().map(|r| r.amount).sum();
            let spend_prev: f64 = txs[log.history(c, t - horizon).len()..folded]
                .iter()
                .map(|r| r.amount)
                .sum();
            rows.x.push_row(&features);
            rows.churned.push(next.is_empty());
            rows.spend_next.push(spend_next);
            rows.spend_prev.push(spend_prev);
            rows.cust.push(c as u32);
            rows.snapshot.push(k as u16);
        }
    }
    tick.inc((log.n_customers() % 4096) as u64);
    Ok(rows)
}

pub use crate::hashing::{in_share, stable_hash};
