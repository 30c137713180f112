//! A deterministic synthetic loyalty programme, for the quickstart, the tests and the large
//! benchmarks, with ground truth that real data never has.
//!
//! Each customer buys on a personal rhythm: gamma-distributed gaps around a personal mean
//! (lognormal across customers, shape = how regular they are), faster around December.
//! Drifters stop (most of them) or slow down sixfold at a known date; risers shorten their
//! gaps and grow their baskets over six months from a known date. Points are earned per
//! dollar and redeemed now and then; each customer prefers one of three channels; about 3 %
//! of purchases are partly or wholly returned a few days later (a negative amount). The same
//! seed gives the same bytes.

use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, LogNormal};

use crate::features::DAY;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub customers: usize,
    pub seed: u64,
    /// First day of the log (Unix seconds at midnight UTC).
    pub start: i64,
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Steady,
    Drifter,
    Riser,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Steady => "steady",
            Kind::Drifter => "drifter",
            Kind::Riser => "riser",
        }
    }
}

/// What the generator knows about a customer and the data cannot say.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub id: String,
    pub kind: Kind,
    /// When a drifter drifts or a riser starts rising (may lie after the end of the log).
    pub event_ts: Option<i64>,
    pub mean_gap_days: f64,
}

#[derive(Debug, Clone, Copy)]
struct GenTx {
    ts: i64,
    cust: u32,
    /// Negative for a return.
    amount_cents: i64,
    points_earned: u32,
    points_redeemed: u32,
    channel: u8,
    quantity: u16,
}

const CHANNELS: [&str; 3] = ["store", "web", "app"];

/// Share of purchases partly or wholly returned.
const RETURN_SHARE: f64 = 0.03;

pub fn customer_id(i: usize) -> String {
    format!("C{:07}", i + 1)
}

fn customer_rng(seed: u64, i: usize) -> ChaCha8Rng {
    // splitmix64 of the index, so neighbouring customers get unrelated streams.
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(seed ^ z ^ (z >> 31))
}

/// Rate multiplier of the season: about 1.35 in late December, 0.65 in late June.
fn season(ts: i64) -> f64 {
    let doy = (ts.rem_euclid(365 * DAY) / DAY) as f64;
    1.0 + 0.35 * (2.0 * std::f64::consts::PI * (doy - 355.0) / 365.0).cos()
}

/// Who one customer is: drawn once, then their purchases follow.
struct Persona {
    join: i64,
    mean_gap: f64,
    /// Gamma shape of the gaps: how regular they are.
    shape: f64,
    basket: f64,
    noise: Option<LogNormal<f64>>,
    kind: Kind,
    event_ts: Option<i64>,
    /// A drifter who stops altogether (else they slow down sixfold).
    stops_dead: bool,
    preferred: u8,
}

impl Persona {
    fn draw(rng: &mut ChaCha8Rng, opts: &GenerateOptions) -> Self {
        let end = opts.start + i64::from(opts.days) * DAY;
        let span = i64::from(opts.days) * DAY;
        let join = opts.start + rng.random_range(0..(span * 7 / 10).max(DAY));
        let mean_gap = LogNormal::new(30f64.ln(), 0.7)
            .map(|d| d.sample(rng))
            .unwrap_or(30.0)
            .clamp(3.0, 180.0);
        let shape: f64 = rng.random_range(1.5..5.0);
        let basket = LogNormal::new(35f64.ln(), 0.5)
            .map(|d| d.sample(rng))
            .unwrap_or(35.0);
        let noise = LogNormal::new(0.0, 0.35).ok();
        let u: f64 = rng.random();
        let kind = if u < 0.22 {
            Kind::Drifter
        } else if u < 0.32 {
            Kind::Riser
        } else {
            Kind::Steady
        };
        // Events spread over the customer's life and a little past the end of the log.
        let event_ts = (kind != Kind::Steady).then(|| {
            join + 60 * DAY + rng.random_range(0..(end + 90 * DAY - join - 60 * DAY).max(DAY))
        });
        Persona {
            join,
            mean_gap,
            shape,
            basket,
            noise,
            kind,
            event_ts,
            stops_dead: rng.random_bool(0.85),
            preferred: rng.random_range(0..CHANNELS.len()) as u8,
        }
    }

    /// How the gaps and baskets are scaled at `t`; `None` once a drifter has stopped.
    fn scales(&self, t: i64) -> Option<(f64, f64)> {
        match (self.kind, self.event_ts) {
            (Kind::Drifter, Some(e)) if t >= e => (!self.stops_dead).then_some((6.0, 1.0)),
            (Kind::Riser, Some(e)) if t >= e => {
                let p = ((t - e) as f64 / (180 * DAY) as f64).min(1.0);
                Some((1.0 - 0.55 * p, 1.0 + 1.2 * p))
            }
            _ => Some((1.0, 1.0)),
        }
    }
}

fn simulate(opts: &GenerateOptions, i: usize, out: &mut Vec<GenTx>) -> Truth {
    let mut rng = customer_rng(opts.seed, i);
    let end = opts.start + i64::from(opts.days) * DAY;
    let who = Persona::draw(&mut rng, opts);
    let mut balance = 0u32;
    let mut t = who.join;
    while t < end {
        let Some((gap_scale, basket_scale)) = who.scales(t) else {
            break;
        };
        let noise = who.noise.map_or(1.0, |n| n.sample(&mut rng));
        let amount = (who.basket * basket_scale * noise).max(0.5);
        let amount_cents = (amount * 100.0).round() as i64;
        let earned = (amount_cents / 100) as u32;
        balance += earned;
        let redeemed = if balance >= 200 && rng.random_bool(0.08) {
            let r = balance.min(100 * rng.random_range(2..6));
            balance -= r;
            r
        } else {
            0
        };
        let channel = if rng.random_bool(0.75) {
            who.preferred
        } else {
            rng.random_range(0..CHANNELS.len()) as u8
        };
        // Shop hours, 08:00 to 21:00.
        let day_start = t.div_euclid(DAY) * DAY;
        let ts = day_start + rng.random_range((8 * 3600)..(21 * 3600));
        if ts < end {
            out.push(GenTx {
                ts,
                cust: i as u32,
                amount_cents,
                points_earned: earned,
                points_redeemed: redeemed,
                channel,
                quantity: 1 + (amount / 25.0) as u16,
            });
            if rng.random_bool(RETURN_SHARE) {
                let back = ts + rng.random_range((2 * DAY)..(20 * DAY));
                let share: f64 = rng.random_range(0.3..1.0);
                if back < end {
                    out.push(GenTx {
                        ts: back,
                        cust: i as u32,
                        amount_cents: -((amount_cents as f64 * share).round() as i64).max(1),
                        points_earned: 0,
                        points_redeemed: 0,
                        channel,
                        quantity: 1,
                    });
                }
            }
        }
        let g = Gamma::new(who.shape, who.mean_gap / who.shape)
            .map(|d| d.sample(&mut rng))
            .unwrap_or(who.mean_gap);
        let days = (g * gap_scale / season(t)).max(0.02);
        t = day_start + DAY / 2 + (days * DAY as f64) as i64;
    }
    Truth {
        id: customer_id(i),
        kind: who.kind,
        event_ts: who.event_ts,
        mean_gap_days: who.mean_gap,
    }
}

/// Generates the log, written in time order as a real export would be, and returns the
/// ground truth and the number of transactions.
pub fn generate(
    opts: &GenerateOptions,
    out: &mut impl Write,
    progress: &dyn Fn(u64),
) -> std::io::Result<(Vec<Truth>, u64)> {
    let mut txs = Vec::with_capacity(opts.customers * 32);
    let mut truth = Vec::with_capacity(opts.customers);
    for i in 0..opts.customers {
        truth.push(simulate(opts, i, &mut txs));
        if i % 10_000 == 9_999 {
            progress(10_000);
        }
    }
    progress((opts.customers % 10_000) as u64);
    txs.sort_unstable_by_key(|t| (t.ts, t.cust));
    writeln!(
        out,
        "customer_id,timestamp,amount,points_earned,points_redeemed,channel,quantity"
    )?;
    let mut line = String::with_capacity(96);
    for t in &txs {
        line.clear();
        line.push('C');
        push_padded(&mut line, u64::from(t.cust) + 1, 7);
        line.push(',');
        push_rfc3339(&mut line, t.ts);
        line.push(',');
        if t.amount_cents < 0 {
            line.push('-');
        }
        let cents = t.amount_cents.unsigned_abs();
        push_padded(&mut line, cents / 100, 1);
        line.push('.');
        push_padded(&mut line, cents % 100, 2);
        line.push(',');
        push_padded(&mut line, u64::from(t.points_earned), 1);
        line.push(',');
        push_padded(&mut line, u64::from(t.points_redeemed), 1);
        line.push(',');
        line.push_str(CHANNELS[usize::from(t.channel)]);
        line.push(',');
        push_padded(&mut line, u64::from(t.quantity), 1);
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    Ok((truth, txs.len() as u64))
}

/// Writes the ground truth as CSV: customer_id, kind, event_date, mean_gap_days.
pub fn write_truth(truth: &[Truth], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "customer_id,kind,event_date,mean_gap_days")?;
    for t in truth {
        let event = t.event_ts.map(crate::time::fmt_day).unwrap_or_default();
        writeln!(
            out,
            "{},{},{},{:.1}",
            t.id,
            t.kind.as_str(),
            event,
            t.mean_gap_days
        )?;
    }
    Ok(())
}

fn push_padded(s: &mut String, v: u64, width: usize) {
    let digits = v.to_string();
    for _ in digits.len()..width {
        s.push('0');
    }
    s.push_str(&digits);
}

/// `YYYY-MM-DDTHH:MM:SSZ` without chrono's general machinery: the generator writes tens of
/// millions of these.
fn push_rfc3339(s: &mut String, ts: i64) {
    let days = ts.div_euclid(DAY);
    let secs = ts.rem_euclid(DAY) as u64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as u64;
    push_padded(s, y, 4);
    s.push('-');
    push_padded(s, m, 2);
    s.push('-');
    push_padded(s, d, 2);
    s.push('T');
    push_padded(s, secs / 3600, 2);
    s.push(':');
    push_padded(s, secs / 60 % 60, 2);
    s.push(':');
    push_padded(s, secs % 60, 2);
    s.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formatting_matches_chrono() {
        for ts in [
            0i64,
            86_399,
            951_782_400,
            1_709_164_800 + 12_345,
            4_102_444_799,
        ] {
            let mut s = String::new();
            push_rfc3339(&mut s, ts);
            assert_eq!(s, crate::time::fmt_ts(ts));
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let run = |seed| {
            let opts = GenerateOptions {
                customers: 300,
                seed,
                start: 1_672_531_200,
                days: 730,
            };
            let mut buf = Vec::new();
            let (truth, n) = generate(&opts, &mut buf, &|_| {}).unwrap();
            assert_eq!(truth.len(), 300);
            assert!(n > 300);
            buf
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
