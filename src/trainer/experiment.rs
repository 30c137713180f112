//! The read-out of an A/B experiment: exposures joined with what customers did afterwards.
//!
//! Each customer counts once, at their first exposure (the arm is sticky, so later ones
//! repeat it). The outcome window is `[as_of, as_of + horizon)`: no purchase in it is a
//! realised churn, the spend in it is the realised CLV. Customers are joined by the keyed
//! hash, so the read-out needs the key the server used, never raw ids in the log.
//! Uncertainty comes from a bootstrap over customers within each arm.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::eval::roc_auc;
use super::load::TransactionLog;
use crate::exposure::{CustomerKey, Exposure};
use crate::registry::HOLDOUT_ARM;

const DAY: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the exposures hold no experiment{}", .0.as_deref().map(|e| format!(" named {e}")).unwrap_or_default())]
    NoExposures(Option<String>),
    #[error("the exposures hold several experiments ({0}); choose one with --experiment")]
    Ambiguous(String),
    #[error("exposure {index}: {field}: {problem}")]
    BadExposure {
        index: usize,
        field: &'static str,
        problem: String,
    },
    #[error("no outcome window is complete: the transactions end at {log_end}, the earliest window ends at {first_end}; wait or pass a later log")]
    NoCompleteWindow { log_end: String, first_end: String },
}

#[derive(Debug, Clone, Copy)]
pub struct ReportOptions {
    pub bootstrap: usize,
    pub seed: u64,
    /// Two-sided coverage of the intervals, e.g. 0.95.
    pub confidence: f64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            bootstrap: 1000,
            seed: 7,
            confidence: 0.95,
        }
    }
}

/// A point estimate with its bootstrap interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmReport {
    pub arm: String,
    pub versions: Vec<String>,
    pub customers: usize,
    pub realised_churn_rate: Estimate,
    pub realised_spend_mean: Estimate,
    /// Scored arms only (the holdout has no scores).
    pub churn_roc_auc: Option<Estimate>,
    pub churn_brier: Option<Estimate>,
    /// Mean predicted churn minus the realised rate (0 is calibrated in the large).
    pub churn_calibration_gap: Option<Estimate>,
    /// Expected calibration error over ten probability bins.
    pub churn_ece: Option<f64>,
    pub clv_mae: Option<Estimate>,
    /// Mean predicted CLV minus mean realised spend.
    pub clv_bias: Option<Estimate>,
}

/// One arm against the control on one metric.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub metric: &'static str,
    pub arm: String,
    pub control: String,
    /// arm minus control.
    pub difference: Estimate,
    /// Share of bootstrap resamples in which `arm` is better than the control.
    pub p_better: f64,
    pub higher_is_better: bool,
}

impl Comparison {
    /// The arm ahead and how sure: `None` when neither wins in at least `confidence` of the
    /// resamples.
    pub fn leader(&self, confidence: f64) -> Option<(&str, f64)> {
        if self.p_better >= confidence {
            Some((&self.arm, self.p_better))
        } else if 1.0 - self.p_better >= confidence {
            Some((&self.control, 1.0 - self.p_better))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExperimentReport {
    pub experiment: String,
    pub exposures: usize,
    pub customers: usize,
    /// Customers whose first and a later exposure were in different arms (a salt or weight
    /// change mid-experiment); counted in their first arm.
    pub switched_arms: usize,
    /// Customers whose outcome window is not over yet at the end of the log; left out.
    pub incomplete: usize,
    pub log_end: String,
    pub confidence: f64,
    pub bootstrap: usize,
    pub arms: Vec<ArmReport>,
    pub comparisons: Vec<Comparison>,
}

/// One customer's exposure and outcome.
struct Row {
    churn_p: Option<f64>,
    clv: Option<f64>,
    churned: bool,
    spend: f64,
}

fn parse_time(s: &str, index: usize, field: &'static str) -> Result<i64, ReportError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .map_err(|e| ReportError::BadExposure {
            index,
            field,
            problem: format!("{s:?} is not RFC 3339 ({e})"),
        })
}

/// Joins exposures with the later log and computes every figure.
pub fn report(
    exposures: &[Exposure],
    log: &TransactionLog,
    key: &CustomerKey,
    experiment: Option<&str>,
    opts: &ReportOptions,
) -> Result<ExperimentReport, ReportError> {
    let name = match experiment {
        Some(e) => e.to_string(),
        None => {
            let mut names: Vec<&str> = exposures.iter().map(|e| e.experiment.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            match names[..] {
                [] => return Err(ReportError::NoExposures(None)),
                [one] => one.to_string(),
                _ => return Err(ReportError::Ambiguous(names.join(", "))),
            }
        }
    };
    // First exposure per customer; later ones only tell us whether the arm ever changed.
    let mut first: HashMap<&str, (i64, usize)> = HashMap::new();
    let mut n_exposures = 0;
    for (i, e) in exposures.iter().enumerate() {
        if e.experiment != name {
            continue;
        }
        n_exposures += 1;
        let t = parse_time(&e.as_of, i, "as_of")?;
        first
            .entry(e.customer.as_str())
            .and_modify(|slot| {
                if t < slot.0 {
                    *slot = (t, i)
                }
            })
            .or_insert((t, i));
    }
    if first.is_empty() {
        return Err(ReportError::NoExposures(Some(name)));
    }
    let mut switched: HashMap<&str, bool> = HashMap::new();
    for e in exposures.iter().filter(|e| e.experiment == name) {
        let (_, fi) = first[e.customer.as_str()];
        if exposures[fi].arm != e.arm {
            switched.insert(e.customer.as_str(), true);
        }
    }

    let by_hash: HashMap<String, usize> = (0..log.n_customers())
        .map(|c| (key.hash(&log.ids[c]), c))
        .collect();
    let log_end = (0..log.n_customers())
        .filter_map(|c| log.customer(c).last().map(|r| r.ts))
        .max()
        .unwrap_or(i64::MIN);

    let mut arms: HashMap<String, (Vec<Row>, Vec<String>)> = HashMap::new();
    let mut incomplete = 0;
    let mut first_end = i64::MAX;
    let mut order: Vec<(&str, &(i64, usize))> = first.iter().map(|(k, v)| (*k, v)).collect();
    order.sort_unstable_by_key(|(k, _)| *k);
    for (cust, &(as_of, i)) in order {
        let e = &exposures[i];
        let end = as_of + i64::from(e.horizon_days) * DAY;
        first_end = first_end.min(end);
        // A window not over yet would count a customer who will still buy as churned.
        if end > log_end + DAY {
            incomplete += 1;
            continue;
        }
        let (mut bought, mut spend) = (false, 0.0);
        if let Some(&c) = by_hash.get(cust) {
            for r in log.customer(c) {
                if r.ts >= as_of && r.ts < end {
                    bought = true;
                    spend += r.amount;
                }
            }
        }
        let slot = arms.entry(e.arm.clone()).or_default();
        if !e.version.is_empty() && !slot.1.contains(&e.version) {
            slot.1.push(e.version.clone());
        }
        slot.0.push(Row {
            churn_p: e.churn_probability,
            clv: e.clv,
            churned: !bought,
            spend,
        });
    }
    let fmt = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "-".into())
    };
    if arms.is_empty() {
        return Err(ReportError::NoCompleteWindow {
            log_end: fmt(log_end),
            first_end: fmt(first_end),
        });
    }

    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut names: Vec<String> = arms.keys().cloned().collect();
    // The control first: the arm called "control", else the largest scored arm.
    names.sort_by_key(|n| {
        (
            n == HOLDOUT_ARM,
            n != "control",
            std::cmp::Reverse(arms[n].0.len()),
            n.clone(),
        )
    });
    let mut reports = Vec::new();
    let mut replicates: HashMap<String, Vec<Stats>> = HashMap::new();
    let mut points: HashMap<String, Stats> = HashMap::new();
    for n in &names {
        let (rows, versions) = &arms[n];
        let point = Stats::of(rows, None);
        let reps: Vec<Stats> = (0..opts.bootstrap)
            .map(|_| {
                let idx: Vec<usize> = (0..rows.len())
                    .map(|_| rng.random_range(0..rows.len()))
                    .collect();
                Stats::of(rows, Some(&idx))
            })
            .collect();
        let est = |f: &dyn Fn(&Stats) -> Option<f64>| -> Option<Estimate> {
            let value = f(&point)?;
            let mut v: Vec<f64> = reps.iter().filter_map(f).collect();
            let (low, high) = interval(&mut v, opts.confidence);
            Some(Estimate { value, low, high })
        };
        reports.push(ArmReport {
            arm: n.clone(),
            versions: versions.clone(),
            customers: rows.len(),
            realised_churn_rate: est(&|s| Some(s.churn_rate)).unwrap_or(zero()),
            realised_spend_mean: est(&|s| Some(s.spend_mean)).unwrap_or(zero()),
            churn_roc_auc: est(&|s| s.auc),
            churn_brier: est(&|s| s.brier),
            churn_calibration_gap: est(&|s| s.calibration_gap),
            churn_ece: point.ece,
            clv_mae: est(&|s| s.clv_mae),
            clv_bias: est(&|s| s.clv_bias),
        });
        replicates.insert(n.clone(), reps);
        points.insert(n.clone(), point);
    }

    let mut comparisons = Vec::new();
    let control = &names[0];
    let metrics: [(&'static str, bool, Figure); 4] = [
        ("churn_roc_auc", true, |s| s.auc),
        ("churn_brier", false, |s| s.brier),
        ("clv_mae", false, |s| s.clv_mae),
        ("realised_churn_rate", false, |s| Some(s.churn_rate)),
    ];
    for other in names.iter().skip(1) {
        for (metric, higher, f) in metrics {
            let (Some(a), Some(c)) = (f(&points[other]), f(&points[control])) else {
                continue;
            };
            // Arms hold different customers: independent resamples, paired by replicate.
            let mut diffs: Vec<f64> = replicates[other]
                .iter()
                .zip(&replicates[control])
                .filter_map(|(x, y)| Some(f(x)? - f(y)?))
                .collect();
            let better = diffs
                .iter()
                .filter(|&&d| if higher { d > 0.0 } else { d < 0.0 })
                .count() as f64
                / diffs.len().max(1) as f64;
            let (low, high) = interval(&mut diffs, opts.confidence);
            comparisons.push(Comparison {
                metric,
                arm: other.clone(),
                control: control.clone(),
                difference: Estimate {
                    value: a - c,
                    low,
                    high,
                },
                p_better: better,
                higher_is_better: higher,
            });
        }
    }

    Ok(ExperimentReport {
        experiment: name,
        exposures: n_exposures,
        customers: first.len(),
        switched_arms: switched.len(),
        incomplete,
        log_end: fmt(log_end),
        confidence: opts.confidence,
        bootstrap: opts.bootstrap,
        arms: reports,
        comparisons,
    })
}

fn zero() -> Estimate {
    Estimate {
        value: 0.0,
        low: 0.0,
        high: 0.0,
    }
}

/// The percentile interval of `v` (sorted in place).
fn interval(v: &mut [f64], confidence: f64) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    (at(tail), at(1.0 - tail))
}

/// One figure read off [`Stats`].
type Figure = fn(&Stats) -> Option<f64>;

/// Every figure of one arm on one (re)sample of its customers.
struct Stats {
    churn_rate: f64,
    spend_mean: f64,
    auc: Option<f64>,
    brier: Option<f64>,
    calibration_gap: Option<f64>,
    ece: Option<f64>,
    clv_mae: Option<f64>,
    clv_bias: Option<f64>,
}

impl Stats {
    fn of(rows: &[Row], idx: Option<&[usize]>) -> Stats {
        let pick: Vec<&Row> = match idx {
            Some(idx) => idx.iter().map(|&i| &rows[i]).collect(),
            None => rows.iter().collect(),
        };
        let n = pick.len().max(1) as f64;
        let y = |r: &Row| f64::from(u8::from(r.churned));
        let churn_rate = pick.iter().map(|r| y(r)).sum::<f64>() / n;
        let spend_mean = pick.iter().map(|r| r.spend).sum::<f64>() / n;
        let scored: Vec<(f64, &Row)> = pick
            .iter()
            .filter_map(|r| r.churn_p.map(|p| (p, *r)))
            .collect();
        let (auc, brier, calibration_gap, ece) = if scored.is_empty() {
            (None, None, None, None)
        } else {
            let m = scored.len() as f64;
            let p: Vec<f64> = scored.iter().map(|(p, _)| *p).collect();
            let l: Vec<bool> = scored.iter().map(|(_, r)| r.churned).collect();
            let brier = scored.iter().map(|(p, r)| (p - y(r)).powi(2)).sum::<f64>() / m;
            let gap = p.iter().sum::<f64>() / m - l.iter().filter(|&&b| b).count() as f64 / m;
            let mut bins = [(0.0f64, 0.0f64, 0usize); 10];
            for (p, r) in &scored {
                let b = ((p * 10.0) as usize).min(9);
                bins[b].0 += p;
                bins[b].1 += y(r);
                bins[b].2 += 1;
            }
            let ece = bins
                .iter()
                .filter(|b| b.2 > 0)
                .map(|b| (b.0 - b.1).abs() / m)
                .sum::<f64>();
            (Some(roc_auc(&p, &l)), Some(brier), Some(gap), Some(ece))
        };
        let clv: Vec<(f64, f64)> = pick
            .iter()
            .filter_map(|r| r.clv.map(|c| (c, r.spend)))
            .collect();
        let (clv_mae, clv_bias) = if clv.is_empty() {
            (None, None)
        } else {
            let m = clv.len() as f64;
            (
                Some(clv.iter().map(|(c, s)| (c - s).abs()).sum::<f64>() / m),
                Some(clv.iter().map(|(c, s)| c - s).sum::<f64>() / m),
            )
        };
        Stats {
            churn_rate,
            spend_mean,
            auc,
            brier,
            calibration_gap,
            ece,
            clv_mae,
            clv_bias,
        }
    }
}

/// The report as a person reads it.
pub fn render(r: &ExperimentReport) -> String {
    let pct = r.confidence * 100.0;
    let e = |x: &Estimate, d: usize| format!("{:.d$} [{:.d$}, {:.d$}]", x.value, x.low, x.high);
    let opt = |x: &Option<Estimate>, d: usize| x.as_ref().map_or("-".into(), |x| e(x, d));
    let mut out = format!(
        "experiment {}: {} customers from {} exposures; transactions to {}\n",
        r.experiment, r.customers, r.exposures, r.log_end
    );
    if r.incomplete > 0 {
        out += &format!(
            "left out {} customers whose outcome window ends after the log\n",
            r.incomplete
        );
    }
    if r.switched_arms > 0 {
        out += &format!(
            "warning: {} customers were exposed in more than one arm; each counts in its first\n",
            r.switched_arms
        );
    }
    out += &format!(
        "figures: estimate [{pct:.0}% bootstrap interval, {} resamples of customers]\n\n",
        r.bootstrap
    );
    let rows: Vec<Vec<String>> = r
        .arms
        .iter()
        .map(|a| {
            vec![
                a.arm.clone(),
                if a.versions.is_empty() {
                    "-".into()
                } else {
                    a.versions.join(",")
                },
                a.customers.to_string(),
                e(&a.realised_churn_rate, 3),
                opt(&a.churn_roc_auc, 3),
                opt(&a.churn_brier, 3),
                opt(&a.churn_calibration_gap, 3),
                opt(&a.clv_mae, 2),
                opt(&a.clv_bias, 2),
            ]
        })
        .collect();
    out += &super::report::table(
        &[
            "ARM",
            "VERSION",
            "CUSTOMERS",
            "REALISED CHURN",
            "CHURN ROC-AUC",
            "BRIER",
            "CALIBRATION GAP",
            "CLV MAE",
            "CLV BIAS",
        ],
        &rows,
    );
    out += "\n";
    for c in &r.comparisons {
        let verdict = match c.leader(r.confidence) {
            Some((arm, p)) => format!("{arm} is ahead ({:.1}% of resamples)", p * 100.0),
            None => format!(
                "no clear leader ({} better in {:.1}% of resamples)",
                c.arm,
                c.p_better * 100.0
            ),
        };
        out += &format!(
            "{} {} vs {}: difference {} ({} is better): {}\n",
            c.metric,
            c.arm,
            c.control,
            e(&c.difference, 4),
            if c.higher_is_better {
                "higher"
            } else {
                "lower"
            },
            verdict
        );
    }
    out
}
