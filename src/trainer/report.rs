//! What the trainer prints for people: the data-quality summary and the metrics table.

use std::fmt::Write;

use crate::model::{ChurnMetrics, ClvMetrics, Manifest, Metrics};

use super::load::DataQuality;
use crate::time::fmt_day;

pub fn data_quality(q: &DataQuality) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Data quality: {}", q.source);
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
    row(
        &mut s,
        "top-decile lift",
        c.0.top_decile_lift,
        c.1.top_decile_lift,
        true,
    );
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

/// Split, hyper-parameters and the metrics table of a version.
pub fn version_summary(m: &Manifest) -> String {
    let mut s = String::new();
    let sp = &m.split;
    let _ = writeln!(
        s,
        "Validation: {} at {} with a {}-day horizon ({} training rows from {} snapshot(s), {} validation rows)",
        sp.method,
        sp.validation_as_of,
        sp.horizon_days,
        sp.train_rows,
        sp.train_snapshots.len(),
        sp.validation_rows
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
    s.push_str(&metrics_table(&m.metrics));
    s
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
