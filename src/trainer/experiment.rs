//! The read-out of an A/B experiment: exposures joined with what customers did afterwards.
//!
//! Each customer counts once, at their first exposure (the arm is sticky, so later ones
//! repeat it). The outcome window is `[as_of, as_of + horizon)`: no purchase in it is a
//! realised churn, the spend in it is the realised CLV. Customers are joined by the keyed
//! hash, so the read-out needs the key the server used, never raw ids in the log.
//! Uncertainty comes from a bootstrap over customers within each arm.

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::eval::roc_auc;
use super::load::{LogRow, TransactionLog};
use crate::exposure::{CustomerKey, Exposure};
use crate::features::DAY;
use crate::registry::HOLDOUT_ARM;
use crate::time::fmt_day;

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
    #[error("none of the {exposed} exposed customers is in the transactions: the exposure key is probably not the one the server hashed ids with (its --exposure-key; here LOYALSCORE_EXPOSURE_KEY or --exposure-key), or the transactions are another programme's")]
    NoExposedCustomerFound { exposed: usize },
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
    /// Calibration and gains of the arm's scores (scored arms only): the page's plots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curves: Option<ArmCurves>,
}

/// What the read-out page draws per arm.
#[derive(Debug, Clone, Serialize)]
pub struct ArmCurves {
    /// Ten bins of predicted churn: mean prediction against the realised rate.
    pub calibration: Vec<crate::model::CalibrationBin>,
    /// Deciles by predicted churn: the share of the arm's churners among them.
    pub churn_gains: Vec<crate::model::Gain>,
    /// Deciles by predicted CLV: the share of the arm's realised spend.
    pub clv_gains: Vec<crate::model::Gain>,
}

impl ArmCurves {
    /// The curves of the rows that were scored; `None` for an arm without scores.
    fn of(rows: &[Row]) -> Option<Self> {
        let scored: Vec<&Row> = rows.iter().filter(|r| r.churn_p.is_some()).collect();
        if scored.is_empty() {
            return None;
        }
        let p: Vec<f64> = scored.iter().filter_map(|r| r.churn_p).collect();
        let churned: Vec<bool> = scored.iter().map(|r| r.churned).collect();
        let y: Vec<f64> = churned.iter().map(|&c| f64::from(u8::from(c))).collect();
        let clv: Vec<f64> = scored.iter().map(|r| r.clv.unwrap_or(0.0)).collect();
        let spend: Vec<f64> = scored.iter().map(|r| r.spend).collect();
        Some(ArmCurves {
            calibration: super::eval::churn_metrics(&p, &churned).calibration,
            churn_gains: super::curves::gains(&p, &y),
            clv_gains: super::curves::gains(&clv, &spend),
        })
    }
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
    /// Share in which it is worse; resamples with no difference count for neither, so a
    /// difference of exactly zero is never a win.
    pub p_worse: f64,
    pub higher_is_better: bool,
}

impl Comparison {
    /// The arm ahead and how sure: `None` when neither wins in at least `confidence` of the
    /// resamples.
    pub fn leader(&self, confidence: f64) -> Option<(&str, f64)> {
        if self.p_better >= confidence {
            Some((&self.arm, self.p_better))
        } else if self.p_worse >= confidence {
            Some((&self.control, self.p_worse))
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
    let name = experiment_name(exposures, experiment)?;
    let firsts = FirstExposures::of(exposures, &name)?;
    let joined = join_outcomes(exposures, &firsts, log, key)?;
    let names = arm_order(&joined.arms);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let samples: Vec<ArmSamples> = names
        .iter()
        .map(|n| ArmSamples::draw(n, &joined.arms[n], opts.bootstrap, &mut rng))
        .collect();
    Ok(ExperimentReport {
        experiment: name,
        exposures: firsts.n_exposures,
        customers: firsts.first.len(),
        switched_arms: firsts.switched,
        incomplete: joined.incomplete,
        log_end: fmt_day(joined.log_end),
        confidence: opts.confidence,
        bootstrap: opts.bootstrap,
        arms: samples.iter().map(|a| a.report(opts.confidence)).collect(),
        comparisons: compare_to_control(&samples, opts.confidence),
    })
}

/// The experiment to read out: the one asked for, or the only one in the exposures.
fn experiment_name(exposures: &[Exposure], asked: Option<&str>) -> Result<String, ReportError> {
    if let Some(e) = asked {
        return Ok(e.to_string());
    }
    let mut names: Vec<&str> = exposures.iter().map(|e| e.experiment.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    match names[..] {
        [] => Err(ReportError::NoExposures(None)),
        [one] => Ok(one.to_string()),
        _ => Err(ReportError::Ambiguous(names.join(", "))),
    }
}

/// Each customer's first exposure in the experiment; later ones only tell whether the arm
/// ever changed.
struct FirstExposures<'a> {
    /// Customer hash to (as_of, index of the exposure).
    first: HashMap<&'a str, (i64, usize)>,
    n_exposures: usize,
    switched: usize,
}

impl<'a> FirstExposures<'a> {
    fn of(exposures: &'a [Exposure], name: &str) -> Result<Self, ReportError> {
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
            return Err(ReportError::NoExposures(Some(name.to_string())));
        }
        let mut switched: HashSet<&str> = HashSet::new();
        for e in exposures.iter().filter(|e| e.experiment == name) {
            let (_, fi) = first[e.customer.as_str()];
            if exposures[fi].arm != e.arm {
                switched.insert(e.customer.as_str());
            }
        }
        Ok(FirstExposures {
            first,
            n_exposures,
            switched: switched.len(),
        })
    }
}

/// Per arm, the customers' rows and the versions that answered.
type Arms = HashMap<String, (Vec<Row>, Vec<String>)>;

struct Joined {
    arms: Arms,
    incomplete: usize,
    log_end: i64,
}

/// Each first exposure joined with the customer's purchases in `[as_of, as_of + horizon)`.
fn join_outcomes(
    exposures: &[Exposure],
    firsts: &FirstExposures,
    log: &TransactionLog,
    key: &CustomerKey,
) -> Result<Joined, ReportError> {
    let by_hash: HashMap<String, usize> = (0..log.n_customers())
        .map(|c| (key.hash(&log.ids[c]), c))
        .collect();
    let log_end = (0..log.n_customers())
        .filter_map(|c| log.customer(c).last().map(|r| r.ts))
        .max()
        .unwrap_or(i64::MIN);
    let mut arms = Arms::new();
    let mut incomplete = 0;
    let mut found = 0;
    let mut first_end = i64::MAX;
    let mut order: Vec<(&str, &(i64, usize))> = firsts.first.iter().map(|(k, v)| (*k, v)).collect();
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
        let window: &[LogRow] = match by_hash.get(cust) {
            Some(&c) => {
                found += 1;
                &log.history(c, end)[log.history(c, as_of).len()..]
            }
            None => &[],
        };
        let slot = arms.entry(e.arm.clone()).or_default();
        if !e.version.is_empty() && !slot.1.contains(&e.version) {
            slot.1.push(e.version.clone());
        }
        slot.0.push(Row {
            churn_p: e.churn_probability,
            clv: e.clv,
            churned: window.is_empty(),
            spend: window.iter().map(|r| r.amount).sum(),
        });
    }
    if arms.is_empty() {
        return Err(ReportError::NoCompleteWindow {
            log_end: fmt_day(log_end),
            first_end: fmt_day(first_end),
        });
    }
    // Every exposed customer bought at least once before being scored, so a log that holds
    // none of them was joined under the wrong key: everyone would look churned.
    if found == 0 {
        return Err(ReportError::NoExposedCustomerFound {
            exposed: firsts.first.len() - incomplete,
        });
    }
    Ok(Joined {
        arms,
        incomplete,
        log_end,
    })
}

/// The control first (the arm called "control", else the largest scored arm), the holdout
/// last.
fn arm_order(arms: &Arms) -> Vec<String> {
    let mut names: Vec<String> = arms.keys().cloned().collect();
    names.sort_by_key(|n| {
        (
            n == HOLDOUT_ARM,
            n != "control",
            std::cmp::Reverse(arms[n].0.len()),
            n.clone(),
        )
    });
    names
}

/// One arm's figures on all its customers and on each bootstrap resample of them.
struct ArmSamples<'a> {
    name: &'a str,
    versions: &'a [String],
    customers: usize,
    curves: Option<ArmCurves>,
    point: Stats,
    replicates: Vec<Stats>,
}

impl<'a> ArmSamples<'a> {
    fn draw(
        name: &'a str,
        (rows, versions): &'a (Vec<Row>, Vec<String>),
        bootstrap: usize,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let replicates = (0..bootstrap)
            .map(|_| {
                let idx: Vec<usize> = (0..rows.len())
                    .map(|_| rng.random_range(0..rows.len()))
                    .collect();
                Stats::of(rows, Some(&idx))
            })
            .collect();
        ArmSamples {
            name,
            versions,
            customers: rows.len(),
            curves: ArmCurves::of(rows),
            point: Stats::of(rows, None),
            replicates,
        }
    }

    fn estimate(&self, f: &dyn Fn(&Stats) -> Option<f64>, confidence: f64) -> Option<Estimate> {
        let value = f(&self.point)?;
        let mut v: Vec<f64> = self.replicates.iter().filter_map(f).collect();
        let (low, high) = interval(&mut v, confidence);
        Some(Estimate { value, low, high })
    }

    fn report(&self, confidence: f64) -> ArmReport {
        let est = |f: &dyn Fn(&Stats) -> Option<f64>| self.estimate(f, confidence);
        ArmReport {
            arm: self.name.to_string(),
            versions: self.versions.to_vec(),
            customers: self.customers,
            realised_churn_rate: est(&|s| Some(s.churn_rate)).unwrap_or(zero()),
            realised_spend_mean: est(&|s| Some(s.spend_mean)).unwrap_or(zero()),
            churn_roc_auc: est(&|s| s.auc),
            churn_brier: est(&|s| s.brier),
            churn_calibration_gap: est(&|s| s.calibration_gap),
            churn_ece: self.point.ece,
            clv_mae: est(&|s| s.clv_mae),
            clv_bias: est(&|s| s.clv_bias),
            curves: self.curves.clone(),
        }
    }
}

/// Every scored arm against the control (the first), metric by metric.
fn compare_to_control(arms: &[ArmSamples], confidence: f64) -> Vec<Comparison> {
    let metrics: [(&'static str, bool, Figure); 4] = [
        ("churn_roc_auc", true, |s| s.auc),
        ("churn_brier", false, |s| s.brier),
        ("clv_mae", false, |s| s.clv_mae),
        ("realised_churn_rate", false, |s| Some(s.churn_rate)),
    ];
    let Some((control, others)) = arms.split_first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for other in others {
        for (metric, higher, f) in metrics {
            let (Some(a), Some(c)) = (f(&other.point), f(&control.point)) else {
                continue;
            };
            // Arms hold different customers: independent resamples, paired by replicate.
            let mut diffs: Vec<f64> = other
                .replicates
                .iter()
                .zip(&control.replicates)
                .filter_map(|(x, y)| Some(f(x)? - f(y)?))
                .collect();
            let share = |pred: &dyn Fn(f64) -> bool| {
                diffs.iter().filter(|&&d| pred(d)).count() as f64 / diffs.len().max(1) as f64
            };
            let (better, worse) = if higher {
                (share(&|d| d > 0.0), share(&|d| d < 0.0))
            } else {
                (share(&|d| d < 0.0), share(&|d| d > 0.0))
            };
            let (low, high) = interval(&mut diffs, confidence);
            out.push(Comparison {
                metric,
                arm: other.name.to_string(),
                control: control.name.to_string(),
                difference: Estimate {
                    value: a - c,
                    low,
                    high,
                },
                p_better: better,
                p_worse: worse,
                higher_is_better: higher,
            });
        }
    }
    out
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
    out += &arms_table(&r.arms);
    out += "\n";
    for c in &r.comparisons {
        out += &comparison_line(c, r.confidence);
    }
    out
}

fn estimate(x: &Estimate, d: usize) -> String {
    format!("{:.d$} [{:.d$}, {:.d$}]", x.value, x.low, x.high)
}

fn arms_table(arms: &[ArmReport]) -> String {
    let opt = |x: &Option<Estimate>, d: usize| x.as_ref().map_or("-".into(), |x| estimate(x, d));
    let rows: Vec<Vec<String>> = arms
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
                estimate(&a.realised_churn_rate, 3),
                opt(&a.churn_roc_auc, 3),
                opt(&a.churn_brier, 3),
                opt(&a.churn_calibration_gap, 3),
                opt(&a.clv_mae, 2),
                opt(&a.clv_bias, 2),
            ]
        })
        .collect();
    super::report::table(
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
    )
}

fn comparison_line(c: &Comparison, confidence: f64) -> String {
    let verdict = match c.leader(confidence) {
        Some((arm, p)) => format!("{arm} is ahead ({:.1}% of resamples)", p * 100.0),
        None => format!(
            "no clear leader ({} better in {:.1}% of resamples)",
            c.arm,
            c.p_better * 100.0
        ),
    };
    format!(
        "{} {} vs {}: difference {} ({} is better): {}\n",
        c.metric,
        c.arm,
        c.control,
        estimate(&c.difference, 4),
        if c.higher_is_better {
            "higher"
        } else {
            "lower"
        },
        verdict
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparison(p_better: f64, p_worse: f64) -> Comparison {
        Comparison {
            metric: "realised_churn_rate",
            arm: "challenger".into(),
            control: "control".into(),
            difference: zero(),
            p_better,
            p_worse,
            higher_is_better: false,
        }
    }

    #[test]
    fn a_difference_of_exactly_zero_is_never_a_win() {
        // Every resample equal (both arms at churn 1.000, say): no leader, either way.
        assert_eq!(comparison(0.0, 0.0).leader(0.95), None);
        assert_eq!(
            comparison(0.97, 0.0).leader(0.95),
            Some(("challenger", 0.97))
        );
        assert_eq!(comparison(0.01, 0.96).leader(0.95), Some(("control", 0.96)));
        assert_eq!(comparison(0.04, 0.5).leader(0.95), None);
    }
}
