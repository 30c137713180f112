//! Customer behaviour features: the one code path from a purchase history to a feature vector.
//!
//! The trainer and the server both fold transactions into a [`CustomerSummary`] and call
//! [`CustomerSummary::features`]; there is no second implementation, so training/serving skew
//! cannot creep in. Pure: no IO, no async, no clock.
//!
//! Time is Unix seconds (UTC). A *visit* is a calendar day (UTC) with at least one purchase;
//! gaps are measured between visits, so three CDs bought on one day are one trip to the shop.
//! A negative amount is a return: it lowers net spend, and is neither a purchase nor a visit.
//!
//! Beside the features, [`rhythm`] judges a customer against their own purchase rhythm
//! (typical gap, how unusual the current silence is, the contact window, the trend against
//! their own earlier rate). It needs the population's rhythm, which each version learns.
//! Window features count calendar days ending on the *reference day*, the day that holds the
//! last instant before `as_of` (so an `as_of` at midnight looks at the previous full days).

pub mod rhythm;
mod schema;
mod summary;

pub use rhythm::{Rhythm, RhythmModel, RhythmPrior};
pub use schema::{
    check_value, f, FeatureSchema, FEATURE_DOMAIN, FEATURE_NAMES, N_FEATURES, SCHEMA_VERSION,
};
pub use summary::{channel_id, CustomerSummary, DayAgg, GapRing, Transaction, RECENT_GAPS};

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// Largest amount or points value we accept; keeps every running sum finite.
pub const MAX_VALUE: f64 = 1e9;
/// Earliest accepted timestamp (1970-01-01) and latest (2200-01-01), in Unix seconds.
pub const MIN_TS: i64 = 0;
pub const MAX_TS: i64 = 7_258_118_400;

/// One fixed-size feature vector, in [`FEATURE_NAMES`] order.
pub type FeatureVector = [f64; N_FEATURES];

/// Why a transaction or a feature request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    #[error("timestamp {0} is out of range (1970-01-01 to 2200-01-01)")]
    TimestampOutOfRange(i64),
    #[error(
        "amount {0} is not a finite number between -1e9 and 1e9 (a negative amount is a return)"
    )]
    BadAmount(f64),
    #[error("{field} {value} is not a finite number between 0 and 1e9")]
    BadPoints { field: &'static str, value: f64 },
    #[error("transactions must be folded in time order: {ts} is before the previous {last}")]
    OutOfOrder { ts: i64, last: i64 },
    #[error("the customer has no purchase before as_of")]
    NoPurchases,
    #[error("as_of {as_of} is not after the last transaction {last}")]
    AsOfNotAfterLastPurchase { as_of: i64, last: i64 },
}

/// The calendar day (days since 1970-01-01, UTC) of a Unix timestamp.
pub fn day_of(ts: i64) -> i32 {
    ts.div_euclid(DAY) as i32
}

/// The one rule for what a score as of `as_of` sees: purchases strictly before it. Snapshot
/// rows, offline and online scoring, the server's check of a history and the outcome windows
/// of an experiment read-out all ask this function, so a purchase at the as-of instant (a
/// date-only purchase on the day after `--as-of 2025-05-31`) is outside the history everywhere.
pub fn is_history(ts: i64, as_of: i64) -> bool {
    ts < as_of
}

/// The part of a time-ordered slice that is history at `as_of` (see [`is_history`]).
pub fn history_at<T>(sorted: &[T], as_of: i64, ts: impl Fn(&T) -> i64) -> &[T] {
    &sorted[..sorted.partition_point(|t| is_history(ts(t), as_of))]
}

/// The reference day of `as_of`: the day holding the last instant strictly before it.
pub fn reference_day(as_of: i64) -> i32 {
    day_of(as_of - 1)
}

/// Window lengths, in days, shared by the summary and the reference implementation in tests.
pub mod windows {
    /// Recent window for counts, trends and baskets.
    pub const RECENT: i32 = 90;
    /// Year window for spend and points.
    pub const YEAR: i32 = 365;
    /// Half-width of the window around the same date one year earlier.
    pub const SEASON_HALF: i32 = 30;
    /// Oldest day a feature can look at, relative to the reference day (exclusive).
    pub const KEEP: i32 = YEAR + SEASON_HALF;
}

#[cfg(test)]
mod tests;
