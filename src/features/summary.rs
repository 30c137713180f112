//! [`CustomerSummary`]: the small incremental state a customer's purchases fold into.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{
    day_of, reference_day, windows, FeatureError, FeatureVector, MAX_TS, MAX_VALUE, MIN_TS,
    N_FEATURES,
};

/// One purchase, or a return when `amount` is negative. `channel` is 0 when unknown,
/// otherwise [`channel_id`] of the channel name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub ts: i64,
    pub amount: f64,
    pub points_earned: f64,
    pub points_redeemed: f64,
    pub channel: u32,
}

impl Transaction {
    pub fn new(ts: i64, amount: f64) -> Self {
        Transaction {
            ts,
            amount,
            points_earned: 0.0,
            points_redeemed: 0.0,
            channel: 0,
        }
    }

    /// A return (negative amount) lowers net spend but is not a purchase and not a visit.
    pub fn is_purchase(&self) -> bool {
        self.amount >= 0.0
    }

    /// Checks the ranges every feature relies on to stay finite.
    pub fn validate(&self) -> Result<(), FeatureError> {
        if !(MIN_TS..MAX_TS).contains(&self.ts) {
            return Err(FeatureError::TimestampOutOfRange(self.ts));
        }
        if !(self.amount.is_finite() && self.amount.abs() <= MAX_VALUE) {
            return Err(FeatureError::BadAmount(self.amount));
        }
        if !in_range(self.points_earned) {
            return Err(FeatureError::BadPoints {
                field: "points_earned",
                value: self.points_earned,
            });
        }
        if !in_range(self.points_redeemed) {
            return Err(FeatureError::BadPoints {
                field: "points_redeemed",
                value: self.points_redeemed,
            });
        }
        Ok(())
    }
}

fn in_range(v: f64) -> bool {
    v.is_finite() && (0.0..=MAX_VALUE).contains(&v)
}

/// A stable, non-zero id for a channel name (FNV-1a), so that trainer and server agree
/// without a shared dictionary. Empty names are "unknown" (0).
pub fn channel_id(name: &str) -> u32 {
    let name = name.trim();
    if name.is_empty() {
        return 0;
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// Purchases and returns of one calendar day. A day is a visit when `purchases > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DayAgg {
    pub day: i32,
    pub purchases: u32,
    /// Net: purchases minus returns.
    pub spend: f64,
    pub points_earned: f64,
    pub points_redeemed: f64,
}

/// At most this many distinct channels are remembered; more is "many" for every purpose here.
const MAX_CHANNELS: usize = 16;

/// Gaps (days between visits) the rhythm rests on: the customer's latest, since rhythms
/// change and eight are enough to tell a six-weekly buyer from a twice-yearly one.
pub const RECENT_GAPS: usize = 8;

/// The latest [`RECENT_GAPS`] gaps, oldest overwritten first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GapRing {
    gaps: [u32; RECENT_GAPS],
    len: u8,
    next: u8,
}

impl GapRing {
    fn push(&mut self, gap: u32) {
        self.gaps[usize::from(self.next)] = gap;
        self.next = ((usize::from(self.next) + 1) % RECENT_GAPS) as u8;
        self.len = (usize::from(self.len) + 1).min(RECENT_GAPS) as u8;
    }

    /// The gaps held, in slot order (a fixed order, so every sum over them is reproducible).
    pub fn gaps(&self) -> &[u32] {
        &self.gaps[..usize::from(self.len)]
    }
}

/// Everything the features need about one customer's past, updated in amortised O(1) per
/// transaction. Only the last [`windows::KEEP`] days are kept day by day; older history lives
/// on in the totals and the gap statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerSummary {
    /// First and last purchase (returns do not count).
    first_ts: i64,
    last_ts: i64,
    /// Last event folded, purchase or return: folding must go in time order.
    last_event_ts: i64,
    events: u32,
    purchases: u32,
    returns: u32,
    /// Net spend: purchases minus returns.
    spend_total: f64,
    points_earned_total: f64,
    points_redeemed_total: f64,
    visits: u32,
    last_visit_day: i32,
    // Welford's running mean and sum of squared deviations of the gaps between visits (days).
    gap_n: u32,
    gap_mean: f64,
    gap_m2: f64,
    recent_gaps: GapRing,
    recent: VecDeque<DayAgg>,
    channels: Vec<u32>,
}

impl CustomerSummary {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a summary from transactions in any order (they are sorted by time first).
    pub fn from_transactions(txs: &[Transaction]) -> Result<Self, FeatureError> {
        let mut sorted = txs.to_vec();
        sorted.sort_by_key(|t| t.ts);
        let mut s = Self::new();
        for t in &sorted {
            s.update(t)?;
        }
        Ok(s)
    }

    pub fn purchases(&self) -> u32 {
        self.purchases
    }

    pub fn is_empty(&self) -> bool {
        self.purchases == 0
    }

    /// The last purchase (returns do not count).
    pub fn last_ts(&self) -> Option<i64> {
        (self.purchases > 0).then_some(self.last_ts)
    }

    /// The first purchase.
    pub fn first_ts(&self) -> Option<i64> {
        (self.purchases > 0).then_some(self.first_ts)
    }

    /// Distinct purchase days.
    pub fn visits(&self) -> u32 {
        self.visits
    }

    pub fn returns(&self) -> u32 {
        self.returns
    }

    /// The latest gaps between visits, in days.
    pub fn recent_gaps(&self) -> &[u32] {
        self.recent_gaps.gaps()
    }

    /// Folds one transaction in. Transactions (purchases and returns) must come in time order.
    pub fn update(&mut self, t: &Transaction) -> Result<(), FeatureError> {
        t.validate()?;
        if self.events > 0 && t.ts < self.last_event_ts {
            return Err(FeatureError::OutOfOrder {
                ts: t.ts,
                last: self.last_event_ts,
            });
        }
        let day = day_of(t.ts);
        let purchase = t.is_purchase();
        if purchase {
            self.fold_visit(day, t.ts);
        } else {
            self.returns += 1;
        }
        self.events += 1;
        self.last_event_ts = t.ts;
        self.spend_total += t.amount;
        self.points_earned_total += t.points_earned;
        self.points_redeemed_total += t.points_redeemed;

        let bought = u32::from(purchase);
        match self.recent.back_mut() {
            Some(last) if last.day == day => {
                last.purchases += bought;
                last.spend += t.amount;
                last.points_earned += t.points_earned;
                last.points_redeemed += t.points_redeemed;
            }
            _ => self.recent.push_back(DayAgg {
                day,
                purchases: bought,
                spend: t.amount,
                points_earned: t.points_earned,
                points_redeemed: t.points_redeemed,
            }),
        }
        // Any later reference day is >= `day`, so days this old can never be in a window again.
        while self
            .recent
            .front()
            .is_some_and(|d| d.day <= day - windows::KEEP)
        {
            self.recent.pop_front();
        }

        if purchase
            && t.channel != 0
            && self.channels.len() < MAX_CHANNELS
            && !self.channels.contains(&t.channel)
        {
            self.channels.push(t.channel);
        }
        Ok(())
    }

    /// A purchase on `day`: a new visit (and gap) unless the customer already bought that day.
    fn fold_visit(&mut self, day: i32, ts: i64) {
        if self.purchases == 0 {
            self.first_ts = ts;
            self.visits = 1;
            self.last_visit_day = day;
        } else if day != self.last_visit_day {
            let gap_days = (day - self.last_visit_day) as u32;
            let gap = f64::from(gap_days);
            self.gap_n += 1;
            let delta = gap - self.gap_mean;
            self.gap_mean += delta / f64::from(self.gap_n);
            self.gap_m2 += delta * (gap - self.gap_mean);
            self.recent_gaps.push(gap_days);
            self.visits += 1;
            self.last_visit_day = day;
        }
        self.last_ts = ts;
        self.purchases += 1;
    }

    /// The feature vector at `as_of` (Unix seconds), from the purchases folded so far, which
    /// must all be strictly before `as_of`.
    pub fn features(&self, as_of: i64) -> Result<FeatureVector, FeatureError> {
        self.features_ready(as_of)?;
        let w = self.windows(as_of);
        Ok(assemble(&Totals {
            recency_days: (as_of - self.last_ts) as f64 / super::DAY as f64,
            tenure_days: (as_of - self.first_ts) as f64 / super::DAY as f64,
            purchases: f64::from(self.purchases),
            visits: f64::from(self.visits),
            spend_total: self.spend_total,
            points_earned_total: self.points_earned_total,
            points_redeemed_total: self.points_redeemed_total,
            gap_n: self.gap_n,
            gap_mean: self.gap_mean,
            gap_var: if self.gap_n >= 2 {
                self.gap_m2 / f64::from(self.gap_n - 1)
            } else {
                0.0
            },
            channels: self.channels.len(),
            recent_log_gaps: log_mean_sd(self.recent_gaps.gaps()),
            recent_gaps: self.recent_gaps.gaps().len(),
            w,
        }))
    }
}

impl CustomerSummary {
    /// Whether features (and a rhythm) can be computed at `as_of`: a purchase, and every
    /// folded transaction before `as_of`.
    fn features_ready(&self, as_of: i64) -> Result<(), FeatureError> {
        if self.purchases == 0 {
            return Err(FeatureError::NoPurchases);
        }
        if !super::is_history(self.last_event_ts, as_of) {
            return Err(FeatureError::AsOfNotAfterLastPurchase {
                as_of,
                last: self.last_event_ts,
            });
        }
        Ok(())
    }

    /// The window sums at `as_of`'s reference day.
    pub(super) fn windows(&self, as_of: i64) -> WindowSums {
        WindowSums::collect(self.recent.iter(), reference_day(as_of))
    }
}

/// Sums over the day windows relative to a reference day `d`:
/// recent = (d-90, d], prior90 = (d-180, d-90], prior275 = (d-365, d-90], year = (d-365, d],
/// season = (d-395, d-335]. Spend is net of returns; visits count days with a purchase.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct WindowSums {
    pub p90: f64,
    pub s90: f64,
    pub v90: f64,
    pub p_prior90: f64,
    pub s_prior90: f64,
    pub v_prior90: f64,
    pub p_prior275: f64,
    pub s_prior275: f64,
    pub v_prior275: f64,
    pub p365: f64,
    pub s365: f64,
    pub pe365: f64,
    pub pr365: f64,
    pub p_season: f64,
}

impl WindowSums {
    fn collect<'a>(days: impl Iterator<Item = &'a DayAgg>, d: i32) -> Self {
        use windows::{RECENT, SEASON_HALF, YEAR};
        let mut w = WindowSums::default();
        for a in days {
            let age = d - a.day; // 0 = the reference day itself
            let p = f64::from(a.purchases);
            let visit = f64::from(u8::from(a.purchases > 0));
            if age < 0 {
                continue;
            }
            if age < RECENT {
                w.p90 += p;
                w.s90 += a.spend;
                w.v90 += visit;
            } else if age < 2 * RECENT {
                w.p_prior90 += p;
                w.s_prior90 += a.spend;
                w.v_prior90 += visit;
            }
            if (RECENT..YEAR).contains(&age) {
                w.p_prior275 += p;
                w.s_prior275 += a.spend;
                w.v_prior275 += visit;
            }
            if age < YEAR {
                w.p365 += p;
                w.s365 += a.spend;
                w.pe365 += a.points_earned;
                w.pr365 += a.points_redeemed;
            }
            if (YEAR - SEASON_HALF..YEAR + SEASON_HALF).contains(&age) {
                w.p_season += p;
            }
        }
        w
    }
}

/// The raw quantities the feature definitions are written in.
struct Totals {
    pub recency_days: f64,
    pub tenure_days: f64,
    pub purchases: f64,
    pub visits: f64,
    pub spend_total: f64,
    pub points_earned_total: f64,
    pub points_redeemed_total: f64,
    pub gap_n: u32,
    pub gap_mean: f64,
    /// Sample variance of the gaps (n - 1 denominator); 0 below two gaps.
    pub gap_var: f64,
    pub channels: usize,
    pub recent_gaps: usize,
    /// Mean and sample standard deviation of ln(gap) over the recent gaps.
    pub recent_log_gaps: (f64, f64),
    pub w: WindowSums,
}

/// How many of their own (recent, log-scale) gap deviations the silence is past their
/// typical gap: `(ln recency - mean) / max(sd, 0.25)`, clamped to ±10; 0 without a gap. The
/// forests' own view of "overdue for them", without the population's prior.
fn recency_log_z(recency_days: f64, gaps: usize, (mean, sd): (f64, f64)) -> f64 {
    if gaps == 0 {
        return 0.0;
    }
    ((recency_days.max(1.0).ln() - mean) / sd.max(0.25)).clamp(-10.0, 10.0)
}

/// Mean and sample standard deviation of the gaps' logarithms, summed in slot order; 0 where
/// undefined (no gap, or one gap for the deviation).
fn log_mean_sd(gaps: &[u32]) -> (f64, f64) {
    if gaps.is_empty() {
        return (0.0, 0.0);
    }
    let n = gaps.len() as f64;
    let mean = gaps.iter().map(|&g| f64::from(g.max(1)).ln()).sum::<f64>() / n;
    if gaps.len() < 2 {
        return (mean, 0.0);
    }
    let ss: f64 = gaps
        .iter()
        .map(|&g| {
            let d = f64::from(g.max(1)).ln() - mean;
            d * d
        })
        .sum();
    (mean, (ss / (n - 1.0)).sqrt())
}

/// `ln((a + 1) / (b + 1))` with both sides floored at 0 (net spend can be negative after
/// returns): a trend that is 0 for 0 against 0 and finite for any pair.
fn log_ratio(a: f64, b: f64) -> f64 {
    ((a.max(0.0) + 1.0) / (b.max(0.0) + 1.0)).ln()
}

fn assemble(t: &Totals) -> FeatureVector {
    let w = &t.w;
    // Without two visits there is no rhythm yet: take the whole tenure as the one "gap" seen
    // so far and assume exponential-like irregularity (std = mean), so the overdue features
    // read "neutral" rather than "alarming".
    let mean_gap = if t.gap_n > 0 {
        t.gap_mean
    } else {
        t.tenure_days.max(1.0)
    };
    let std_gap = if t.gap_n >= 2 {
        t.gap_var.sqrt()
    } else {
        mean_gap
    };
    let basket_trend = if w.p90 > 0.0 && w.p_prior275 > 0.0 {
        log_ratio(w.s90 / w.p90, w.s_prior275 / w.p_prior275)
    } else {
        0.0
    };
    let f: FeatureVector = [
        t.recency_days,
        t.tenure_days,
        t.purchases,
        t.visits,
        w.p90,
        w.p365,
        w.s90,
        w.s90 + w.s_prior90,
        w.s365,
        t.spend_total,
        t.spend_total / t.purchases,
        basket_trend,
        mean_gap,
        std_gap / mean_gap.max(1.0),
        (t.recency_days / mean_gap.max(1.0)).min(1000.0),
        ((t.recency_days - mean_gap) / std_gap.max(1.0)).clamp(-10.0, 10.0),
        log_ratio(w.s90, w.s_prior90),
        log_ratio(w.v90, w.v_prior90),
        w.p_season,
        w.pe365,
        w.pr365,
        (t.points_redeemed_total / t.points_earned_total.max(1.0)).min(100.0),
        t.channels.max(1) as f64,
        t.recent_gaps as f64,
        t.recent_log_gaps.0,
        t.recent_log_gaps.1,
        w.v90,
        w.v_prior275,
        recency_log_z(t.recency_days, t.recent_gaps, t.recent_log_gaps),
    ];
    debug_assert_eq!(f.len(), N_FEATURES);
    f
}
