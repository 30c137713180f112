//! Which snapshots train, validate and refit, so that no model is evaluated on a period or a
//! customer it saw, and so that every season of the year is both trained on and validated.
//!
//! With data ending at `E` and horizon `H`, the latest validation snapshot is `V = E − H` (or
//! `--as-of`). Validation snapshots are `V`, `V − 91 d`, `V − 182 d`, `V − 273 d` (one per
//! calendar quarter) as far as the data allows. Out of time, the evaluated forests train on
//! snapshots every `stride` days ending one horizon before the earliest validation snapshot,
//! so their labels end before any validation feature begins; the published forests are
//! refitted on snapshots every `stride` days ending at `V`. When the data cannot hold that,
//! customers are split by a hash of their id instead (a holdout), at the same snapshots.

use crate::features::DAY;
use crate::time::{fmt_day, fmt_ts};

use super::TrainError;

/// A calendar quarter, in days.
pub const QUARTER_DAYS: i64 = 91;

/// The fewest training snapshots (or all the data has, if fewer) the evaluated forests need
/// before earlier validation quarters are added: half a year of phases at a monthly stride.
const MIN_TRAIN_SNAPSHOTS: usize = 6;

/// How the snapshots are laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitOptions {
    pub horizon_days: u32,
    /// The latest validation snapshot; default: end of data minus the horizon.
    pub as_of: Option<i64>,
    /// Most snapshots stacked for training (and for the refit).
    pub max_snapshots: usize,
    /// Days between stacked snapshots.
    pub stride_days: u32,
    /// Most earlier validation quarters beside the latest snapshot.
    pub max_quarters: usize,
    /// History a training snapshot needs before it, in days.
    pub min_history_days: u32,
}

/// Snapshots, ascending, in Unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    /// Train on snapshots at least one horizon before every validation snapshot.
    OutOfTime {
        train: Vec<i64>,
        validation: Vec<i64>,
        refit: Vec<i64>,
    },
    /// The data is too short: customers are split by a hash of their id, and the training
    /// customers' snapshots are also the refit's.
    Holdout {
        train: Vec<i64>,
        validation: Vec<i64>,
    },
}

impl Split {
    pub fn method(&self) -> &'static str {
        match self {
            Split::OutOfTime { .. } => "out_of_time",
            Split::Holdout { .. } => "customer_hash_holdout",
        }
    }

    /// The latest validation snapshot.
    pub fn validation(&self) -> i64 {
        self.validation_snapshots().last().copied().unwrap_or(0)
    }

    pub fn validation_snapshots(&self) -> &[i64] {
        match self {
            Split::OutOfTime { validation, .. } | Split::Holdout { validation, .. } => validation,
        }
    }

    /// The snapshots the evaluated forests were fitted on.
    pub fn train_snapshots(&self) -> &[i64] {
        match self {
            Split::OutOfTime { train, .. } | Split::Holdout { train, .. } => train,
        }
    }

    /// The snapshots the published forests are refitted on: the latest labelled ones.
    pub fn refit_snapshots(&self) -> &[i64] {
        match self {
            Split::OutOfTime { refit, .. } => refit,
            Split::Holdout { train, .. } => train,
        }
    }
}

/// Chooses the split for data from `first_ts` to `last_ts`.
pub fn plan_split(first_ts: i64, last_ts: i64, o: &SplitOptions) -> Result<Split, TrainError> {
    let start = first_ts.div_euclid(DAY) * DAY;
    let end = (last_ts.div_euclid(DAY) + 1) * DAY;
    if o.horizon_days == 0 {
        return Err(TrainError::Split(
            "--horizon-days must be at least 1".into(),
        ));
    }
    let h = i64::from(o.horizon_days) * DAY;
    let v = o.as_of.unwrap_or(end - h);
    if v + h > end {
        return Err(TrainError::Split(format!(
            "--as-of {} leaves {} days of data after it, but --horizon-days is {}: labels need the whole horizon (the data ends {})",
            fmt_ts(v),
            (end - v).max(0) / DAY,
            o.horizon_days,
            fmt_day(last_ts)
        )));
    }
    if v <= start + DAY {
        return Err(TrainError::Split(format!(
            "the validation snapshot {} leaves no history before it (the data starts {}); a horizon of {} days needs more than {} days of data",
            fmt_ts(v),
            fmt_day(first_ts),
            o.horizon_days,
            o.horizon_days
        )));
    }
    let min_history = i64::from(o.min_history_days) * DAY;
    let stride = i64::from(o.stride_days.max(1)) * DAY;
    // Snapshots every stride days back from `from`, each with enough history, ascending.
    let back = |from: i64| -> Vec<i64> {
        let mut s: Vec<i64> = (0..o.max_snapshots.max(1) as i64)
            .map(|k| from - k * stride)
            .take_while(|t| t - start >= min_history)
            .collect();
        s.reverse();
        s
    };
    let quarters = |q: usize| -> Vec<i64> {
        (0..=q as i64)
            .rev()
            .map(|i| v - i * QUARTER_DAYS * DAY)
            .collect()
    };
    let n0 = back(v - h).len();
    if n0 == 0 {
        // Too short for out of time: every quarter with enough history validates.
        let q = (0..=o.max_quarters)
            .take_while(|&q| v - q as i64 * QUARTER_DAYS * DAY - start >= min_history)
            .last()
            .unwrap_or(0);
        let train = back(v);
        return Ok(Split::Holdout {
            train: if train.is_empty() { vec![v] } else { train },
            validation: quarters(q),
        });
    }
    let enough = n0.min(MIN_TRAIN_SNAPSHOTS);
    let q = (0..=o.max_quarters)
        .take_while(|&q| back(v - q as i64 * QUARTER_DAYS * DAY - h).len() >= enough)
        .last()
        .unwrap_or(0);
    Ok(Split::OutOfTime {
        train: back(v - q as i64 * QUARTER_DAYS * DAY - h),
        validation: quarters(q),
        refit: back(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_timestamp;

    fn opts() -> SplitOptions {
        SplitOptions {
            horizon_days: 180,
            as_of: None,
            max_snapshots: 12,
            stride_days: 30,
            max_quarters: 3,
            min_history_days: 90,
        }
    }

    fn day(s: &str) -> i64 {
        parse_timestamp(s).unwrap()
    }

    /// Three years: four validation quarters, a year of monthly training snapshots that end a
    /// horizon before the first of them, a year of refit snapshots ending at the last.
    #[test]
    fn three_years_validate_every_quarter_out_of_time() {
        let s = plan_split(day("2023-01-01"), day("2025-12-30"), &opts()).unwrap();
        let Split::OutOfTime {
            train,
            validation,
            refit,
        } = &s
        else {
            panic!("{s:?}");
        };
        assert_eq!(validation.len(), 4);
        assert_eq!(*validation.last().unwrap(), day("2025-12-31") - 180 * DAY);
        assert_eq!(train.len(), 12);
        assert!(*train.last().unwrap() + 180 * DAY <= validation[0]);
        assert!(train.windows(2).all(|w| w[1] - w[0] == 30 * DAY));
        assert_eq!(refit.len(), 12);
        assert_eq!(refit.last(), validation.last());
    }

    /// Nine months and a 273-day horizon (CDNOW): a holdout, validated in every quarter that
    /// has 90 days of history.
    #[test]
    fn short_data_holds_out_customers_across_quarters() {
        let o = SplitOptions {
            horizon_days: 273,
            as_of: Some(day("1997-10-01")),
            ..opts()
        };
        let s = plan_split(day("1997-01-01"), day("1998-06-30"), &o).unwrap();
        let Split::Holdout { train, validation } = &s else {
            panic!("{s:?}");
        };
        assert_eq!(validation.len(), 3);
        assert_eq!(validation[0], day("1997-04-02"));
        assert_eq!(*train.last().unwrap(), day("1997-10-01"));
        assert!(train[0] - day("1997-01-01") >= 90 * DAY);
    }

    /// Two years and a half-year horizon: one earlier quarter, no more, so that the evaluated
    /// forests keep six monthly training snapshots.
    #[test]
    fn two_years_keep_the_training_snapshots() {
        let s = plan_split(day("2023-01-01"), day("2024-12-30"), &opts()).unwrap();
        assert_eq!(s.validation_snapshots().len(), 2, "{s:?}");
        assert!(s.train_snapshots().len() >= 6, "{s:?}");
    }
}
