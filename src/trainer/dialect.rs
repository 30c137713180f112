//! How a transaction CSV is written: its delimiter, its decimal mark and the zone of its
//! zone-less times, detected from the file or forced by flags, and reported in the
//! data-quality summary so a user sees how their file was read.

use std::fmt;

use chrono_tz::Tz;

/// The field delimiters we detect.
pub const DELIMITERS: [u8; 3] = [b',', b';', b'\t'];

/// What the user forced; `None` means detect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DialectOptions {
    pub delimiter: Option<u8>,
    /// `Some(true)` reads `23,45` as 23.45 in every file.
    pub decimal_comma: Option<bool>,
    /// The zone of zone-less date-times (`2023-01-01 08:23:01`).
    pub timezone: Tz,
}

impl Default for DialectOptions {
    fn default() -> Self {
        DialectOptions {
            delimiter: None,
            decimal_comma: None,
            timezone: Tz::UTC,
        }
    }
}

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dialect {
    pub delimiter: u8,
    pub delimiter_detected: bool,
    pub decimal_comma: bool,
    pub decimal_detected: bool,
    pub timezone: Tz,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect::resolve(&DialectOptions::default(), b"")
    }
}

impl Dialect {
    /// Settles the dialect from the forced options and the file's first line: the delimiter
    /// that occurs most often outside quotes in the header (comma when none does), and a
    /// decimal comma when the delimiter is a semicolon, as European spreadsheets write them.
    pub fn resolve(o: &DialectOptions, header_line: &[u8]) -> Dialect {
        let delimiter = o.delimiter.unwrap_or_else(|| detect_delimiter(header_line));
        let decimal_comma = o.decimal_comma.unwrap_or(delimiter == b';');
        Dialect {
            delimiter,
            delimiter_detected: o.delimiter.is_none(),
            decimal_comma,
            decimal_detected: o.decimal_comma.is_none(),
            timezone: o.timezone,
        }
    }

    /// Reads a number in this dialect. With a decimal comma, `23,45` is 23.45 and `1.234,56`
    /// is 1234.56 (the points group thousands); a number without a comma is read as written,
    /// so `23.45` in a semicolon file is still 23.45.
    pub fn number(&self, raw: &str) -> Option<f64> {
        let raw = raw.trim();
        if self.decimal_comma && raw.contains(',') {
            if raw.matches(',').count() > 1 {
                return None;
            }
            return raw.replace('.', "").replace(',', ".").parse().ok();
        }
        raw.parse().ok()
    }
}

/// The delimiter name users see and type.
pub fn delimiter_name(d: u8) -> &'static str {
    match d {
        b',' => "comma",
        b';' => "semicolon",
        b'\t' => "tab",
        _ => "other",
    }
}

/// Parses a `--delimiter` value.
pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "," | "comma" => Ok(b','),
        ";" | "semicolon" => Ok(b';'),
        "\t" | "\\t" | "tab" => Ok(b'\t'),
        _ => Err(format!(
            "{s:?} is not a delimiter: use comma, semicolon or tab"
        )),
    }
}

fn detect_delimiter(line: &[u8]) -> u8 {
    let mut counts = [0usize; DELIMITERS.len()];
    let mut quoted = false;
    for &b in line.iter().take_while(|&&b| b != b'\n') {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            if let Some(i) = DELIMITERS.iter().position(|&d| d == b) {
                counts[i] += 1;
            }
        }
    }
    // Ties go to the earlier (comma first), and a line without any is comma.
    let (best, _) = counts.iter().enumerate().fold(
        (0, 0),
        |(bi, bc), (i, &c)| if c > bc { (i, c) } else { (bi, bc) },
    );
    DELIMITERS[best]
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = |detected: bool| if detected { "detected" } else { "forced" };
        write!(
            f,
            "{} delimiter ({}), decimal {} ({}), zone-less times in {}",
            delimiter_name(self.delimiter),
            how(self.delimiter_detected),
            if self.decimal_comma { "comma" } else { "point" },
            how(self.decimal_detected),
            self.timezone.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_the_delimiter() {
        let d = |h: &str| Dialect::resolve(&DialectOptions::default(), h.as_bytes());
        assert_eq!(d("customer_id,timestamp,amount\n").delimiter, b',');
        let semi = d("customer_id;timestamp;amount\nA;2024-01-01;1,5\n");
        assert_eq!((semi.delimiter, semi.decimal_comma), (b';', true));
        assert_eq!(d("customer_id\ttimestamp\tamount").delimiter, b'\t');
        // A comma inside a quoted header name does not count.
        assert_eq!(d("\"id, the customer's\";timestamp;amount").delimiter, b';');
        assert_eq!(d("one_column\n").delimiter, b',');
        assert!(!d("a,b,c").decimal_comma);
    }

    #[test]
    fn forced_options_win_and_are_reported() {
        let o = DialectOptions {
            delimiter: Some(b','),
            decimal_comma: Some(true),
            timezone: "Europe/Berlin".parse().unwrap(),
        };
        let d = Dialect::resolve(&o, b"a;b;c");
        assert_eq!((d.delimiter, d.decimal_comma), (b',', true));
        assert_eq!(
            d.to_string(),
            "comma delimiter (forced), decimal comma (forced), zone-less times in Europe/Berlin"
        );
        assert_eq!(parse_delimiter("tab"), Ok(b'\t'));
        assert!(parse_delimiter("|")
            .unwrap_err()
            .contains("comma, semicolon or tab"));
    }

    #[test]
    fn decimal_commas() {
        let comma = Dialect::resolve(&DialectOptions::default(), b"a;b");
        assert_eq!(comma.number("23,45"), Some(23.45));
        assert_eq!(comma.number("1.234,5"), Some(1234.5));
        assert_eq!(comma.number(" 23.45 "), Some(23.45));
        assert_eq!(comma.number("-4,50"), Some(-4.5));
        assert_eq!(comma.number("1,2,3"), None);
        let point = Dialect::default();
        assert_eq!(point.number("23,45"), None);
        assert_eq!(point.number("23.45"), Some(23.45));
    }
}
