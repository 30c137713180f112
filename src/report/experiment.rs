//! The A/B read-out as a page (`experiment-report --html`): the arms' figures with their
//! intervals, calibration and gains per arm, and every difference from the control as a
//! forest plot.

use super::plots::{forest_plot, ForestPlot, Line, PlotError, PALETTE};
use super::{
    calibration_chart, figure, gains_chart, gains_line, page_start, reliability, table, PAGE_END,
};
use crate::trainer::experiment::{ArmCurves, ArmReport, Estimate, ExperimentReport};

fn est(e: Option<Estimate>) -> String {
    e.map_or_else(
        || "-".to_string(),
        |e| format!("{:.3} [{:.3}, {:.3}]", e.value, e.low, e.high),
    )
}

pub fn page(r: &ExperimentReport) -> Result<String, PlotError> {
    let mut s = page_start(&format!("loyalscore experiment {}", r.experiment));
    s.push_str(&format!(
        "<p>{} customers from {} exposures; transactions to {}; {} % intervals from {} bootstrap resamples; {} customers switched arms, {} left out (outcome window not over).</p>\n",
        r.customers, r.exposures, r.log_end, r.confidence * 100.0, r.bootstrap, r.switched_arms, r.incomplete
    ));
    s.push_str(&arms_table(&r.arms));
    s.push_str(&comparisons(r)?);
    s.push_str("<h2>Per arm</h2>\n<div class=\"row\">");
    s.push_str(&calibration(&r.arms)?);
    s.push_str(&gains(
        &r.arms,
        "churn",
        |c| &c.churn_gains,
        "share of churners",
    )?);
    s.push_str(&gains(
        &r.arms,
        "CLV",
        |c| &c.clv_gains,
        "share of realised spend",
    )?);
    s.push_str("</div>\n");
    s.push_str(PAGE_END);
    Ok(s)
}

fn arms_table(arms: &[ArmReport]) -> String {
    let header: Vec<String> = [
        "arm",
        "versions",
        "customers",
        "realised churn",
        "mean spend",
        "churn ROC-AUC",
        "churn Brier",
        "calibration gap",
        "CLV MAE",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    let rows: Vec<Vec<String>> = arms
        .iter()
        .map(|a| {
            vec![
                a.arm.clone(),
                a.versions.join(", "),
                a.customers.to_string(),
                est(Some(a.realised_churn_rate)),
                est(Some(a.realised_spend_mean)),
                est(a.churn_roc_auc),
                est(a.churn_brier),
                est(a.churn_calibration_gap),
                est(a.clv_mae),
            ]
        })
        .collect();
    format!("<h2>Arms</h2>\n{}", table(&header, &rows))
}

/// The differences from the control: a table and one forest plot per metric (their scales
/// differ).
fn comparisons(r: &ExperimentReport) -> Result<String, PlotError> {
    let mut s = String::from("<h2>Against the control</h2>\n<div class=\"row\">");
    let mut metrics: Vec<&str> = Vec::new();
    for c in &r.comparisons {
        if !metrics.contains(&c.metric) {
            metrics.push(c.metric);
        }
    }
    for m in metrics {
        let rows = r
            .comparisons
            .iter()
            .filter(|c| c.metric == m)
            .map(|c| {
                let d = c.difference;
                (format!("{} - {}", c.arm, c.control), d.value, d.low, d.high)
            })
            .collect();
        let svg = forest_plot(&ForestPlot {
            title: m,
            x_desc: "difference (arm minus control)",
            rows,
        })?;
        s.push_str(&figure(
            &format!("diff-{m}"),
            &svg,
            &format!(
                "{m}: the difference and its interval; an interval clear of 0 is a difference."
            ),
        ));
    }
    s.push_str("</div>\n");
    let rows: Vec<Vec<String>> = r
        .comparisons
        .iter()
        .map(|c| {
            vec![
                format!("{} {} vs {}", c.metric, c.arm, c.control),
                est(Some(c.difference)),
                format!("{:.3}", c.p_better),
                format!("{:.3}", c.p_worse),
            ]
        })
        .collect();
    let header = ["comparison", "difference", "P(better)", "P(worse)"].map(String::from);
    s.push_str(&table(&header, &rows));
    Ok(s)
}

fn calibration(arms: &[ArmReport]) -> Result<String, PlotError> {
    let lines = arm_lines(arms, |c| reliability(&c.calibration));
    let svg = calibration_chart("Calibration by arm", lines)?;
    Ok(figure(
        "arm-calibration",
        &svg,
        "Ten probability bins per arm; on the diagonal is well calibrated.",
    ))
}

/// A line per scored arm.
fn arm_lines(arms: &[ArmReport], points: impl Fn(&ArmCurves) -> Vec<(f64, f64)>) -> Vec<Line> {
    arms.iter()
        .enumerate()
        .filter_map(|(i, a)| {
            Some(Line {
                name: a.arm.clone(),
                points: points(a.curves.as_ref()?),
                colour: PALETTE[i % PALETTE.len()],
                dots: true,
            })
        })
        .collect()
}

fn gains(
    arms: &[ArmReport],
    what: &str,
    get: fn(&ArmCurves) -> &[crate::model::Gain],
    sought: &str,
) -> Result<String, PlotError> {
    let svg = gains_chart(
        &format!("Cumulative gains by arm: {what}"),
        "share of the arm's customers targeted (by score)",
        sought,
        arm_lines(arms, |c| gains_line(get(c))),
    )?;
    Ok(figure(
        &format!("arm-gains-{what}"),
        &svg,
        &format!(
            "Within each arm, the top deciles by its predicted {what}: the {sought} they hold."
        ),
    ))
}
