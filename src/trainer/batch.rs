//! Offline batch scoring of a transaction log (nightly CRM exports), with the scoring core
//! the server uses.

use std::io::Write;

use crate::features::CustomerSummary;
use crate::scoring::{score_input, Model, ModelInput, Timing};

use super::load::TransactionLog;

/// The first columns of every scores CSV (`loyalscore-train score`, `loyalscore score-log`),
/// before the timing columns ([`Timing::COLUMNS`]) and [`OUT_OF_RANGE_COLUMN`].
pub const SCORE_COLUMNS: [&str; 5] = [
    "customer_id",
    "churn_probability",
    "clv",
    "segment",
    "version",
];

/// The features outside the version's fitting ranges, `;`-separated (empty: none).
pub const OUT_OF_RANGE_COLUMN: &str = "out_of_range";

/// Every column of a scores CSV, in order: [`SCORE_COLUMNS`], the timing columns, then
/// [`OUT_OF_RANGE_COLUMN`].
pub fn score_header() -> Vec<&'static str> {
    let mut header = SCORE_COLUMNS.to_vec();
    header.extend(Timing::COLUMNS);
    header.push(OUT_OF_RANGE_COLUMN);
    header
}

/// Counts of a batch-scoring run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    pub scored: u64,
    /// Customers with no purchase before `as_of`: nothing to score.
    pub skipped: u64,
}

/// Writes `customer_id,churn_probability,clv,segment,version` and the timing columns for every
/// customer with a purchase before `as_of`, scored on the purchases before it.
pub fn score_log(
    log: &TransactionLog,
    model: &Model,
    as_of: i64,
    out: &mut impl Write,
) -> std::io::Result<BatchCounts> {
    let mut counts = BatchCounts {
        scored: 0,
        skipped: 0,
    };
    let mut w = csv::Writer::from_writer(out);
    w.write_record(score_header())?;
    for c in 0..log.n_customers() {
        let mut s = CustomerSummary::new();
        for r in log.history(c, as_of) {
            // The loader validated every row and sorted them; an update cannot fail here.
            if s.update(&r.tx()).is_err() {
                break;
            }
        }
        let Ok(input) = ModelInput::of(model, &s, as_of) else {
            counts.skipped += 1;
            continue;
        };
        let sc = score_input(model, &input, as_of, Default::default());
        let mut row = vec![
            log.ids[c].clone(),
            format!("{:.6}", sc.churn),
            format!("{:.2}", sc.clv),
            sc.segment.as_str().to_string(),
            model.version.clone(),
        ];
        row.extend(sc.timing.cells());
        row.push(sc.out_of_range.join(";"));
        w.write_record(&row)?;
        counts.scored += 1;
    }
    w.flush()?;
    Ok(counts)
}
