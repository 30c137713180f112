//! Drift at serve time: what a server scores, compared with the version's training profile
//! (`model::Profile`). Each served row's features, both scores and its segment are counted
//! into the bins of the profile over a rolling window ([`WINDOW_SECS`], in [`SLOTS`] slots
//! of which the oldest is cleared as time moves on), and the population stability index of
//! every distribution is read from those counts. Lock-free: one relaxed increment per
//! distribution and row.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::model::{Binned, Profile, Segment};

/// The window drift is measured over.
pub const WINDOW_SECS: i64 = 3600;
/// Slots of the window: the counts age out a sixth at a time.
pub const SLOTS: usize = 6;
const SLOT_SECS: i64 = WINDOW_SECS / SLOTS as i64;

/// Fewer rows than this in the window and the PSI is mostly sampling noise.
pub const MIN_ROWS: u64 = 100;
/// Below this a distribution counts as stable, above [`SHIFTED`] as shifted (the usual
/// reading of the population stability index).
pub const STABLE: f64 = 0.1;
pub const SHIFTED: f64 = 0.25;

/// How to read a PSI counted on `rows` rows.
pub fn reading(psi: f64, rows: u64) -> &'static str {
    if rows < MIN_ROWS {
        "too few rows"
    } else if psi < STABLE {
        "stable"
    } else if psi <= SHIFTED {
        "moving"
    } else {
        "shifted"
    }
}

/// One distribution's drift.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// A feature's name, or `churn` / `clv`.
    pub name: String,
    /// `feature` or `score`.
    pub kind: &'static str,
    pub psi: f64,
    /// Shares per bin: in the training profile, and served in the window.
    pub expected: Vec<f64>,
    pub actual: Vec<f64>,
}

/// The drift of the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Rows scored in the window.
    pub rows: u64,
    pub distributions: Vec<Distribution>,
    /// Each segment's share of the rows, in `Segment::ALL` order.
    pub segments: Vec<(Segment, f64)>,
}

#[derive(Debug)]
struct Slot {
    /// The slot's index in time (`now / SLOT_SECS`); counts of an older one are stale.
    epoch: AtomicI64,
    rows: AtomicU64,
    /// Every distribution's bins end to end, then the segments.
    counts: Vec<AtomicU64>,
}

/// Counts of served rows against one version's profile.
#[derive(Debug)]
pub struct Monitor {
    /// Features in schema order, then churn and CLV.
    bins: Vec<(Binned, &'static str)>,
    /// Where each distribution's bins start in a slot's counts.
    offsets: Vec<usize>,
    slots: Vec<Slot>,
}

impl Monitor {
    /// A monitor for a profile; `None` when it has no scores (a version before profiles).
    pub fn new(p: &Profile) -> Option<Self> {
        let (churn, clv) = (p.churn.clone()?, p.clv.clone()?);
        let mut bins: Vec<(Binned, &'static str)> =
            p.features.iter().map(|b| (b.clone(), "feature")).collect();
        bins.extend([(churn, "score"), (clv, "score")]);
        let mut offsets = Vec::with_capacity(bins.len());
        let mut n = 0;
        for (b, _) in &bins {
            offsets.push(n);
            n += b.bins();
        }
        let width = n + Segment::ALL.len();
        let slots = (0..SLOTS)
            .map(|_| Slot {
                epoch: AtomicI64::new(i64::MIN),
                rows: AtomicU64::new(0),
                counts: (0..width).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        Some(Monitor {
            bins,
            offsets,
            slots,
        })
    }

    /// The slot for `now`, cleared first if it still holds an older epoch's counts. A count
    /// racing with the clear may be lost: drift is a rate, not a ledger.
    fn slot(&self, now: i64) -> &Slot {
        let epoch = now.div_euclid(SLOT_SECS);
        let slot = &self.slots[epoch.rem_euclid(SLOTS as i64) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != epoch
            && slot
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.rows.store(0, Ordering::Relaxed);
            slot.counts
                .iter()
                .for_each(|c| c.store(0, Ordering::Relaxed));
        }
        slot
    }

    /// Counts one served row: its features (schema order), scores and segment, at `now`.
    pub fn record(&self, features: &[f64], (churn, clv): (f64, f64), segment: Segment, now: i64) {
        let slot = self.slot(now);
        let n_features = self.bins.len() - 2;
        let values = features.iter().take(n_features).chain([&churn, &clv]);
        for ((b, _), (&off, &v)) in self.bins.iter().zip(self.offsets.iter().zip(values)) {
            slot.counts[off + b.bin(v)].fetch_add(1, Ordering::Relaxed);
        }
        let seg = Segment::ALL.iter().position(|s| *s == segment).unwrap_or(0);
        let base = slot.counts.len() - Segment::ALL.len();
        slot.counts[base + seg].fetch_add(1, Ordering::Relaxed);
        slot.rows.fetch_add(1, Ordering::Relaxed);
    }

    /// The window ending at `now`.
    pub fn report(&self, now: i64) -> Report {
        let epoch = now.div_euclid(SLOT_SECS);
        let width = self.slots[0].counts.len();
        let (mut counts, mut rows) = (vec![0u64; width], 0u64);
        for s in &self.slots {
            let e = s.epoch.load(Ordering::Acquire);
            if e <= epoch && e > epoch - SLOTS as i64 {
                rows += s.rows.load(Ordering::Relaxed);
                for (t, c) in counts.iter_mut().zip(&s.counts) {
                    *t += c.load(Ordering::Relaxed);
                }
            }
        }
        let share = |c: &[u64]| -> Vec<f64> {
            let n = c.iter().sum::<u64>().max(1) as f64;
            c.iter().map(|&x| x as f64 / n).collect()
        };
        let distributions = self
            .bins
            .iter()
            .zip(&self.offsets)
            .map(|((b, kind), &off)| {
                let c = &counts[off..off + b.bins()];
                Distribution {
                    name: b.name.clone(),
                    kind,
                    psi: b.psi(c),
                    expected: b.shares.clone(),
                    actual: share(c),
                }
            })
            .collect();
        let seg = &counts[width - Segment::ALL.len()..];
        let d = rows.max(1) as f64;
        Report {
            rows,
            distributions,
            segments: Segment::ALL
                .iter()
                .zip(seg)
                .map(|(s, &c)| (*s, c as f64 / d))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        let v: Vec<f64> = (0..1000).map(f64::from).collect();
        Profile {
            rows: 1000,
            features: vec![Binned::from_values("a", &v), Binned::from_values("b", &v)],
            churn: Some(Binned::from_values("churn", &v)),
            clv: Some(Binned::from_values("clv", &v)),
        }
    }

    #[test]
    fn a_shifted_feature_drifts_and_the_rest_do_not() {
        let m = Monitor::new(&profile()).unwrap();
        for i in 0..2000 {
            let x = f64::from(i % 1000);
            m.record(&[x, x * 3.0 + 2000.0], (x, x), Segment::Steady, 10_000);
        }
        let r = m.report(10_000);
        assert_eq!(r.rows, 2000);
        let psi: Vec<f64> = r.distributions.iter().map(|d| d.psi).collect();
        assert!(psi[0] < 0.01 && psi[2] < 0.01 && psi[3] < 0.01, "{psi:?}");
        assert!(psi[1] > 0.25, "{psi:?}");
        assert_eq!(
            r.segments
                .iter()
                .find(|s| s.0 == Segment::Steady)
                .map(|s| s.1),
            Some(1.0)
        );
    }

    #[test]
    fn a_psi_is_read_only_on_enough_rows() {
        assert_eq!(reading(8.0, 1), "too few rows");
        assert_eq!(reading(0.05, 500), "stable");
        assert_eq!(reading(0.2, 500), "moving");
        assert_eq!(reading(0.3, 500), "shifted");
    }

    #[test]
    fn counts_age_out_of_the_window() {
        let m = Monitor::new(&profile()).unwrap();
        m.record(&[1.0, 1.0], (1.0, 1.0), Segment::Steady, 0);
        assert_eq!(m.report(0).rows, 1);
        assert_eq!(m.report(WINDOW_SECS - 1).rows, 1);
        assert_eq!(m.report(WINDOW_SECS).rows, 0, "a window later");
        // The slot is reused and cleared.
        m.record(&[1.0, 1.0], (1.0, 1.0), Segment::Steady, WINDOW_SECS);
        assert_eq!(m.report(WINDOW_SECS).rows, 1);
    }
}
