//! The transaction loader: CSV in, a per-customer, time-ordered log out, with every bad row
//! counted by reason and located by line.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use sha2::{Digest, Sha256};

use super::dialect::{delimiter_name, Dialect, DialectOptions, DELIMITERS};
use crate::features::{channel_id, Transaction, MAX_TS, MAX_VALUE, MIN_TS};
use crate::time::{parse_timestamp_in, TIMESTAMP_FORMS};

/// Example line numbers kept per rejection reason.
const EXAMPLES: usize = 5;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Largest share of bad rows tolerated before the run stops (0.01 = 1 %).
    pub max_bad_share: f64,
    /// The delimiter, decimal mark and zone forced by the user; the rest is detected.
    pub dialect: DialectOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_bad_share: 0.01,
            dialect: DialectOptions::default(),
        }
    }
}

/// Why a row was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    NotUtf8,
    ColumnCount,
    EmptyId,
    BadTimestamp,
    BadAmount,
    BadPoints,
    BadQuantity,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotUtf8 => "not UTF-8",
            RejectReason::ColumnCount => "wrong column count",
            RejectReason::EmptyId => "empty customer_id",
            RejectReason::BadTimestamp => "bad timestamp",
            RejectReason::BadAmount => "bad amount",
            RejectReason::BadPoints => "bad points",
            RejectReason::BadQuantity => "bad quantity",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Rejections {
    pub count: u64,
    /// The first few messages, each naming its line and the problem.
    pub examples: Vec<String>,
}

/// What the loader saw: the data-quality summary printed before training.
#[derive(Debug, Clone, Default)]
pub struct DataQuality {
    pub source: String,
    pub sha256: String,
    pub bytes: u64,
    pub rows_read: u64,
    pub rows_ok: u64,
    pub rejected: BTreeMap<RejectReason, Rejections>,
    /// Rows identical in every field to another row (kept: two equal purchases on one day
    /// are common in date-only logs).
    pub duplicates: u64,
    /// Rows with a negative amount: returns (kept: they lower net spend).
    pub returns: u64,
    pub customers: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    pub ignored_columns: Vec<String>,
    /// How the file was read.
    pub dialect: Dialect,
}

impl DataQuality {
    pub fn rows_rejected(&self) -> u64 {
        self.rejected.values().map(|r| r.count).sum()
    }
}

/// One stored transaction with its customer; 40 bytes, so 30 million fit in 1.2 GB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogRow {
    pub cust: u32,
    pub channel: u32,
    pub ts: i64,
    pub amount: f64,
    pub points_earned: f64,
    pub points_redeemed: f64,
}

impl LogRow {
    pub fn tx(&self) -> Transaction {
        Transaction {
            ts: self.ts,
            amount: self.amount,
            points_earned: self.points_earned,
            points_redeemed: self.points_redeemed,
            channel: self.channel,
        }
    }
}

/// Transactions grouped by customer, each customer's in time order.
#[derive(Debug, Default)]
pub struct TransactionLog {
    /// Customer index to id. Held in memory for holdout hashing and scoring output only;
    /// never written into an artifact.
    pub ids: Vec<String>,
    offsets: Vec<usize>,
    rows: Vec<LogRow>,
    pub quality: DataQuality,
    /// Channel id to the name it was hashed from, so a history can be sent on as it came.
    pub channel_names: HashMap<u32, String>,
}

impl TransactionLog {
    pub fn n_customers(&self) -> usize {
        self.ids.len()
    }

    /// Customer `i`'s rows, in time order.
    pub fn customer(&self, i: usize) -> &[LogRow] {
        &self.rows[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Customer `i`'s rows that are history at `as_of` ([`crate::features::is_history`]).
    pub fn history(&self, i: usize, as_of: i64) -> &[LogRow] {
        crate::features::history_at(self.customer(i), as_of, |r| r.ts)
    }

    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    /// The name a row's channel was read as (empty for none), to send a history on as it came.
    pub fn channel_name(&self, r: &LogRow) -> String {
        self.channel_names
            .get(&r.channel)
            .cloned()
            .unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{source_name}: {reason}")]
    Header { source_name: String, reason: String },
    #[error("{source_name}: read failed near line {line}: {reason}")]
    Read {
        source_name: String,
        line: u64,
        reason: String,
    },
    #[error("{source_name}: {bad} of {total} rows ({share:.2}%) are bad, more than the allowed {max:.2}% (--max-bad-share {}; raise it to train on the good rows); for example: {}", max / 100.0, examples.join("; "))]
    TooManyBad {
        source_name: String,
        bad: u64,
        total: u64,
        share: f64,
        max: f64,
        examples: Vec<String>,
    },
    #[error("{source_name}: no valid transactions (the header is there, but no row)")]
    Empty { source_name: String },
    #[error("{source_name}: the file is empty (no header, no rows)")]
    EmptyFile { source_name: String },
}

/// Counts and hashes the bytes that pass through, for the progress bar and the lineage.
struct Tap<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    reported: u64,
    progress: Box<dyn FnMut(u64)>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes - self.reported >= 1 << 20 || n == 0 {
            (self.progress)(self.bytes);
            self.reported = self.bytes;
        }
        Ok(n)
    }
}

struct Columns {
    id: usize,
    ts: usize,
    amount: usize,
    points_earned: Option<usize>,
    points_redeemed: Option<usize>,
    channel: Option<usize>,
    quantity: Option<usize>,
    width: usize,
}

fn columns(
    header: &csv::StringRecord,
    dialect: &Dialect,
) -> Result<(Columns, Vec<String>), String> {
    let names: Vec<String> = header
        .iter()
        .enumerate()
        // Spreadsheets start UTF-8 files with a byte-order mark.
        .map(|(i, h)| {
            let h = if i == 0 {
                h.trim_start_matches('\u{feff}')
            } else {
                h
            };
            h.trim().to_ascii_lowercase()
        })
        .collect();
    let find = |n: &str| names.iter().position(|h| h == n);
    let delimiter = delimiter_name(dialect.delimiter);
    let required = |n: &str| {
        find(n).ok_or_else(|| {
            let head = format!("line 1: the header must name customer_id, timestamp and amount; {n} is missing");
            let other = DELIMITERS.iter().find(|&&d| d != dialect.delimiter && names[0].contains(d as char));
            match other {
                Some(&d) if names.len() == 1 => format!(
                    "{head}: read with a {delimiter} delimiter the header is one column, {:?}; the file looks {}-delimited (--delimiter {})",
                    names[0], delimiter_name(d), delimiter_name(d)
                ),
                _ => format!("{head} (columns found, {delimiter}-delimited: {})", names.join(", ")),
            }
        })
    };
    let c = Columns {
        id: required("customer_id")?,
        ts: required("timestamp")?,
        amount: required("amount")?,
        points_earned: find("points_earned"),
        points_redeemed: find("points_redeemed"),
        channel: find("channel"),
        quantity: find("quantity"),
        width: names.len(),
    };
    let known = [
        "customer_id",
        "timestamp",
        "amount",
        "points_earned",
        "points_redeemed",
        "channel",
        "quantity",
    ];
    let unknown = names
        .iter()
        .filter(|n| !known.contains(&n.as_str()))
        .cloned()
        .collect();
    Ok((c, unknown))
}

/// A finite number of at most 1e9 in size; negative only where `signed` (an amount: a
/// return).
fn number(field: &str, raw: &str, signed: bool, d: &Dialect) -> Result<f64, String> {
    let v: f64 = d.number(raw).ok_or_else(|| {
        if !d.decimal_comma && raw.contains(',') {
            format!("{field} {raw:?} is not a number (a decimal comma? --decimal-comma)")
        } else {
            format!("{field} {raw:?} is not a number")
        }
    })?;
    if !v.is_finite() {
        Err(format!("{field} {raw:?} is not finite"))
    } else if v < 0.0 && !signed {
        Err(format!("{field} {raw:?} is negative"))
    } else if v.abs() > MAX_VALUE {
        Err(format!("{field} {raw:?} is larger than 1e9 in size"))
    } else {
        Ok(v)
    }
}

fn optional_number(field: &str, raw: Option<&str>, d: &Dialect) -> Result<f64, String> {
    match raw.map(str::trim) {
        None | Some("") => Ok(0.0),
        Some(r) => number(field, r, false, d),
    }
}

/// Parses one data row, or says which rule it breaks.
fn parse_row(
    rec: &csv::StringRecord,
    c: &Columns,
    d: &Dialect,
) -> Result<(String, LogRow), (RejectReason, String)> {
    if rec.len() != c.width {
        return Err((
            RejectReason::ColumnCount,
            format!("expected {} columns, found {}", c.width, rec.len()),
        ));
    }
    let id = rec.get(c.id).unwrap_or("").trim();
    if id.is_empty() {
        return Err((RejectReason::EmptyId, "customer_id is empty".into()));
    }
    let raw_ts = rec.get(c.ts).unwrap_or("");
    let ts = parse_timestamp_in(raw_ts, d.timezone).ok_or_else(|| {
        (
            RejectReason::BadTimestamp,
            format!("timestamp {raw_ts:?} is not {TIMESTAMP_FORMS}"),
        )
    })?;
    if !(MIN_TS..MAX_TS).contains(&ts) {
        return Err((
            RejectReason::BadTimestamp,
            format!("timestamp {raw_ts:?} is before 1970 or after 2199"),
        ));
    }
    let amount = number("amount", rec.get(c.amount).unwrap_or(""), true, d)
        .map_err(|m| (RejectReason::BadAmount, m))?;
    let get = |i: Option<usize>| i.and_then(|i| rec.get(i));
    let points_earned = optional_number("points_earned", get(c.points_earned), d)
        .map_err(|m| (RejectReason::BadPoints, m))?;
    let points_redeemed = optional_number("points_redeemed", get(c.points_redeemed), d)
        .map_err(|m| (RejectReason::BadPoints, m))?;
    if let Some(q) = get(c.quantity).map(str::trim).filter(|q| !q.is_empty()) {
        q.parse::<u32>().map_err(|_| {
            (
                RejectReason::BadQuantity,
                format!("quantity {q:?} is not a whole number of items"),
            )
        })?;
    }
    let channel = get(c.channel).map(channel_id).unwrap_or(0);
    Ok((
        id.to_string(),
        LogRow {
            cust: 0,
            channel,
            ts,
            amount,
            points_earned,
            points_redeemed,
        },
    ))
}

/// Reads a transaction CSV. `progress` gets the bytes read so far.
pub fn load_transactions<R: Read>(
    reader: R,
    source_name: &str,
    opts: &LoadOptions,
    progress: impl FnMut(u64) + 'static,
) -> Result<TransactionLog, LoadError> {
    let mut tap = Tap {
        inner: reader,
        hasher: Sha256::new(),
        bytes: 0,
        reported: 0,
        progress: Box::new(progress),
    };
    let header_err = |reason: String| LoadError::Header {
        source_name: source_name.to_string(),
        reason,
    };
    let head = first_line(&mut tap).map_err(|e| header_err(format!("read failed: {e}")))?;
    if head.iter().all(u8::is_ascii_whitespace) {
        return Err(LoadError::EmptyFile {
            source_name: source_name.to_string(),
        });
    }
    let dialect = Dialect::resolve(&opts.dialect, head.trim_ascii_start());
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(dialect.delimiter)
        .from_reader(std::io::Cursor::new(head).chain(tap));
    let header = rdr
        .headers()
        .map_err(|e| header_err(e.to_string()))?
        .clone();
    let (cols, unknown) = columns(&header, &dialect).map_err(header_err)?;
    if !unknown.is_empty() {
        tracing::warn!(columns = %unknown.join(","), "ignoring unknown columns");
    }
    let mut acc = Accumulator {
        q: DataQuality {
            source: source_name.to_string(),
            ignored_columns: unknown,
            dialect,
            first_ts: i64::MAX,
            last_ts: i64::MIN,
            ..Default::default()
        },
        ..Default::default()
    };
    read_rows(&mut rdr, &cols, &dialect, &mut acc).map_err(|(line, reason)| LoadError::Read {
        source_name: source_name.to_string(),
        line,
        reason,
    })?;
    let (_, mut tap) = rdr.into_inner().into_inner();
    (tap.progress)(tap.bytes);
    acc.q.sha256 = hex::encode(tap.hasher.finalize());
    acc.q.bytes = tap.bytes;
    acc.q.rows_ok = acc.rows.len() as u64;
    check_quality(&acc, source_name, opts)?;
    let mut log = group(acc.rows, acc.ids, acc.q);
    log.channel_names = acc.channel_names;
    Ok(log)
}

/// The bytes up to and including the first non-blank line's newline (at most 1 MiB), so the
/// dialect can be read off the header before parsing starts.
fn first_line(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf)?;
        head.extend_from_slice(&buf[..n]);
        let content = head.iter().position(|b| !b.is_ascii_whitespace());
        let line_done = content.is_some_and(|c| head[c..].contains(&b'\n'));
        if n == 0 || line_done || head.len() >= 1 << 20 {
            return Ok(head);
        }
    }
}

/// What the loader has gathered so far.
#[derive(Default)]
struct Accumulator {
    q: DataQuality,
    index: HashMap<String, u32>,
    ids: Vec<String>,
    rows: Vec<LogRow>,
    channel_names: HashMap<u32, String>,
}

impl Accumulator {
    fn accept(&mut self, id: String, mut row: LogRow, rec: &csv::StringRecord, cols: &Columns) {
        let next = self.ids.len() as u32;
        let ids = &mut self.ids;
        row.cust = *self.index.entry(id).or_insert_with_key(|id| {
            ids.push(id.clone());
            next
        });
        if row.channel != 0 && !self.channel_names.contains_key(&row.channel) {
            if let Some(name) = cols.channel.and_then(|i| rec.get(i)) {
                self.channel_names.insert(row.channel, name.to_string());
            }
        }
        self.q.first_ts = self.q.first_ts.min(row.ts);
        self.q.last_ts = self.q.last_ts.max(row.ts);
        self.q.returns += u64::from(row.amount < 0.0);
        self.rows.push(row);
    }
}

/// Every data row, parsed or rejected with its line; `Err((line, reason))` when the file
/// itself cannot be read on.
fn read_rows<R: Read>(
    rdr: &mut csv::Reader<R>,
    cols: &Columns,
    dialect: &Dialect,
    acc: &mut Accumulator,
) -> Result<(), (u64, String)> {
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                // Invalid UTF-8 and the like spoil one row, not the file.
                if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                    acc.q.rows_read += 1;
                    reject(
                        &mut acc.q,
                        RejectReason::NotUtf8,
                        line,
                        "row is not valid UTF-8",
                    );
                    continue;
                }
                return Err((line, e.to_string()));
            }
        }
        // Blank lines are not rows.
        if rec.len() == 1 && rec.get(0).is_some_and(|f| f.trim().is_empty()) {
            continue;
        }
        acc.q.rows_read += 1;
        let line = rec.position().map_or(0, |p| p.line());
        match parse_row(&rec, cols, dialect) {
            Ok((id, row)) => acc.accept(id, row, &rec, cols),
            Err((reason, msg)) => reject(&mut acc.q, reason, line, &msg),
        }
    }
}

/// Stops the run when too many rows are bad, or none is good.
fn check_quality(
    acc: &Accumulator,
    source_name: &str,
    opts: &LoadOptions,
) -> Result<(), LoadError> {
    let q = &acc.q;
    let bad = q.rows_rejected();
    if q.rows_read > 0 && bad as f64 > opts.max_bad_share * q.rows_read as f64 {
        return Err(LoadError::TooManyBad {
            source_name: source_name.to_string(),
            bad,
            total: q.rows_read,
            share: 100.0 * bad as f64 / q.rows_read as f64,
            max: 100.0 * opts.max_bad_share,
            examples: q
                .rejected
                .values()
                .flat_map(|r| r.examples.iter().take(2).cloned())
                .collect(),
        });
    }
    if acc.rows.is_empty() {
        return Err(LoadError::Empty {
            source_name: source_name.to_string(),
        });
    }
    Ok(())
}

fn reject(q: &mut DataQuality, reason: RejectReason, line: u64, msg: &str) {
    let r = q.rejected.entry(reason).or_default();
    r.count += 1;
    if r.examples.len() < EXAMPLES {
        r.examples.push(format!("line {line}: {msg}"));
    }
}

/// Sorts rows by customer and time, counts exact duplicates, and indexes customers.
fn group(mut rows: Vec<LogRow>, ids: Vec<String>, mut q: DataQuality) -> TransactionLog {
    // Every field is in the key, so the order is fully determined and duplicates are adjacent.
    rows.sort_unstable_by(|a, b| {
        (a.cust, a.ts)
            .cmp(&(b.cust, b.ts))
            .then(a.amount.total_cmp(&b.amount))
            .then(a.points_earned.total_cmp(&b.points_earned))
            .then(a.points_redeemed.total_cmp(&b.points_redeemed))
            .then(a.channel.cmp(&b.channel))
    });
    q.duplicates = rows.windows(2).filter(|w| w[0] == w[1]).count() as u64;
    let mut offsets = Vec::with_capacity(ids.len() + 1);
    offsets.push(0);
    for (i, r) in rows.iter().enumerate().skip(1) {
        if r.cust != rows[i - 1].cust {
            offsets.push(i);
        }
    }
    offsets.push(rows.len());
    q.customers = ids.len() as u64;
    TransactionLog {
        ids,
        offsets,
        rows,
        quality: q,
        channel_names: HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(csv: &str, max_bad_share: f64) -> Result<TransactionLog, LoadError> {
        let opts = LoadOptions {
            max_bad_share,
            ..Default::default()
        };
        load_transactions(csv.as_bytes(), "test.csv", &opts, |_| {})
    }

    fn load_with(csv: &str, dialect: DialectOptions) -> Result<TransactionLog, LoadError> {
        let opts = LoadOptions {
            max_bad_share: 0.0,
            dialect,
        };
        load_transactions(csv.as_bytes(), "test.csv", &opts, |_| {})
    }

    #[test]
    fn a_german_export_with_a_byte_order_mark_is_read_as_written() {
        let csv = "\u{feff}customer_id;timestamp;amount\nA;2023-01-01 08:23:01;23,45\n\
                   A;2023-07-01 08:00:00.250;1.234,50\nB;2023-01-02;-4,5\n";
        let berlin = crate::time::parse_timezone("Europe/Berlin").unwrap();
        let log = load_with(
            csv,
            DialectOptions {
                timezone: berlin,
                ..Default::default()
            },
        )
        .unwrap();
        let a: Vec<(i64, f64)> = log.customer(0).iter().map(|r| (r.ts, r.amount)).collect();
        let utc = |s| crate::time::parse_timestamp(s).unwrap();
        assert_eq!(
            a,
            vec![
                (utc("2023-01-01T07:23:01Z"), 23.45),
                (utc("2023-07-01T06:00:00Z"), 1234.5)
            ]
        );
        assert_eq!(log.customer(1)[0].amount, -4.5);
        let d = log.quality.dialect;
        assert_eq!((d.delimiter, d.decimal_comma), (b';', true));
        let summary = crate::trainer::report::data_quality(&log.quality);
        assert!(
            summary.contains("semicolon delimiter (detected), decimal comma (detected), zone-less times in Europe/Berlin"),
            "{summary}"
        );
    }

    #[test]
    fn tabs_and_forced_dialects() {
        let log = load_with(
            "customer_id\ttimestamp\tamount\nA\t2023-01-01 00:00:10\t2.5\n",
            DialectOptions::default(),
        )
        .unwrap();
        assert_eq!(
            log.customer(0)[0].ts,
            crate::time::parse_timestamp("2023-01-01T00:00:10Z").unwrap()
        );
        assert_eq!(log.quality.dialect.delimiter, b'\t');
        // A comma file with quoted decimal commas, forced.
        let forced = DialectOptions {
            decimal_comma: Some(true),
            ..Default::default()
        };
        let log = load_with(
            "customer_id,timestamp,amount\nA,2023-01-01,\"2,5\"\n",
            forced,
        )
        .unwrap();
        assert_eq!(log.customer(0)[0].amount, 2.5);
        // Without it, the message points at the flag.
        let err = load("customer_id,timestamp,amount\nA,2023-01-01,\"2,5\"\n", 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--decimal-comma"), "{err}");
        // The delimiter forced wrong: the message names the one the file looks like.
        let wrong = DialectOptions {
            delimiter: Some(b','),
            ..Default::default()
        };
        let err = load_with("customer_id;timestamp;amount\nA;2023-01-01;1\n", wrong)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("looks semicolon-delimited (--delimiter semicolon)"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_file_says_so() {
        for csv in ["", "\n\n  \n"] {
            let err = load(csv, 0.0).unwrap_err();
            assert!(matches!(err, LoadError::EmptyFile { .. }), "{err}");
            assert!(err.to_string().contains("the file is empty"), "{err}");
        }
    }

    /// One bad row at line 3 between good rows; the message must name the line and problem.
    fn rejected_with(bad_row: &str, reason: RejectReason, problem: &str) {
        let csv = format!(
            "customer_id,timestamp,amount,points_earned,points_redeemed,channel,quantity\n\
             A,2024-01-01,10.00,10,0,web,1\n{bad_row}\nB,2024-01-02T10:00:00Z,5,,,store,\n"
        );
        let log = load(&csv, 1.0).unwrap();
        let r = &log.quality.rejected[&reason];
        assert_eq!(r.count, 1, "{reason:?}");
        let msg = &r.examples[0];
        assert!(msg.starts_with("line 3: "), "{msg}");
        assert!(msg.contains(problem), "{msg} should mention {problem}");
        assert_eq!(log.quality.rows_ok, 2);
        assert_eq!(log.quality.rows_read, 3);
        // The same file with the default 1 % tolerance stops, naming the example.
        let err = load(&csv, 0.01).unwrap_err().to_string();
        assert!(err.contains("line 3: ") && err.contains(problem), "{err}");
        assert!(err.contains("1 of 3 rows"), "{err}");
        assert!(err.contains("--max-bad-share 0.01"), "{err}");
    }

    #[test]
    fn unparseable_timestamp() {
        rejected_with(
            "A,2024-13-45,1,0,0,web,1",
            RejectReason::BadTimestamp,
            "timestamp \"2024-13-45\"",
        );
        rejected_with(
            "A,last tuesday,1,0,0,web,1",
            RejectReason::BadTimestamp,
            "is not YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS[.fff]] or RFC 3339",
        );
    }

    #[test]
    fn timestamp_out_of_range() {
        rejected_with(
            "A,1969-12-31,1,0,0,web,1",
            RejectReason::BadTimestamp,
            "before 1970",
        );
    }

    #[test]
    fn a_negative_amount_is_a_return_and_counted() {
        let csv = "customer_id,timestamp,amount\nA,2024-01-01,10\nA,2024-01-03,-4.50\n";
        let log = load(csv, 0.0).unwrap();
        assert_eq!((log.quality.rows_ok, log.quality.returns), (2, 1));
        assert_eq!(log.customer(0)[1].amount, -4.5);
        rejected_with(
            "A,2024-01-03,-2e9,0,0,web,1",
            RejectReason::BadAmount,
            "amount \"-2e9\" is larger than 1e9 in size",
        );
    }

    #[test]
    fn non_finite_amount() {
        rejected_with(
            "A,2024-01-03,NaN,0,0,web,1",
            RejectReason::BadAmount,
            "amount \"NaN\" is not finite",
        );
        rejected_with(
            "A,2024-01-03,inf,0,0,web,1",
            RejectReason::BadAmount,
            "is not finite",
        );
        rejected_with(
            "A,2024-01-03,12$,0,0,web,1",
            RejectReason::BadAmount,
            "amount \"12$\" is not a number",
        );
    }

    #[test]
    fn empty_id() {
        rejected_with(
            "  ,2024-01-03,4,0,0,web,1",
            RejectReason::EmptyId,
            "customer_id is empty",
        );
    }

    #[test]
    fn wrong_column_count() {
        rejected_with(
            "A,2024-01-03,4",
            RejectReason::ColumnCount,
            "expected 7 columns, found 3",
        );
    }

    #[test]
    fn bad_points_and_quantity() {
        rejected_with(
            "A,2024-01-03,4,-1,0,web,1",
            RejectReason::BadPoints,
            "points_earned \"-1\" is negative",
        );
        rejected_with(
            "A,2024-01-03,4,0,0,web,1.5",
            RejectReason::BadQuantity,
            "quantity \"1.5\"",
        );
    }

    #[test]
    fn header_is_required() {
        let err = load("A,2024-01-01,10\n", 1.0).unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("customer_id is missing"),
            "{err}"
        );
        let err = load("customer_id,timestamp,value\nA,2024-01-01,3\n", 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("amount is missing"), "{err}");
    }

    #[test]
    fn groups_sorts_counts_duplicates_and_ignores_unknown_columns() {
        let csv = "Customer_ID,timestamp,amount,store_id\n\
                   B,2024-02-01,3,s1\nA,2024-01-05,2,s1\nB,2024-01-01,1,s2\n\
                   A,2024-01-05,2,s1\n\n";
        let log = load(csv, 0.0).unwrap();
        assert_eq!(log.n_customers(), 2);
        assert_eq!(log.quality.duplicates, 1);
        assert_eq!(log.quality.ignored_columns, vec!["store_id".to_string()]);
        let b = log.ids.iter().position(|i| i == "B").unwrap();
        let ts: Vec<i64> = log.customer(b).iter().map(|r| r.ts).collect();
        assert!(ts[0] < ts[1], "customer rows are in time order");
        assert_eq!(log.quality.rows_read, 4, "blank lines are not rows");
        assert_eq!(log.quality.sha256.len(), 64);
    }

    #[test]
    fn nothing_valid_is_an_error() {
        let err = load("customer_id,timestamp,amount\n", 1.0).unwrap_err();
        assert!(matches!(err, LoadError::Empty { .. }));
    }
}
