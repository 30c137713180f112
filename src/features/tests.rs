//! The incremental summary against a naive batch computation written straight from the
//! definitions in README.md (a reference implementation: deliberately no shared code).

use proptest::prelude::*;

use super::*;

const D: i64 = DAY;

// Long: the reference implementation, one definition per feature, kept apart from the code
// it checks.
/// Features computed from the whole history at once, the slow and obvious way. Returns
/// (negative amounts) count in spend and points only.
fn naive(txs: &[Transaction], as_of: i64) -> FeatureVector {
    let mut all: Vec<Transaction> = txs.iter().filter(|t| t.ts < as_of).copied().collect();
    all.sort_by_key(|t| t.ts);
    let txs: Vec<Transaction> = all.iter().filter(|t| t.amount >= 0.0).copied().collect();
    let day = |ts: i64| ts.div_euclid(D);
    let r = (as_of - 1).div_euclid(D);
    let n = txs.len() as f64;
    let first = txs.first().unwrap().ts;
    let last = txs.last().unwrap().ts;
    let recency = (as_of - last) as f64 / D as f64;
    let tenure = (as_of - first) as f64 / D as f64;
    let mut days: Vec<i64> = txs.iter().map(|t| day(t.ts)).collect();
    days.dedup();
    let gaps: Vec<f64> = days.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    let in_ages = |t: &Transaction, lo: i64, hi: i64| {
        let age = r - day(t.ts);
        age >= lo && age < hi
    };
    let count = |lo, hi| txs.iter().filter(|t| in_ages(t, lo, hi)).count() as f64;
    let spend = |lo, hi| {
        all.iter()
            .filter(|t| in_ages(t, lo, hi))
            .map(|t| t.amount)
            .sum::<f64>()
    };
    let visits =
        |lo: i64, hi: i64| days.iter().filter(|&&d| r - d >= lo && r - d < hi).count() as f64;
    let lr = |a: f64, b: f64| ((a.max(0.0) + 1.0) / (b.max(0.0) + 1.0)).ln();
    let total: f64 = all.iter().map(|t| t.amount).sum();
    let (mean_gap, std_gap) = match gaps.len() {
        0 => (tenure.max(1.0), tenure.max(1.0)),
        1 => (gaps[0], gaps[0]),
        k => {
            let m = gaps.iter().sum::<f64>() / k as f64;
            let v = gaps.iter().map(|g| (g - m) * (g - m)).sum::<f64>() / (k - 1) as f64;
            (m, v.sqrt())
        }
    };
    let (n_recent, log_mean, log_sd) = recent_log_gaps(&gaps);
    let (c90, cprev) = (count(0, 90), count(90, 365));
    let basket_trend = if c90 > 0.0 && cprev > 0.0 {
        lr(spend(0, 90) / c90, spend(90, 365) / cprev)
    } else {
        0.0
    };
    let pe: f64 = all.iter().map(|t| t.points_earned).sum();
    let pr: f64 = all.iter().map(|t| t.points_redeemed).sum();
    let pts = |f: fn(&Transaction) -> f64| {
        all.iter()
            .filter(|t| in_ages(t, 0, 365))
            .map(f)
            .sum::<f64>()
    };
    let mut channels: Vec<u32> = txs.iter().map(|t| t.channel).filter(|&c| c != 0).collect();
    channels.sort_unstable();
    channels.dedup();
    [
        recency,
        tenure,
        n,
        days.len() as f64,
        c90,
        count(0, 365),
        spend(0, 90),
        spend(0, 180),
        spend(0, 365),
        total,
        total / n,
        basket_trend,
        mean_gap,
        std_gap / mean_gap.max(1.0),
        (recency / mean_gap.max(1.0)).min(1000.0),
        ((recency - mean_gap) / std_gap.max(1.0)).clamp(-10.0, 10.0),
        lr(spend(0, 90), spend(90, 180)),
        lr(visits(0, 90), visits(90, 180)),
        count(335, 395),
        pts(|t| t.points_earned),
        pts(|t| t.points_redeemed),
        (pr / pe.max(1.0)).min(100.0),
        channels.len().max(1) as f64,
        n_recent as f64,
        log_mean,
        log_sd,
        visits(0, 90),
        visits(90, 365),
        if n_recent == 0 {
            0.0
        } else {
            ((recency.max(1.0).ln() - log_mean) / log_sd.max(0.25)).clamp(-10.0, 10.0)
        },
    ]
}

/// The rhythm features' view: the latest eight gaps on the log scale (count, mean, sample
/// standard deviation; 0 where undefined).
fn recent_log_gaps(gaps: &[f64]) -> (usize, f64, f64) {
    let recent: Vec<f64> = gaps.iter().rev().take(8).map(|g| g.ln()).collect();
    if recent.is_empty() {
        return (0, 0.0, 0.0);
    }
    let mean = recent.iter().sum::<f64>() / recent.len() as f64;
    if recent.len() < 2 {
        return (1, mean, 0.0);
    }
    let ss: f64 = recent.iter().map(|l| (l - mean) * (l - mean)).sum();
    (recent.len(), mean, (ss / (recent.len() - 1) as f64).sqrt())
}

fn assert_close(a: &FeatureVector, b: &FeatureVector) {
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        let tol = 1e-9 * (1.0 + x.abs().max(y.abs()));
        assert!(
            (x - y).abs() <= tol,
            "feature {} differs: incremental {x} naive {y}",
            FEATURE_NAMES[i]
        );
    }
}

fn assert_finite(f: &FeatureVector) {
    for (i, v) in f.iter().enumerate() {
        assert!(v.is_finite(), "feature {} is {v}", FEATURE_NAMES[i]);
    }
}

/// Random histories: gaps from seconds to years, same-day bursts, zero amounts, points and
/// channels present or not.
fn history() -> impl Strategy<Value = (Vec<Transaction>, i64)> {
    let gap = prop_oneof![
        3 => 0i64..(2 * D),
        3 => 0i64..(120 * D),
        1 => (300 * D)..(900 * D),
        1 => Just(0i64),
    ];
    let tx = (
        gap,
        prop_oneof![1 => Just(0.0f64), 5 => 0.0f64..500.0, 1 => -300.0f64..-0.01],
        prop_oneof![1 => Just(0.0f64), 1 => 0.0f64..100.0],
        prop_oneof![2 => Just(0.0f64), 1 => 0.0f64..100.0],
        0u32..4,
    );
    (
        proptest::collection::vec(tx, 1..60),
        (D * 8_000)..(D * 12_000),
        1i64..(800 * D),
    )
        .prop_map(|(steps, start, after)| {
            let mut ts = start;
            let mut out = Vec::with_capacity(steps.len());
            for (i, (g, mut amount, pe, pr, ch)) in steps.into_iter().enumerate() {
                ts += g;
                if i == 0 {
                    // A customer's first transaction is a purchase: there is something to score.
                    amount = amount.abs();
                }
                out.push(Transaction {
                    ts,
                    amount,
                    points_earned: pe,
                    points_redeemed: pr,
                    channel: ch,
                });
            }
            let as_of = ts + after;
            (out, as_of)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn incremental_equals_naive((txs, as_of) in history()) {
        let s = CustomerSummary::from_transactions(&txs).unwrap();
        let inc = s.features(as_of).unwrap();
        assert_finite(&inc);
        assert_close(&inc, &naive(&txs, as_of));
        // The server refuses values outside the domain: none a real history gives.
        for (j, &v) in inc.iter().enumerate() {
            prop_assert!(check_value(j, v).is_ok(), "{:?}", check_value(j, v));
        }
    }

    /// Features at an earlier as_of from a summary folded only up to then equal the naive
    /// features of the truncated history: what the trainer does at each snapshot.
    #[test]
    fn folding_up_to_a_snapshot((txs, _as_of) in history(), cut in 0.0f64..1.0) {
        let first = txs[0].ts;
        let last = txs[txs.len() - 1].ts;
        let snapshot = first + 1 + ((last - first) as f64 * cut) as i64;
        let mut s = CustomerSummary::new();
        for t in txs.iter().filter(|t| t.ts < snapshot) {
            s.update(t).unwrap();
        }
        let inc = s.features(snapshot).unwrap();
        assert_close(&inc, &naive(&txs, snapshot));
    }
}

#[test]
fn one_purchase_customer_is_finite_and_neutral() {
    let mut s = CustomerSummary::new();
    s.update(&Transaction::new(10_000 * D, 25.0)).unwrap();
    let f = s.features(10_000 * D + 30 * D).unwrap();
    assert_finite(&f);
    assert_eq!(
        f[FEATURE_NAMES
            .iter()
            .position(|n| *n == "visits_total")
            .unwrap()],
        1.0
    );
    let z = FEATURE_NAMES
        .iter()
        .position(|n| *n == "overdue_z")
        .unwrap();
    assert!(f[z].abs() < 1e-9, "overdue_z for one purchase is {}", f[z]);
}

#[test]
fn same_second_purchases_and_zero_amounts_are_finite() {
    let txs: Vec<Transaction> = (0..5).map(|_| Transaction::new(10_000 * D, 0.0)).collect();
    let s = CustomerSummary::from_transactions(&txs).unwrap();
    let f = s.features(10_000 * D + 1).unwrap();
    assert_finite(&f);
    assert_close(&f, &naive(&txs, 10_000 * D + 1));
}

#[test]
fn extreme_gaps_are_finite() {
    let txs = [
        Transaction::new(D, 1e9),
        Transaction::new(D + 1, 0.0),
        Transaction::new(60_000 * D, 0.01),
    ];
    let s = CustomerSummary::from_transactions(&txs).unwrap();
    for as_of in [60_000 * D + 1, 80_000 * D] {
        assert_finite(&s.features(as_of).unwrap());
    }
}

#[test]
fn overdue_customer_scores_as_overdue() {
    // Every 42 days for a year, then 63 days of silence: "usually every 42".
    let txs: Vec<Transaction> = (0..10)
        .map(|i| Transaction::new(10_000 * D + i * 42 * D, 30.0))
        .collect();
    let last = txs.last().unwrap().ts;
    let f = CustomerSummary::from_transactions(&txs)
        .unwrap()
        .features(last + 63 * D)
        .unwrap();
    let idx = |n: &str| FEATURE_NAMES.iter().position(|x| *x == n).unwrap();
    assert_eq!(f[idx("mean_gap_days")], 42.0);
    assert_eq!(f[idx("overdue_ratio")], 1.5);
    assert_eq!(
        f[idx("overdue_z")],
        10.0,
        "a perfectly regular customer 21 days late"
    );
}

#[test]
fn refuses_bad_input() {
    let mut s = CustomerSummary::new();
    assert_eq!(s.features(D), Err(FeatureError::NoPurchases));
    assert!(matches!(
        s.update(&Transaction::new(D, f64::NAN)),
        Err(FeatureError::BadAmount(_))
    ));
    assert!(matches!(
        s.update(&Transaction::new(D, -2e9)),
        Err(FeatureError::BadAmount(_))
    ));
    assert!(matches!(
        s.update(&Transaction::new(-5, 1.0)),
        Err(FeatureError::TimestampOutOfRange(-5))
    ));
    s.update(&Transaction::new(10 * D, 1.0)).unwrap();
    assert!(matches!(
        s.update(&Transaction::new(9 * D, 1.0)),
        Err(FeatureError::OutOfOrder { .. })
    ));
    assert!(matches!(
        s.features(10 * D),
        Err(FeatureError::AsOfNotAfterLastPurchase { .. })
    ));
}

#[test]
fn channel_ids_are_stable_and_case_blind() {
    assert_eq!(channel_id("Web"), channel_id("web"));
    assert_ne!(channel_id("web"), channel_id("app"));
    assert_eq!(channel_id(""), 0);
    assert_ne!(channel_id("store"), 0);
}

/// A return lowers net spend; it is neither a purchase nor a visit, so it moves neither the
/// recency nor the rhythm, and a customer with only returns has nothing to score.
#[test]
fn a_return_is_net_spend_not_a_visit() {
    let idx = |n: &str| FEATURE_NAMES.iter().position(|x| *x == n).unwrap();
    let buy = Transaction::new(10_000 * D, 80.0);
    let back = Transaction::new(10_000 * D + 5 * D, -30.0);
    let s = CustomerSummary::from_transactions(&[buy, back]).unwrap();
    let f = s.features(10_000 * D + 10 * D).unwrap();
    assert_eq!(f[idx("spend_total")], 50.0);
    assert_eq!(f[idx("spend_90d")], 50.0);
    assert_eq!(f[idx("purchases_total")], 1.0);
    assert_eq!(f[idx("visits_total")], 1.0);
    assert_eq!(f[idx("recency_days")], 10.0);
    assert_eq!(s.recent_gaps().len(), 0);
    assert_eq!(s.returns(), 1);
    let only = CustomerSummary::from_transactions(&[back]).unwrap();
    assert_eq!(only.features(20_000 * D), Err(FeatureError::NoPurchases));
    // Returning more than was bought in a window keeps every trend finite.
    let big = Transaction::new(10_000 * D + 6 * D, -500.0);
    let s = CustomerSummary::from_transactions(&[buy, back, big]).unwrap();
    assert_finite(&s.features(10_000 * D + 10 * D).unwrap());
}
