//! Offline batch scoring of a transaction log (nightly CRM exports), with the scoring core
//! the server uses.

use std::io::Write;

use crate::features::CustomerSummary;
use crate::scoring::{score, Model, Timing};

use super::load::TransactionLog;

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
    let mut header = vec![
        "customer_id",
        "churn_probability",
        "clv",
        "segment",
        "version",
    ];
    header.extend(Timing::COLUMNS);
    w.write_record(&header)?;
    for c in 0..log.n_customers() {
        let mut s = CustomerSummary::new();
        for r in log.history(c, as_of) {
            // The loader validated every row and sorted them; an update cannot fail here.
            if s.update(&r.tx()).is_err() {
                break;
            }
        }
        let Ok(f) = s.features(as_of) else {
            counts.skipped += 1;
            continue;
        };
        let sc = score(model, &f, as_of, Default::default());
        let mut row = vec![
            log.ids[c].clone(),
            format!("{:.6}", sc.churn),
            format!("{:.2}", sc.clv),
            sc.segment.as_str().to_string(),
            model.version.clone(),
        ];
        row.extend(sc.timing.cells());
        w.write_record(&row)?;
        counts.scored += 1;
    }
    w.flush()?;
    Ok(counts)
}
