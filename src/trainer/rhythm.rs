//! The population's rhythm a version learns: what a customer with few gaps is shrunk toward
//! (the customers' typical log gap and its spread) and the season of visits over the year.

use crate::features::rhythm::season_day;
use crate::features::{f, RhythmPrior, RECENT_GAPS};

use super::dataset::Rows;
use super::load::TransactionLog;

/// How many gaps the population's rhythm counts as in a customer's estimate: a customer's
/// own rhythm outweighs it from their third gap.
pub const PRIOR_GAPS: f64 = 2.0;

/// The customers' rhythm from feature rows: the mean over customers of their mean recent
/// log gap, and the pooled spread of log gaps within a customer. `season` from
/// [`fit_season`].
pub fn prior_from_rows(rows: &Rows, season: [f64; 4]) -> RhythmPrior {
    let fallback = RhythmPrior::default();
    let (mut sum_mean, mut n_customers) = (0.0, 0.0);
    let (mut ss, mut dof) = (0.0, 0.0);
    for i in 0..rows.len() {
        let x = rows.x.row(i);
        let n = x[f::RECENT_GAPS].clamp(0.0, RECENT_GAPS as f64);
        if n < 1.0 {
            continue;
        }
        sum_mean += x[f::RECENT_GAP_LOG_MEAN];
        n_customers += 1.0;
        ss += (n - 1.0) * x[f::RECENT_GAP_LOG_SD] * x[f::RECENT_GAP_LOG_SD];
        dof += n - 1.0;
    }
    RhythmPrior {
        log_gap_mean: if n_customers > 0.0 {
            sum_mean / n_customers
        } else {
            fallback.log_gap_mean
        },
        log_gap_sd: if dof > 0.0 && ss > 0.0 {
            (ss / dof).sqrt()
        } else {
            fallback.log_gap_sd
        },
        prior_gaps: PRIOR_GAPS,
        season,
    }
}

/// The yearly season of visits before `before`: least squares of ln(1 + visits a day) on a
/// quadratic trend (the population grows and shrinks) and the first two yearly harmonics.
/// Zeros, no season, with less than two years of days: one year cannot tell a season from a
/// trend.
pub fn fit_season(log: &TransactionLog, before: i64) -> [f64; 4] {
    let mut visits: std::collections::BTreeMap<i32, f64> = Default::default();
    for c in 0..log.n_customers() {
        let mut last_day = None;
        for r in log.history(c, before).iter().filter(|r| r.amount >= 0.0) {
            let d = crate::features::day_of(r.ts);
            if last_day != Some(d) {
                *visits.entry(d).or_default() += 1.0;
                last_day = Some(d);
            }
        }
    }
    let (Some((&first, _)), Some((&last, _))) = (visits.first_key_value(), visits.last_key_value())
    else {
        return [0.0; 4];
    };
    if last - first < 730 {
        return [0.0; 4];
    }
    let (mid, half) = (f64::from(first + last) / 2.0, f64::from(last - first) / 2.0);
    let mut xtx = [[0.0f64; 7]; 7];
    let mut xty = [0.0f64; 7];
    for d in first..=last {
        let y = (1.0 + visits.get(&d).copied().unwrap_or(0.0)).ln();
        let t = (f64::from(d) - mid) / half;
        let a = 2.0 * std::f64::consts::PI * season_day(d) as f64 / 365.0;
        let row = [
            1.0,
            t,
            t * t,
            a.cos(),
            a.sin(),
            (2.0 * a).cos(),
            (2.0 * a).sin(),
        ];
        for i in 0..7 {
            xty[i] += row[i] * y;
            for j in 0..7 {
                xtx[i][j] += row[i] * row[j];
            }
        }
    }
    match solve(xtx, xty) {
        Some(b) if b.iter().all(|v| v.is_finite()) => [b[3], b[4], b[5], b[6]],
        _ => [0.0; 4],
    }
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` when singular.
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..N {
            let k = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= k * p;
            }
            b[row] -= k * b[col];
        }
    }
    let mut x = [0.0; N];
    for i in (0..N).rev() {
        let s: f64 = (i + 1..N).map(|j| a[i][j] * x[j]).sum();
        x[i] = (b[i] - s) / a[i][i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_elimination_solves_a_small_system() {
        let x = solve([[2.0, 1.0], [1.0, 3.0]], [5.0, 10.0]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 3.0).abs() < 1e-12);
        assert!(solve([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0]).is_none());
    }
}
