//! A customer judged against their own purchase rhythm.
//!
//! Gaps between visits are right-skewed, so the rhythm lives on the log scale: a customer's
//! gaps are taken as log-normal with centre `mu` (the mean of their latest log gaps) and
//! spread `sigma`, both shrunk toward the population's for customers with few gaps (the
//! population counts as [`RhythmPrior::prior_gaps`] gaps). From that:
//! - `typical_gap_days = exp(mu)` (the median gap) and the expected next purchase,
//!   the last purchase plus the typical gap;
//! - `overdue_percentile = P(gap <= recency)`, how unusual the current silence is *for them*:
//!   someone who buys every 42 days (spread 0.3) and has been silent 63 is at about their
//!   90th percentile; someone who buys twice a year is at their 40th after 90 days;
//! - the day the silence reaches any quantile of their own gaps (the contact window);
//! - visits and net spend in the last 90 days against what their own earlier rate gives for
//!   the same days, adjusted for the time of year with the population's season, so a
//!   Christmas peak is not mistaken for growth.
//!
//! The population's rhythm ([`RhythmPrior`]) is learnt by the trainer and stored in the
//! version; everything here is a pure function of a summary, an `as_of` and that prior, so
//! the trainer and the server compute the same values bit for bit.

use serde::{Deserialize, Serialize};

use super::{day_of, f, reference_day, windows, FeatureVector, DAY, MAX_TS, RECENT_GAPS};

/// The population's rhythm, learnt once per version and stored in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RhythmPrior {
    /// Mean of the customers' mean log gap (ln days).
    pub log_gap_mean: f64,
    /// Pooled standard deviation of log gaps within a customer.
    pub log_gap_sd: f64,
    /// How many gaps the population's rhythm weighs in a customer's estimate.
    pub prior_gaps: f64,
    /// The season: ln(relative visit rate) on a day is `season[0] cos t + season[1] sin t +
    /// season[2] cos 2t + season[3] sin 2t`, `t` the day of the year as an angle. Zeros: no
    /// season (less than a year of data).
    pub season: [f64; 4],
}

impl Default for RhythmPrior {
    /// A monthly shopper with a moderate spread and no season: what a model trained before
    /// rhythms were learnt, or on too little data, falls back to.
    fn default() -> Self {
        RhythmPrior {
            log_gap_mean: 30f64.ln(),
            log_gap_sd: 0.8,
            prior_gaps: 2.0,
            season: [0.0; 4],
        }
    }
}

/// Days in the season's year (a smooth yearly curve does not need leap days).
const YEAR: usize = 365;

/// A [`RhythmPrior`] with its season tabulated for O(1) window sums.
#[derive(Debug, Clone, PartialEq)]
pub struct RhythmModel {
    prior: RhythmPrior,
    /// `cum[k]`: the relative visit rate summed over days of the year `0..k` (mean 1 a day).
    cum: Vec<f64>,
}

impl RhythmModel {
    pub fn new(prior: RhythmPrior) -> Self {
        let raw: Vec<f64> = (0..YEAR)
            .map(|k| season_log_rate(&prior.season, k).exp())
            .collect();
        let mean = raw.iter().sum::<f64>() / YEAR as f64;
        let mut cum = Vec::with_capacity(YEAR + 1);
        let mut acc = 0.0;
        cum.push(acc);
        for r in &raw {
            acc += r / mean;
            cum.push(acc);
        }
        RhythmModel { prior, cum }
    }

    pub fn prior(&self) -> &RhythmPrior {
        &self.prior
    }

    /// The season's weight of the days `(a, b]` (absolute day numbers, `b - a <= 365`): how
    /// many days' worth of visits an average customer makes in them.
    pub fn season_mass(&self, a: i32, b: i32) -> f64 {
        let len = (b - a).clamp(0, YEAR as i32) as usize;
        let start = (a + 1).rem_euclid(YEAR as i32) as usize;
        if start + len <= YEAR {
            self.cum[start + len] - self.cum[start]
        } else {
            (self.cum[YEAR] - self.cum[start]) + self.cum[start + len - YEAR]
        }
    }
}

/// ln(relative visit rate) on day-of-year `k` under the season's harmonics.
pub fn season_log_rate(season: &[f64; 4], k: usize) -> f64 {
    let t = 2.0 * std::f64::consts::PI * k as f64 / YEAR as f64;
    season[0] * t.cos()
        + season[1] * t.sin()
        + season[2] * (2.0 * t).cos()
        + season[3] * (2.0 * t).sin()
}

/// The day of the season's year of an absolute day.
pub fn season_day(day: i32) -> usize {
    day.rem_euclid(YEAR as i32) as usize
}

/// Floor of a customer's log-gap spread: a perfectly regular customer is still not a clock.
const MIN_SD: f64 = 0.05;

/// One customer's rhythm at an `as_of`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rhythm {
    pub last_purchase: i64,
    pub recency_days: f64,
    /// How many of their own gaps the estimate rests on (at most `RECENT_GAPS`).
    pub own_gaps: usize,
    /// Centre and spread of their gaps on the log scale, shrunk toward the population's.
    pub log_gap_mean: f64,
    pub log_gap_sd: f64,
    /// The median gap, `exp(log_gap_mean)`, in days.
    pub typical_gap_days: f64,
    /// Days of silence beyond the typical gap (0 when not overdue).
    pub days_overdue: f64,
    /// P(gap <= recency) under their own gap distribution, in [0, 1].
    pub overdue_percentile: f64,
    pub visits_90d: f64,
    /// Net spend in the last 90 days.
    pub spend_90d: f64,
    /// What their own rate over the 275 days before gives for the last 90 days at this time
    /// of year; `None` without 90 days of their own past before the window.
    pub expected_visits_90d: Option<f64>,
    pub expected_spend_90d: Option<f64>,
    /// Net spend per purchase, ever: the unit the spend trend is smoothed by.
    pub avg_basket: f64,
}

/// Φ, the standard normal distribution function (Abramowitz & Stegun 26.2.17, absolute
/// error below 7.5e-8).
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return 0.5;
    }
    let x = z.abs();
    let t = 1.0 / (1.0 + 0.231_641_9 * x);
    let poly = t
        * (0.319_381_530
            + t * (-0.356_563_782
                + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
    let tail = (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt() * poly;
    if z >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// Φ⁻¹ (Acklam's rational approximation, relative error below 1.2e-9); `p` is clamped to
/// (1e-12, 1 - 1e-12).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let low = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < low {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - low {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

impl Rhythm {
    /// The customer's rhythm at `as_of`, from their feature vector at `as_of` (so it is the
    /// same whether the features came from a history, a stored summary or the caller).
    pub fn from_features(x: &FeatureVector, as_of: i64, model: &RhythmModel) -> Rhythm {
        let prior = model.prior();
        let own_gaps = x[f::RECENT_GAPS].clamp(0.0, RECENT_GAPS as f64);
        let (mu, sd) = shrunk_log_gaps(
            own_gaps,
            x[f::RECENT_GAP_LOG_MEAN],
            x[f::RECENT_GAP_LOG_SD],
            prior,
        );
        let recency_days = x[f::RECENCY_DAYS].max(0.0);
        let typical = mu.exp();
        let z = (recency_days.max(1e-6).ln() - mu) / sd;
        let d = reference_day(as_of);
        let first_day = day_of(as_of - days_to_secs(x[f::TENURE_DAYS]));
        // Their own past before the recent window: from the first purchase day, at most a year.
        let (lo, hi) = ((d - windows::YEAR).max(first_day - 1), d - windows::RECENT);
        let expected = (hi - lo >= windows::RECENT).then(|| {
            let per_mass = model.season_mass(d - windows::RECENT, d) / model.season_mass(lo, hi);
            let spend_prior = x[f::SPEND_365D] - x[f::SPEND_90D];
            (x[f::VISITS_PRIOR_275D] * per_mass, spend_prior * per_mass)
        });
        Rhythm {
            last_purchase: as_of - days_to_secs(recency_days),
            recency_days,
            own_gaps: own_gaps as usize,
            log_gap_mean: mu,
            log_gap_sd: sd,
            typical_gap_days: typical,
            days_overdue: (recency_days - typical).max(0.0),
            overdue_percentile: normal_cdf(z),
            visits_90d: x[f::VISITS_90D],
            spend_90d: x[f::SPEND_90D],
            expected_visits_90d: expected.map(|e| e.0),
            expected_spend_90d: expected.map(|e| e.1),
            avg_basket: x[f::AVG_BASKET],
        }
    }
}

/// Days (as the features give them) to whole seconds, bounded to the accepted time range.
fn days_to_secs(days: f64) -> i64 {
    (days.clamp(0.0, (MAX_TS / DAY) as f64) * DAY as f64).round() as i64
}

/// Centre and spread of the log gaps, each a weighted mean of the customer's own (`n` gaps
/// with mean `mean` and sample deviation `sd`) and the population's, which counts as
/// `prior_gaps` gaps.
fn shrunk_log_gaps(n: f64, mean: f64, sd: f64, prior: &RhythmPrior) -> (f64, f64) {
    let k = prior.prior_gaps.max(1e-9);
    let mu = (n * mean + k * prior.log_gap_mean) / (n + k);
    let ss = (n - 1.0).max(0.0) * sd * sd;
    let var = (ss + k * prior.log_gap_sd * prior.log_gap_sd) / ((n - 1.0).max(0.0) + k);
    (mu, var.sqrt().max(MIN_SD))
}

impl Rhythm {
    /// The last purchase plus the typical gap.
    pub fn expected_next_purchase(&self) -> i64 {
        self.after_last(self.typical_gap_days)
    }

    /// The instant the silence reaches quantile `p` of their own gaps.
    pub fn silence_quantile_at(&self, p: f64) -> i64 {
        let days = (self.log_gap_mean + normal_quantile(p) * self.log_gap_sd).exp();
        self.after_last(days)
    }

    fn after_last(&self, days: f64) -> i64 {
        // Bounded so that a wild estimate cannot overflow or leave the accepted range.
        let secs = (days.clamp(0.0, 1e6) * DAY as f64) as i64;
        (self.last_purchase + secs).min(MAX_TS - 1)
    }

    /// `ln((visits + 1) / (expected + 1))`: visits in the last 90 days against their own
    /// earlier rate at this time of year (0: as usual).
    pub fn visit_trend(&self) -> Option<f64> {
        self.expected_visits_90d
            .map(|e| ((self.visits_90d + 1.0) / (e + 1.0)).ln())
    }

    /// `ln((spend + basket) / (expected + basket))`, net spend likewise, smoothed by one
    /// basket so that a single purchase more or less is no trend.
    pub fn spend_trend(&self) -> Option<f64> {
        let b = self.avg_basket.max(1.0);
        self.expected_spend_90d
            .map(|e| ((self.spend_90d.max(0.0) + b) / (e.max(0.0) + b)).ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{CustomerSummary, FeatureError, Transaction};

    /// A customer's history, judged through their features as every path does.
    struct Customer(CustomerSummary);

    impl Customer {
        fn rhythm(&self, as_of: i64, m: &RhythmModel) -> Result<Rhythm, FeatureError> {
            Ok(Rhythm::from_features(&self.0.features(as_of)?, as_of, m))
        }
    }

    /// Purchases on these days (counted from day 10,000), 01:00 UTC.
    fn summary(days: &[i64]) -> Customer {
        let txs: Vec<Transaction> = days
            .iter()
            .map(|d| Transaction::new(10_000 * DAY + d * DAY + 3600, 30.0))
            .collect();
        Customer(CustomerSummary::from_transactions(&txs).unwrap())
    }

    #[test]
    fn the_normal_distribution_and_its_inverse_agree() {
        for (z, p) in [(0.0, 0.5), (1.281_551_565_5, 0.9), (-1.644_853_626_9, 0.05)] {
            assert!((normal_cdf(z) - p).abs() < 1e-7, "{z}");
            assert!((normal_quantile(p) - z).abs() < 1e-8, "{p}");
        }
        for p in [1e-6, 0.01, 0.3, 0.77, 0.999] {
            assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-7, "{p}");
        }
    }

    /// Every six weeks, a little irregular, silent 63 days: around the 90th percentile; a
    /// twice-yearly buyer silent 90 days: below the middle of their own gaps (four gaps, so
    /// the monthly population still pulls their typical gap down to about 100 days).
    #[test]
    fn silence_is_judged_against_the_customers_own_gaps() {
        let m = RhythmModel::new(RhythmPrior::default());
        let six_weekly = summary(&[0, 38, 84, 124, 168, 210, 250, 294, 336]);
        let last = 10_000 * DAY + 336 * DAY + 3600;
        let r = six_weekly.rhythm(last + 63 * DAY, &m).unwrap();
        assert!((r.typical_gap_days - 42.0).abs() < 3.0, "{r:?}");
        assert!(
            (0.85..0.99).contains(&r.overdue_percentile),
            "{}",
            r.overdue_percentile
        );
        assert!((r.days_overdue - 21.0).abs() < 3.0, "{r:?}");
        let twice_a_year = summary(&[0, 170, 360, 540, 725]);
        let last = 10_000 * DAY + 725 * DAY + 3600;
        let r = twice_a_year.rhythm(last + 90 * DAY, &m).unwrap();
        assert!(r.overdue_percentile < 0.5, "{r:?}");
        assert_eq!(r.days_overdue, 0.0);
        // The contact window opens when the silence passes 90 % of their own gaps.
        let at = r.silence_quantile_at(0.9);
        let p = twice_a_year.rhythm(at + 1, &m).unwrap().overdue_percentile;
        assert!((p - 0.9).abs() < 1e-3, "{p}");
    }

    #[test]
    fn few_gaps_lean_on_the_population() {
        let prior = RhythmPrior {
            log_gap_mean: 20f64.ln(),
            log_gap_sd: 0.6,
            prior_gaps: 2.0,
            season: [0.0; 4],
        };
        let m = RhythmModel::new(prior);
        let one_visit = summary(&[0]);
        let r = one_visit.rhythm(10_000 * DAY + 5 * DAY, &m).unwrap();
        assert!((r.typical_gap_days - 20.0).abs() < 1e-9);
        assert!((r.log_gap_sd - 0.6).abs() < 1e-12);
        let one_gap = summary(&[0, 80]);
        let r = one_gap.rhythm(10_000 * DAY + 85 * DAY, &m).unwrap();
        // (ln 80 + 2 ln 20) / 3: a third of the way from 20 to 80 on the log scale.
        assert!((r.log_gap_mean - (80f64.ln() + 2.0 * 20f64.ln()) / 3.0).abs() < 1e-12);
    }

    /// A season that doubles December's rate: the same customer's December visits are what
    /// their own rate predicts, not growth.
    #[test]
    fn the_season_is_not_a_trend() {
        let flat = RhythmModel::new(RhythmPrior::default());
        assert!((flat.season_mass(0, 365) - 365.0).abs() < 1e-9);
        assert!((flat.season_mass(100, 190) - 90.0).abs() < 1e-9);
        let seasonal = RhythmModel::new(RhythmPrior {
            season: [0.5, 0.0, 0.0, 0.0],
            ..RhythmPrior::default()
        });
        assert!((seasonal.season_mass(-200, 165) - 365.0).abs() < 1e-6);
        // Days around the season's peak (day 0 of its year) weigh more than those around
        // its trough.
        assert!(seasonal.season_mass(-46, 44) > 1.5 * seasonal.season_mass(136, 226));
    }
}
