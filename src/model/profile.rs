//! The training profile a version carries for drift: each feature's and each score's
//! distribution on the validation rows, as shares of at most ten quantile bins, and the
//! population stability index (PSI) that compares served traffic with it. The trainer builds
//! the profile and the server compares with it; the binning rule and the PSI live only here.

use serde::{Deserialize, Serialize};

/// Quantile bins a distribution is cut into (fewer where values tie).
pub const BINS: usize = 10;

/// Shares below this count as this in the PSI, so an empty bin gives a large finite term
/// rather than infinity.
const FLOOR: f64 = 1e-4;

/// One distribution: `edges` cut the line into `edges.len() + 1` bins (a value equal to an
/// edge goes to the lower bin), `shares` is each bin's share of the rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binned {
    pub name: String,
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

impl Binned {
    /// Cuts `values` at their deciles (distinct ones only). NaN counts in the lowest bin.
    pub fn from_values(name: &str, values: &[f64]) -> Self {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = Vec::with_capacity(BINS - 1);
        if !sorted.is_empty() {
            for q in 1..BINS {
                let e = sorted[(q * sorted.len() / BINS).min(sorted.len() - 1)];
                // The largest value is no edge: nothing would be above it.
                if edges.last().is_none_or(|&l| e > l) && e < sorted[sorted.len() - 1] {
                    edges.push(e);
                }
            }
        }
        let mut b = Binned {
            name: name.to_string(),
            edges,
            shares: Vec::new(),
        };
        let mut counts = vec![0u64; b.bins()];
        for &v in values {
            counts[b.bin(v)] += 1;
        }
        let n = values.len().max(1) as f64;
        b.shares = counts.iter().map(|&c| c as f64 / n).collect();
        b
    }

    pub fn bins(&self) -> usize {
        self.edges.len() + 1
    }

    /// The bin a value falls in.
    pub fn bin(&self, v: f64) -> usize {
        self.edges.partition_point(|&e| e < v)
    }

    /// The population stability index of `counts` (rows per bin) against the profile:
    /// sum over bins of (actual - expected) * ln(actual / expected). 0 without rows.
    pub fn psi(&self, counts: &[u64]) -> f64 {
        let n: u64 = counts.iter().sum();
        if n == 0 || counts.len() != self.shares.len() {
            return 0.0;
        }
        self.shares
            .iter()
            .zip(counts)
            .map(|(&e, &c)| {
                let (a, e) = ((c as f64 / n as f64).max(FLOOR), e.max(FLOOR));
                (a - e) * (a / e).ln()
            })
            .sum()
    }
}

/// What the served population is compared with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Profile {
    /// Validation rows the shares were counted on.
    pub rows: u64,
    /// One per feature, in schema order.
    pub features: Vec<Binned>,
    /// The calibrated churn probability and the CLV the version gives.
    pub churn: Option<Binned>,
    pub clv: Option<Binned>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciles_hold_a_tenth_each_and_ties_share_a_bin() {
        let v: Vec<f64> = (0..1000).map(f64::from).collect();
        let b = Binned::from_values("x", &v);
        assert_eq!(b.bins(), 10);
        assert!(
            b.shares.iter().all(|&s| (s - 0.1).abs() < 0.002),
            "{:?}",
            b.shares
        );
        // 70 % zeros: one bin holds them all.
        let z: Vec<f64> = (0..1000)
            .map(|i| if i < 700 { 0.0 } else { f64::from(i) })
            .collect();
        let b = Binned::from_values("z", &z);
        assert_eq!(b.bin(0.0), 0);
        assert!((b.shares[0] - 0.7).abs() < 1e-9, "{:?}", b.shares);
        // One value only: one bin.
        assert_eq!(Binned::from_values("c", &[3.0; 50]).bins(), 1);
    }

    #[test]
    fn psi_is_near_zero_for_the_same_population_and_large_for_a_shifted_one() {
        let v: Vec<f64> = (0..10_000).map(|i| f64::from(i % 997)).collect();
        let b = Binned::from_values("x", &v);
        let count = |vals: &mut dyn Iterator<Item = f64>| {
            let mut c = vec![0u64; b.bins()];
            vals.for_each(|x| c[b.bin(x)] += 1);
            c
        };
        let same = b.psi(&count(&mut (0..5_000).map(|i| f64::from((i * 7) % 997))));
        assert!(same < 0.01, "same population: {same}");
        let shifted = b.psi(&count(
            &mut (0..5_000).map(|i| f64::from((i * 7) % 997) + 400.0),
        ));
        assert!(shifted > 0.25, "shifted: {shifted}");
        assert_eq!(b.psi(&vec![0; b.bins()]), 0.0);
    }
}
