//! Dates and timestamps as users write them (CSV files, `--as-of`, JSON requests) and as we
//! print them. Shared by the trainer, the command line and the server.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;

use crate::features::DAY;

/// The forms a timestamp may take, for messages.
pub const TIMESTAMP_FORMS: &str = "YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS[.fff]] or RFC 3339";

/// Parses a timestamp given in UTC or with its own offset ([`parse_timestamp_in`] with UTC).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    parse_timestamp_in(s, Tz::UTC)
}

/// Parses `YYYY-MM-DD` (a calendar day: midnight UTC, whatever `tz`, so that a day stays the
/// day it was written as), RFC 3339 (its own offset), or a zone-less `YYYY-MM-DD HH:MM[:SS
/// [.fff]]` (also with `T`), which is read as wall-clock time in `tz`. Returns Unix seconds.
pub fn parse_timestamp_in(s: &str, tz: Tz) -> Option<i64> {
    let s = s.trim();
    if s.len() == 10 {
        return parse_date(s);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp());
    }
    let local = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())?;
    // A wall-clock time skipped by a daylight-saving change is read as the hour after it.
    tz.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|d| d.timestamp())
}

/// Parses a `--timezone` value: an IANA zone name such as Europe/Berlin, or UTC.
pub fn parse_timezone(s: &str) -> Result<Tz, String> {
    s.trim().parse::<Tz>().map_err(|_| {
        format!("{s:?} is not an IANA time zone (such as UTC, Europe/Berlin, America/New_York)")
    })
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

    #[test]
    fn zone_less_times_are_wall_clock_in_the_zone_given() {
        let utc = |s| parse_timestamp(s);
        assert_eq!(utc("1970-01-02 00:00:10"), Some(DAY + 10));
        assert_eq!(utc("1970-01-02T00:00:10.750"), Some(DAY + 10));
        assert_eq!(utc("1970-01-02 00:01"), Some(DAY + 60));
        let berlin = parse_timezone("Europe/Berlin").unwrap();
        // Winter is UTC+1, summer UTC+2.
        assert_eq!(
            parse_timestamp_in("2023-01-01 08:23:01", berlin),
            parse_timestamp("2023-01-01T07:23:01Z")
        );
        assert_eq!(
            parse_timestamp_in("2023-07-01 08:00:00", berlin),
            parse_timestamp("2023-07-01T06:00:00Z")
        );
        // 02:30 on 2023-03-26 does not exist in Berlin: the clocks jump from 02:00 to 03:00.
        assert_eq!(
            parse_timestamp_in("2023-03-26 02:30:00", berlin),
            parse_timestamp("2023-03-26T01:30:00Z")
        );
        // Dates stay calendar days, and an explicit offset wins over the zone.
        assert_eq!(parse_timestamp_in("1970-01-02", berlin), Some(DAY));
        assert_eq!(
            parse_timestamp_in("1970-01-02T00:00:00Z", berlin),
            Some(DAY)
        );
        assert_eq!(utc("2023-01-01 25:00:00"), None);
        assert!(parse_timezone("Mars/Olympus").unwrap_err().contains("IANA"));
    }
}
