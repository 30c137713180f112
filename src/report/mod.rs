//! Reports for people, as one self-contained HTML file each: inline SVG charts (plotters),
//! inline CSS, no script and nothing fetched. [`version_page`] draws a version's training
//! report (or two versions side by side); `experiment` draws an A/B read-out.

pub mod experiment;
mod plots;

use std::fmt::Write;

use crate::model::{ChurnMetrics, ClvMetrics, Evaluation, Manifest};
pub use plots::PlotError;
use plots::{bar_chart, line_chart, BarChart, Line, LineChart, PALETTE};

/// One version as a report sees it; `evaluation` is absent for versions fitted before
/// `evaluation.json` existed (their curves are not recorded).
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub manifest: &'a Manifest,
    pub evaluation: Option<&'a Evaluation>,
}

/// Text made safe for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;\
text-align:right;font-size:13px}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}\
.row{display:flex;flex-wrap:wrap;gap:12px}figure.plot{margin:0}figcaption{font-size:12px;color:#555;\
max-width:520px}.note{color:#666;font-size:13px}";

/// The start of a page, with its title.
pub fn page_start(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    )
}

pub const PAGE_END: &str = "</body></html>\n";

/// A chart in a figure the page and its tests can find (`figure.plot`).
pub fn figure(id: &str, svg: &str, caption: &str) -> String {
    format!(
        "<figure class=\"plot\" id=\"{}\">{svg}<figcaption>{}</figcaption></figure>\n",
        escape(id),
        escape(caption)
    )
}

/// An HTML table; the first column is the row's name.
pub fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><tr>");
    for h in header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", escape(c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>\n");
    s
}

fn f3(v: f64) -> String {
    format!("{v:.3}")
}

fn name(s: &Side, i: usize, many: bool) -> String {
    if many {
        format!("{} ({})", s.manifest.version, ["A", "B"][i.min(1)])
    } else {
        s.manifest.version.clone()
    }
}

/// Ten probability bins' mean prediction against the observed rate (empty bins left out).
fn reliability(bins: &[crate::model::CalibrationBin]) -> Vec<(f64, f64)> {
    bins.iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.mean_predicted, b.observed_rate))
        .collect()
}

/// A reliability chart, a line per model or arm; on the diagonal is well calibrated.
fn calibration_chart(title: &str, lines: Vec<Line>) -> Result<String, PlotError> {
    line_chart(&LineChart {
        title,
        x_desc: "mean predicted churn",
        y_desc: "observed churn rate",
        x: (0.0, 1.0),
        y: (0.0, 1.0),
        lines,
        marks: vec![],
        diagonal: true,
    })
}

/// A cumulative gains line, from the origin.
fn gains_line(gains: &[crate::model::Gain]) -> Vec<(f64, f64)> {
    std::iter::once((0.0, 0.0))
        .chain(gains.iter().map(|g| (g.targeted, g.captured)))
        .collect()
}

/// A cumulative gains chart, a line per model or arm; the diagonal is random targeting.
fn gains_chart(
    title: &str,
    x_desc: &str,
    sought: &str,
    lines: Vec<Line>,
) -> Result<String, PlotError> {
    line_chart(&LineChart {
        title,
        x_desc,
        y_desc: sought,
        x: (0.0, 1.0),
        y: (0.0, 1.0),
        lines,
        marks: vec![],
        diagonal: true,
    })
}

/// A version's training report, or (with `b`) two versions side by side.
pub fn version_page(a: Side, b: Option<Side>) -> Result<String, PlotError> {
    let sides: Vec<Side> = std::iter::once(a).chain(b).collect();
    let title = match b {
        Some(b) => format!(
            "loyalscore: {} against {}",
            a.manifest.version, b.manifest.version
        ),
        None => format!("loyalscore version {}", a.manifest.version),
    };
    let mut s = page_start(&title);
    s.push_str(&summary(&sides));
    s.push_str(&churn_section(&sides)?);
    s.push_str(&clv_section(&sides)?);
    s.push_str(&importance_section(&sides)?);
    s.push_str(&segments_section(&sides));
    s.push_str(&histogram_section(&sides)?);
    s.push_str(&quality_section(&sides));
    s.push_str(PAGE_END);
    Ok(s)
}

/// A labelled fact of a version.
type Fact = (&'static str, fn(&Manifest) -> String);
/// A labelled metric.
type Measure<T> = (&'static str, fn(&T) -> f64);
/// Id, title, value axis and value of one importance chart.
type ImportanceChart = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::model::Importance) -> f64,
);

/// Lineage, split and the headline metrics against the baselines.
fn summary(sides: &[Side]) -> String {
    let many = sides.len() > 1;
    let mut s = String::from("<h2>Version and data</h2>\n");
    let mut header = vec![String::new()];
    header.extend(sides.iter().enumerate().map(|(i, v)| name(v, i, many)));
    let facts: [Fact; 10] = [
        ("created", |m| m.created_at.clone()),
        ("trainer", |m| m.trainer.version.clone()),
        ("data", |m| m.data.source.clone()),
        ("data sha256", |m| m.data.sha256.chars().take(16).collect()),
        ("purchases", |m| {
            format!("{} to {}", m.data.first_purchase, m.data.last_purchase)
        }),
        ("rows read / rejected / duplicate", |m| {
            format!(
                "{} / {} / {}",
                m.data.rows_read, m.data.rows_rejected, m.data.rows_duplicate
            )
        }),
        ("customers", |m| m.data.customers.to_string()),
        ("validation as of", |m| {
            format!(
                "{} ({} rows, horizon {} days)",
                m.split.validation_as_of, m.split.validation_rows, m.split.horizon_days
            )
        }),
        ("trees (churn, CLV)", |m| {
            format!(
                "{}, {}",
                m.hyperparameters.churn.n_trees, m.hyperparameters.clv.n_trees
            )
        }),
        ("beats its baselines", |m| m.beats_baselines.to_string()),
    ];
    let rows: Vec<Vec<String>> = facts
        .iter()
        .map(|(label, f)| {
            std::iter::once(label.to_string())
                .chain(sides.iter().map(|v| f(v.manifest)))
                .collect()
        })
        .collect();
    s.push_str(&table(&header, &rows));
    s.push_str(&metrics_table(sides));
    s
}

fn metrics_table(sides: &[Side]) -> String {
    let many = sides.len() > 1;
    let mut header = vec!["metric (validation rows)".to_string()];
    for (i, v) in sides.iter().enumerate() {
        header.push(name(v, i, many));
        header.push(format!(
            "baseline{}",
            if many {
                format!(" ({})", ["A", "B"][i])
            } else {
                String::new()
            }
        ));
    }
    let churn: [Measure<ChurnMetrics>; 5] = [
        ("churn ROC-AUC", |c| c.roc_auc),
        ("churn PR-AUC", |c| c.pr_auc),
        ("churn Brier", |c| c.brier),
        ("churn ECE", |c| c.ece),
        ("churn top-decile lift", |c| c.top_decile_lift),
    ];
    let clv: [Measure<ClvMetrics>; 4] = [
        ("CLV Spearman", |c| c.spearman),
        ("CLV normalised Gini", |c| c.normalized_gini),
        ("CLV MAE", |c| c.mae),
        ("CLV top-decile capture", |c| c.top_decile_capture),
    ];
    let mut rows = Vec::new();
    for (label, f) in churn {
        let mut r = vec![label.to_string()];
        for v in sides {
            let m = &v.manifest.metrics;
            r.extend([f3(f(&m.churn)), f3(f(&m.churn_baseline))]);
        }
        rows.push(r);
    }
    for (label, f) in clv {
        let mut r = vec![label.to_string()];
        for v in sides {
            let m = &v.manifest.metrics;
            r.extend([f3(f(&m.clv)), f3(f(&m.clv_baseline))]);
        }
        rows.push(r);
    }
    let mut s = table(&header, &rows);
    s.push_str(
        "<p class=\"note\">Baselines: churn is \"no purchase for 90 days\" (calibrated on the \
        training rows), CLV is \"the spend of the last horizon repeats\". Curves below are the \
        evaluated forests (fitted on the training rows) on the validation rows; the published \
        forests are the same recipe refitted on the latest labelled data.</p>\n",
    );
    s
}

/// Curves need the evaluation file; a version without one says so.
fn with_evaluation<'a>(sides: &[Side<'a>]) -> Vec<(usize, &'a Evaluation)> {
    sides
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.evaluation.map(|e| (i, e)))
        .collect()
}

fn missing_note(sides: &[Side]) -> String {
    let mut s = String::new();
    for v in sides.iter().filter(|v| v.evaluation.is_none()) {
        let _ = writeln!(
            s,
            "<p class=\"note\">{}: curves not recorded (fitted before versions kept evaluation.json).</p>",
            escape(&v.manifest.version)
        );
    }
    s
}

fn xy(points: &[[f64; 2]]) -> Vec<(f64, f64)> {
    points.iter().map(|p| (p[0], p[1])).collect()
}

fn churn_section(sides: &[Side]) -> Result<String, PlotError> {
    let ev = with_evaluation(sides);
    let mut s = String::from("<h2>Churn</h2>\n");
    s.push_str(&missing_note(sides));
    s.push_str("<div class=\"row\">");
    let roc = Curve {
        id: "roc",
        title: "ROC curve",
        x_desc: "false positive rate",
        y_desc: "true positive rate",
        get: |e| &e.roc,
        rule: |e| (e.rule.fpr, e.rule.tpr),
        caption: "Calibrated churn probability on the validation rows; the dot is the 90-day rule.",
    };
    s.push_str(&curve_figure(&ev, sides, roc)?);
    let pr = Curve {
        id: "pr",
        title: "Precision-recall",
        x_desc: "recall",
        y_desc: "precision",
        get: |e| &e.pr,
        rule: |e| (e.rule.tpr, e.rule.precision),
        caption: "Precision against recall; the dot is the 90-day rule.",
    };
    s.push_str(&curve_figure(&ev, sides, pr)?);
    s.push_str(&calibration_figure(sides)?);
    s.push_str(&gains_figures(
        &ev,
        sides,
        "churn",
        |e| &e.churn_gains,
        "share of churners",
    )?);
    s.push_str("</div>\n");
    Ok(s)
}

/// A curve of the churn score with the 90-day rule's point.
struct Curve {
    id: &'static str,
    title: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    get: fn(&Evaluation) -> &[[f64; 2]],
    rule: fn(&Evaluation) -> (f64, f64),
    caption: &'static str,
}

fn curve_figure(
    ev: &[(usize, &Evaluation)],
    sides: &[Side],
    c: Curve,
) -> Result<String, PlotError> {
    let many = sides.len() > 1;
    let rule_name = |i: usize| match many {
        true => format!("90-day rule ({})", ["A", "B"][i]),
        false => "90-day rule".to_string(),
    };
    let svg = line_chart(&LineChart {
        title: c.title,
        x_desc: c.x_desc,
        y_desc: c.y_desc,
        x: (0.0, 1.0),
        y: (0.0, 1.0),
        lines: ev
            .iter()
            .map(|&(i, e)| Line {
                name: name(&sides[i], i, many),
                points: xy((c.get)(e)),
                colour: PALETTE[i],
                dots: false,
            })
            .collect(),
        marks: ev
            .iter()
            .map(|&(i, e)| (rule_name(i), (c.rule)(e), PALETTE[3 + i]))
            .collect(),
        diagonal: c.id == "roc",
    })?;
    Ok(figure(c.id, &svg, c.caption))
}

/// Reliability before and after calibration, per version.
fn calibration_figure(sides: &[Side]) -> Result<String, PlotError> {
    let many = sides.len() > 1;
    let mut lines = Vec::new();
    for (i, v) in sides.iter().enumerate() {
        let m = &v.manifest.metrics;
        if let Some(raw) = &m.churn_uncalibrated {
            lines.push(Line {
                name: format!("{} before", name(v, i, many)),
                points: reliability(&raw.calibration),
                colour: PALETTE[2 + 2 * i],
                dots: true,
            });
        }
        lines.push(Line {
            name: format!("{} after", name(v, i, many)),
            points: reliability(&m.churn.calibration),
            colour: PALETTE[i],
            dots: true,
        });
    }
    let svg = calibration_chart("Calibration", lines)?;
    Ok(figure(
        "calibration",
        &svg,
        "Ten probability bins, before and after calibration; on the diagonal is well calibrated.",
    ))
}

/// The points a gains or lift line takes from the deciles.
type GainsPoints = dyn Fn(&[crate::model::Gain]) -> Vec<(f64, f64)>;

/// Cumulative gains and lift by decile.
fn gains_figures(
    ev: &[(usize, &Evaluation)],
    sides: &[Side],
    what: &str,
    get: fn(&Evaluation) -> &[crate::model::Gain],
    sought: &str,
) -> Result<String, PlotError> {
    let many = sides.len() > 1;
    let series = |points: &GainsPoints| -> Vec<Line> {
        ev.iter()
            .map(|&(i, e)| Line {
                name: name(&sides[i], i, many),
                points: points(get(e)),
                colour: PALETTE[i],
                dots: true,
            })
            .collect()
    };
    let g = gains_chart(
        &format!("Cumulative gains: {what}"),
        "share of customers targeted (by score)",
        sought,
        series(&gains_line),
    )?;
    let lift_top = ev
        .iter()
        .flat_map(|(_, e)| get(e).iter().map(|g| g.lift))
        .fold(1.0f64, f64::max);
    let l = line_chart(&LineChart {
        title: &format!("Lift by decile: {what}"),
        x_desc: "share of customers targeted (by score)",
        y_desc: "lift over random",
        x: (0.0, 1.0),
        y: (0.0, lift_top * 1.1),
        lines: series(&|g| g.iter().map(|g| (g.targeted, g.lift)).collect()),
        marks: vec![],
        diagonal: false,
    })?;
    Ok(figure(&format!("gains-{what}"), &g, &format!("Targeting the top deciles by predicted {what}: the share of {sought} reached; the diagonal is random."))
        + &figure(&format!("lift-{what}"), &l, "Cumulative lift: the share reached over the share targeted."))
}

fn clv_section(sides: &[Side]) -> Result<String, PlotError> {
    let many = sides.len() > 1;
    let ev = with_evaluation(sides);
    let mut s = String::from("<h2>Customer lifetime value</h2>\n<div class=\"row\">");
    s.push_str(&gains_figures(
        &ev,
        sides,
        "CLV",
        |e| &e.clv_gains,
        "share of realised spend",
    )?);
    let top = ev
        .iter()
        .flat_map(|(_, e)| {
            e.clv_bins
                .iter()
                .flat_map(|b| [b.mean_predicted, b.mean_realised])
        })
        .fold(0.0f64, f64::max);
    let chart = line_chart(&LineChart {
        title: "Predicted against realised CLV",
        x_desc: "mean predicted CLV (per twentieth)",
        y_desc: "mean realised spend",
        x: (0.0, top * 1.05),
        y: (0.0, top * 1.05),
        lines: ev
            .iter()
            .map(|&(i, e)| Line {
                name: name(&sides[i], i, many),
                points: e
                    .clv_bins
                    .iter()
                    .map(|b| (b.mean_predicted, b.mean_realised))
                    .collect(),
                colour: PALETTE[i],
                dots: true,
            })
            .collect(),
        marks: vec![],
        diagonal: true,
    })?;
    s.push_str(&figure(
        "clv-calibration",
        &chart,
        "Rows cut into twentieths by predicted CLV: mean prediction against mean realised spend over the horizon.",
    ));
    s.push_str("</div>\n");
    Ok(s)
}

/// Both importances of both forests: one chart per forest and measure, a bar per version.
fn importance_section(sides: &[Side]) -> Result<String, PlotError> {
    let many = sides.len() > 1;
    let ev = with_evaluation(sides);
    let mut s = String::from("<h2>What drives the forests</h2>\n<div class=\"row\">");
    let Some((_, first)) = ev.first() else {
        return Ok(s + "</div>\n");
    };
    let categories: Vec<String> = first.importance.iter().map(|i| i.feature.clone()).collect();
    let charts: [ImportanceChart; 4] = [
        (
            "imp-churn-mdi",
            "Churn: mean decrease in impurity",
            "share of the forest's total",
            |i| i.churn_mdi,
        ),
        (
            "imp-churn-attr",
            "Churn: mean |path attribution|",
            "probability (raw forest)",
            |i| i.churn_attribution,
        ),
        (
            "imp-clv-mdi",
            "CLV: mean decrease in impurity",
            "share of the forest's total",
            |i| i.clv_mdi,
        ),
        (
            "imp-clv-attr",
            "CLV: mean |path attribution|",
            "money",
            |i| i.clv_attribution,
        ),
    ];
    for (id, title, desc, f) in charts {
        // Largest first, by the first version: the reader looks at the top.
        let mut order: Vec<&String> = categories.iter().collect();
        let first_value = |c: &String| {
            first
                .importance
                .iter()
                .find(|x| &x.feature == c)
                .map_or(0.0, f)
        };
        order.sort_by(|a, b| first_value(b).total_cmp(&first_value(a)));
        let series = ev
            .iter()
            .map(|&(i, e)| {
                let value = |c: &&String| {
                    e.importance
                        .iter()
                        .find(|x| &x.feature == *c)
                        .map_or(0.0, f)
                };
                (
                    name(&sides[i], i, many),
                    order.iter().map(value).collect(),
                    PALETTE[i],
                )
            })
            .collect();
        let svg = bar_chart(&BarChart {
            title,
            value_desc: desc,
            categories: order.iter().map(|c| c.to_string()).collect(),
            series,
            horizontal: true,
        })?;
        s.push_str(&figure(
            id,
            &svg,
            "The published forests, on the rows they were refitted on.",
        ));
    }
    s.push_str("</div>\n");
    Ok(s)
}

fn segments_section(sides: &[Side]) -> String {
    let many = sides.len() > 1;
    let mut s = String::from("<h2>Segments on the validation rows</h2>\n<div class=\"row\">");
    for (i, v) in sides.iter().enumerate() {
        let header: Vec<String> = [
            name(v, i, many).as_str(),
            "rows",
            "share",
            "mean churn given",
            "realised churn",
            "mean spend",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect();
        let rows: Vec<Vec<String>> = v
            .manifest
            .segment_table
            .iter()
            .map(|r| {
                vec![
                    r.segment.clone(),
                    r.rows.to_string(),
                    format!("{:.1} %", r.share * 100.0),
                    f3(r.mean_churn),
                    f3(r.realised_churn),
                    format!("{:.2}", r.mean_spend),
                ]
            })
            .collect();
        s.push_str(&format!("<div>{}</div>", table(&header, &rows)));
    }
    s.push_str("</div>\n");
    s
}

/// The score histograms, one chart per version (bars of several versions would hide each other).
fn histogram_section(sides: &[Side]) -> Result<String, PlotError> {
    let many = sides.len() > 1;
    let mut s = String::from("<h2>Score distributions</h2>\n<div class=\"row\">");
    for (i, e) in with_evaluation(sides) {
        let who = name(&sides[i], i, many);
        for (id, h, what) in [
            ("hist-churn", &e.churn_histogram, "churn probability"),
            ("hist-clv", &e.clv_histogram, "predicted CLV"),
        ] {
            let categories = h.edges.windows(2).map(|w| format!("{:.2}", w[0])).collect();
            let series = h
                .groups
                .iter()
                .zip(&h.counts)
                .enumerate()
                .map(|(j, (g, c))| {
                    (
                        g.clone(),
                        c.iter().map(|&n| n as f64).collect(),
                        PALETTE[(i + j) % PALETTE.len()],
                    )
                })
                .collect();
            let svg = bar_chart(&BarChart {
                title: &format!("{what}: {who}"),
                value_desc: "customers",
                categories,
                series,
                horizontal: false,
            })?;
            s.push_str(&figure(
                &format!("{id}-{i}"),
                &svg,
                &format!("Validation rows by {what} (bins labelled by their lower edge)."),
            ));
        }
    }
    s.push_str("</div>\n");
    Ok(s)
}

fn quality_section(sides: &[Side]) -> String {
    let many = sides.len() > 1;
    let mut s = String::from("<h2>Data quality</h2>\n<div class=\"row\">");
    for (i, v) in sides.iter().enumerate() {
        let d = &v.manifest.data;
        let mut rows = vec![
            vec!["rows read".to_string(), d.rows_read.to_string()],
            vec!["rows rejected".to_string(), d.rows_rejected.to_string()],
        ];
        if let Some(e) = v.evaluation {
            rows.extend(
                e.rejected
                    .iter()
                    .map(|(r, n)| vec![format!("  {r}"), n.to_string()]),
            );
            rows.push(vec![
                "returns (kept, net spend)".to_string(),
                e.returns.to_string(),
            ]);
        }
        rows.push(vec![
            "duplicate rows (kept)".to_string(),
            d.rows_duplicate.to_string(),
        ]);
        rows.push(vec!["customers".to_string(), d.customers.to_string()]);
        s.push_str(&format!(
            "<div>{}</div>",
            table(&[name(v, i, many), "count".into()], &rows)
        ));
    }
    s.push_str("</div>\n");
    s
}
