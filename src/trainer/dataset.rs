//! Snapshots to training rows: features from purchases before a snapshot `T`, labels from
//! what happens in `[T, T + H)`: churn when no purchase falls in it (a return is not a
//! purchase), CLV the net spend in it.

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
    /// Net spend in `[T, T + H)`.
    pub spend_next: Vec<f64>,
    /// Net spend in `[T - H, T)`: the CLV baseline's prediction.
    pub spend_prev: Vec<f64>,
    pub cust: Vec<u32>,
    /// Index into `snapshots` of each row's snapshot.
    pub snapshot: Vec<u16>,
    /// The snapshot instants the rows were built at, ascending.
    pub snapshots: Vec<i64>,
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

    /// The instant row `i` describes.
    pub fn as_of(&self, i: usize) -> i64 {
        self.snapshots[usize::from(self.snapshot[i])]
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
            snapshots: self.snapshots.clone(),
        }
    }

    /// The rows of one snapshot (by its index in `snapshots`).
    pub fn at_snapshot(&self, k: usize) -> Rows {
        let idx: Vec<usize> = (0..self.len())
            .filter(|&i| usize::from(self.snapshot[i]) == k)
            .collect();
        self.select(&idx)
    }
}

/// Whether customer `c` counts at snapshot `t`: a purchase in the `lookback` before it.
fn active(log: &TransactionLog, c: usize, t: i64, lookback: i64) -> bool {
    log.history(c, t)
        .iter()
        .rev()
        .find(|r| r.amount >= 0.0)
        .is_some_and(|r| r.ts >= t - lookback)
}

/// How many rows [`build_rows`] would build (before any sampling): what a sampling share is
/// worked out from, so that stacking many snapshots stays within a row budget.
pub fn count_rows(
    log: &TransactionLog,
    snapshots: &[i64],
    lookback: i64,
    include: &dyn Fn(usize) -> bool,
) -> usize {
    (0..log.n_customers())
        .filter(|&c| include(c))
        .map(|c| {
            snapshots
                .iter()
                .filter(|&&t| active(log, c, t, lookback))
                .count()
        })
        .sum()
}

/// Builds rows at each snapshot (ascending Unix seconds) for every customer `include`
/// accepts who bought something in the `lookback` seconds before the snapshot, keeping the
/// (customer, snapshot index) pairs `keep` accepts.
pub fn build_rows(
    log: &TransactionLog,
    snapshots: &[i64],
    horizon: i64,
    lookback: i64,
    include: &dyn Fn(usize) -> bool,
    keep: &dyn Fn(usize, usize) -> bool,
    tick: &dyn Tick,
) -> Result<Rows, FeatureError> {
    debug_assert!(snapshots.windows(2).all(|w| w[0] < w[1]));
    let mut rows = Rows {
        x: Matrix::new(N_FEATURES),
        snapshots: snapshots.to_vec(),
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
            if !active(log, c, t, lookback) || !keep(c, k) {
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
            rows.churned.push(next.iter().all(|r| r.amount < 0.0));
            rows.spend_next.push(spend_next);
            rows.spend_prev.push(spend_prev);
            rows.cust.push(c as u32);
            rows.snapshot.push(k as u16);
        }
    }
    tick.inc((log.n_customers() % 4096) as u64);
    Ok(rows)
}

/// Keeps every row.
pub fn keep_all(_: usize, _: usize) -> bool {
    true
}

/// Every customer.
pub fn everyone(_: usize) -> bool {
    true
}

pub use crate::hashing::{in_share, stable_hash};

/// Keeps about `max` rows, chosen by a hash of customer and snapshot (so reruns agree).
pub fn cap_rows(rows: Rows, max: usize, log: &TransactionLog, salt: &str) -> Rows {
    if rows.len() <= max {
        return rows;
    }
    let share = max as f64 / rows.len() as f64;
    let keep: Vec<usize> = (0..rows.len())
        .filter(|&i| {
            let key = format!("{}#{}", log.ids[rows.cust[i] as usize], rows.snapshot[i]);
            in_share(stable_hash(salt, &key), share)
        })
        .collect();
    rows.select(&keep)
}

/// Rows whose customer falls in (or out of) a hashed share.
pub fn split_by_customer(
    rows: &Rows,
    log: &TransactionLog,
    salt: &str,
    share: f64,
) -> (Rows, Rows) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..rows.len() {
        if in_share(stable_hash(salt, &log.ids[rows.cust[i] as usize]), share) {
            a.push(i);
        } else {
            b.push(i);
        }
    }
    (rows.select(&a), rows.select(&b))
}
