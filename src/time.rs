//! Dates and timestamps as users write them (CSV files, `--as-of`, JSON requests) and as we
//! print them. Shared by the trainer, the command line and the server.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use crate::features::DAY;

/// Parses `YYYY-MM-DD` (midnight UTC) or RFC 3339, to Unix seconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() == 10 {
        return parse_date(s);
    }
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.timestamp())
}

fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

/// Parses an `--as-of` value: a date means the *end* of that day (purchases on it are
/// history), an RFC 3339 timestamp means that instant.
pub fn parse_as_of(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() == 10 {
        parse_date(s).map(|t| t + DAY)
    } else {
        parse_timestamp(s)
    }
}

/// RFC 3339, UTC, seconds.
pub fn fmt_ts(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| ts.to_string())
}

/// `YYYY-MM-DD` of the day a timestamp falls on.
pub fn fmt_day(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| ts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_instants() {
        assert_eq!(parse_timestamp("1970-01-02"), Some(DAY));
        assert_eq!(parse_timestamp("1970-01-02T00:00:10Z"), Some(DAY + 10));
        assert_eq!(parse_timestamp("1970-01-02T01:00:00+01:00"), Some(DAY));
        assert_eq!(parse_timestamp("1997-02-30"), None);
        assert_eq!(parse_timestamp("19970101"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_as_of("1997-09-30"), parse_timestamp("1997-10-01"));
        assert_eq!(
            fmt_day(parse_timestamp("1997-09-30").unwrap()),
            "1997-09-30"
        );
        assert_eq!(fmt_ts(DAY + 10), "1970-01-02T00:00:10Z");
    }
}
