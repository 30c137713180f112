//! What the trainer prints for people: the data-quality summary and the metrics table.

use std::fmt::Write;

use crate::model::{ChurnMetrics, ClvMetrics, Manifest, Metrics};

use super::load::DataQuality;
use crate::time::fmt_day;

pub fn data_quality(q: &DataQuality) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Data quality: {}", q.source);
    let _ = writeln!(s, "  read as            {}", q.dialect);
    let _ = writeln!(s, "  rows read        {:>12}", q.rows_read);
    let _ = writeln!(s, "  rows rejected    {:>12}", q.rows_rejected());
    for (reason, r) in &q.rejected {
        let lines: Vec<&str> = r
            .examples
            .iter()
            .filter_map(|e| e.split(':').next())
            .collect();
        let _ = writeln!(
            s,
            "    {:<20} {:>8}  (first at {})",
            reason.as_str(),
            r.count,
            lines.join(", ")
        );
        for e in r.examples.iter().take(3) {
            let _ = writeln!(s, "      {e}");
        }
    }
    let _ = writeln!(s, "  duplicate rows   {:>12}  (kept)", q.duplicates);
    let _ = writeln!(
        s,
        "  returns          {:>12}  (negative amounts: net spend)",
        q.returns
    );
    let _ = writeln!(s, "  customers        {:>12}", q.customers);
    if q.rows_ok > 0 {
        let _ = writeln!(
            s,
            "  date range         {} to {}",
            fmt_day(q.first_ts),
            fmt_day(q.last_ts)
        );
    }
    if !q.ignored_columns.is_empty() {
        let _ = writeln!(s, "  ignored columns    {}", q.ignored_columns.join(", "));
    }
    s
}

fn row(s: &mut String, name: &str, model: f64, base: f64, higher_is_better: bool) {
    let better = if higher_is_better {
        model > base
    } else {
        model < base
    };
    let _ = writeln!(
        s,
        "  {:<22} {:>12.4} {:>14.4}   {}",
        name,
        model,
        base,
        if better { "better" } else { "worse" }
    );
}

/// The candidate beside another version on the rows after that version's data ended.
pub fn comparison(c: &super::evaluate::Comparison, alias: &str, version: &str) -> String {
    use super::evaluate::Comparison;
    let mut s = String::new();
    match c {
        Comparison::NoFairRows {
            from,
            latest_validation,
        } => {
            let _ = writeln!(
                s,
                "vs {alias} ({version}): not compared: its data ends {from}, after the candidate's latest validation snapshot {latest_validation}; a fair comparison needs validation rows whose labels it has not seen (data through its end plus the horizon)"
            );
        }
        Comparison::Compared(c) => {
            let _ = writeln!(
                s,
                "vs {alias} ({version}) on the {} validation rows from {} (after its data ended):",
                c.rows, c.from
            );
            let _ = writeln!(s, "  {:<22} {:>12} {:>14}", "", "candidate", alias);
            let (a, b) = (&c.candidate, &c.other);
            row(
                &mut s,
                "churn ROC-AUC",
                a.churn.roc_auc,
                b.churn.roc_auc,
                true,
            );
            row(&mut s, "churn PR-AUC", a.churn.pr_auc, b.churn.pr_auc, true);
            row(&mut s, "churn Brier", a.churn.brier, b.churn.brier, false);
            row(&mut s, "CLV Spearman", a.clv.spearman, b.clv.spearman, true);
            row(&mut s, "CLV MAE", a.clv.mae, b.clv.mae, false);
        }
    }
    s
}

/// One table: each model's validation metrics next to its baseline's.
pub fn metrics_table(m: &Metrics) -> String {
    let mut s = String::new();
    let c: (&ChurnMetrics, &ChurnMetrics) = (&m.churn, &m.churn_baseline);
    let v: (&ClvMetrics, &ClvMetrics) = (&m.clv, &m.clv_baseline);
    let _ = writeln!(
        s,
        "  {:<22} {:>12} {:>14}",
        "churn (validation)", "forest", "90-day rule"
    );
    let _ = writeln!(s, "  {:<22} {:>12} {:>14}", "rows", c.0.rows, c.1.rows);
    let _ = writeln!(
        s,
        "  {:<22} {:>12.4} {:>14.4}",
        "churn rate", c.0.churn_rate, c.1.churn_rate
    );
    row(&mut s, "ROC-AUC", c.0.roc_auc, c.1.roc_auc, true);
    row(&mut s, "PR-AUC", c.0.pr_auc, c.1.pr_auc, true);
    row(&mut s, "Brier", c.0.brier, c.1.brier, false);
    row(&mut s, "log-loss", c.0.log_loss, c.1.log_loss, false);
    row(&mut s, "ECE (10 bins)", c.0.ece, c.1.ece, false);
    row(
        &mut s,
        "top-decile lift",
        c.0.top_decile_lift,
        c.1.top_decile_lift,
        true,
    );
    if let Some(raw) = &m.churn_uncalibrated {
        let _ = writeln!(
            s,
            "  calibration: Brier {:.4} -> {:.4}, ECE {:.4} -> {:.4} (raw forest -> calibrated)",
            raw.brier, c.0.brier, raw.ece, c.0.ece
        );
    }
    let _ = writeln!(
        s,
        "  {:<22} {:>12} {:>14}",
        "CLV (validation)", "forest", "last-H repeats"
    );
    let _ = writeln!(
        s,
        "  {:<22} {:>12.2} {:>14.2}",
        "mean actual", v.0.mean_actual, v.1.mean_actual
    );
    let _ = writeln!(
        s,
        "  {:<22} {:>12.2} {:>14.2}",
        "mean predicted", v.0.mean_predicted, v.1.mean_predicted
    );
    row(&mut s, "MAE", v.0.mae, v.1.mae, false);
    row(&mut s, "RMSE", v.0.rmse, v.1.rmse, false);
    row(&mut s, "Spearman", v.0.spearman, v.1.spearman, true);
    row(
        &mut s,
        "normalised Gini",
        v.0.normalized_gini,
        v.1.normalized_gini,
        true,
    );
    row(
        &mut s,
        "top-decile capture",
        v.0.top_decile_capture,
        v.1.top_decile_capture,
        true,
    );
    s
}

/// Split, hyper-parameters, the metrics table, the quarters and the segments of a version.
pub fn version_summary(m: &Manifest) -> String {
    let mut s = String::new();
    let sp = &m.split;
    let _ = writeln!(
        s,
        "Validation: {} at {} with a {}-day horizon ({} training rows from {} snapshot(s) every {} days, {} validation rows from {} snapshot(s))",
        sp.method,
        sp.validation_as_of,
        sp.horizon_days,
        sp.train_rows,
        sp.train_snapshots.len(),
        m.hyperparameters.snapshot_stride_days,
        sp.validation_rows,
        sp.validation_snapshots.len().max(1)
    );
    let hp = &m.hyperparameters;
    let depth = |d: Option<u16>| d.map_or("none".to_string(), |d| d.to_string());
    let _ = writeln!(
        s,
        "Forests ({} by {}): churn {} trees, max_depth {}, min_samples_leaf {}; CLV {} trees, max_depth {}, min_samples_leaf {}",
        if hp.selected_by == "grid" { "chosen" } else { "set" },
        hp.selected_by,
        hp.churn.n_trees,
        depth(hp.churn.max_depth),
        hp.churn.min_samples_leaf,
        hp.clv.n_trees,
        depth(hp.clv.max_depth),
        hp.clv.min_samples_leaf
    );
    let _ = writeln!(
        s,
        "Churn calibration: {}",
        if m.hyperparameters.calibration.is_empty() {
            "none"
        } else {
            &m.hyperparameters.calibration
        }
    );
    s.push_str(&metrics_table(&m.metrics));
    s.push_str(&quarter_table(m));
    s.push_str(&segment_table(m));
    s
}

/// One line of validation figures per validation snapshot.
fn quarter_table(m: &Manifest) -> String {
    if m.metrics.by_quarter.len() < 2 {
        return String::new();
    }
    let rows: Vec<Vec<String>> = m
        .metrics
        .by_quarter
        .iter()
        .map(|q| {
            vec![
                q.as_of.get(..10).unwrap_or(&q.as_of).to_string(),
                q.rows.to_string(),
                format!("{:.4}", q.churn_rate),
                format!("{:.4}", q.roc_auc),
                format!("{:.4}", q.brier),
                format!("{:.4}", q.ece),
                format!("{:.4}", q.clv_spearman),
            ]
        })
        .collect();
    let mut s = "Validation by quarter:\n".to_string();
    s.push_str(&indent(&table(
        &[
            "AS OF",
            "ROWS",
            "CHURN RATE",
            "ROC-AUC",
            "BRIER",
            "ECE",
            "CLV SPEARMAN",
        ],
        &rows,
    )));
    s
}

/// The segment rules and what each segment's validation customers then did.
fn segment_table(m: &Manifest) -> String {
    if m.segment_table.is_empty() {
        return String::new();
    }
    let r = &m.segments;
    let mut s = format!(
        "Segments (rules: churn gone >= {}, at risk >= {}, low <= {}; overdue unusual >= {}, late {}; valuable >= {:.2} spent in a year; rising >= {}x own visits and {}x own spend; new within {} days), on the validation rows:\n",
        r.churn_gone, r.churn_risk, r.churn_low, r.overdue_unusual, r.overdue_late, r.value_high, r.rising_visits, r.rising_spend, r.new_days
    );
    let rows: Vec<Vec<String>> = m
        .segment_table
        .iter()
        .map(|t| {
            vec![
                t.segment.clone(),
                t.rows.to_string(),
                format!("{:.1}%", 100.0 * t.share),
                format!("{:.3}", t.mean_churn),
                format!("{:.3}", t.realised_churn),
                format!("{:.2}", t.mean_spend),
            ]
        })
        .collect();
    s.push_str(&indent(&table(
        &[
            "SEGMENT",
            "ROWS",
            "SHARE",
            "PREDICTED CHURN",
            "REALISED CHURN",
            "MEAN SPEND",
        ],
        &rows,
    )));
    s
}

fn indent(t: &str) -> String {
    t.lines().map(|l| format!("  {l}\n")).collect()
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}
