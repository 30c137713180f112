//! Command-line blocks shared by the three binaries: each flag is defined, documented and
//! validated once here and flattened where it is used (as influxdb3 shares its object-store
//! block), so `--registry` means the same thing and says the same in every `--help`.

use clap::Args;

use crate::time::parse_as_of;

/// Where the model registry lives.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct RegistryArgs {
    /// Model registry: a local folder, or an object-store URL (file:///abs/path,
    /// s3://bucket/prefix, gs://bucket/prefix, az://container/prefix).
    #[arg(
        long,
        env = "LOYALSCORE_REGISTRY",
        default_value = "models",
        global = true
    )]
    pub registry: String,
}

impl RegistryArgs {
    pub fn new(registry: impl Into<String>) -> Self {
        RegistryArgs {
            registry: registry.into(),
        }
    }
}

/// How much is logged.
#[derive(Args, Debug, Clone, PartialEq, Default)]
pub struct LogArgs {
    /// Log filter in tracing's EnvFilter syntax (error, warn, info, debug, or per module, such
    /// as loyalscore=debug); logs go to stderr. Default: info for loyalscore-serve, warn for
    /// the command-line tools.
    #[arg(long, env = "LOYALSCORE_LOG", global = true)]
    pub log: Option<String>,
}

impl LogArgs {
    pub fn new(filter: impl Into<String>) -> Self {
        LogArgs {
            log: Some(filter.into()),
        }
    }

    /// The filter given, or this binary's default.
    pub fn filter<'a>(&'a self, default: &'a str) -> &'a str {
        self.log.as_deref().unwrap_or(default)
    }
}

/// Which running server a client talks to.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct ServerArgs {
    /// Address of a running loyalscore-serve, as http://host:port.
    #[arg(
        long,
        env = "LOYALSCORE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// PEM CA certificates to trust for an https:// server (a private CA); default: the
    /// system's roots are not used, so this is needed for TLS.
    #[arg(long, env = "LOYALSCORE_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate to present (a server with --tls-client-ca needs one).
    #[arg(long, env = "LOYALSCORE_TLS_CLIENT_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "LOYALSCORE_TLS_CLIENT_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Scoring token to send (a server with --scoring-tokens-file needs one).
    #[arg(long, env = "LOYALSCORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The alias a command serves, reads or changes.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct AliasArgs {
    /// Alias: the name that points at the version in use (production, staging, ...).
    #[arg(long, env = "LOYALSCORE_ALIAS", default_value = "production")]
    pub alias: String,
}

impl AliasArgs {
    pub fn new(alias: impl Into<String>) -> Self {
        AliasArgs {
            alias: alias.into(),
        }
    }
}

/// Where live customer state is kept.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct StateArgs {
    /// Where live customer state is kept, for scoring by id: a file for the embedded store (one
    /// replica), redis://host:port/db for Redis shared by every replica, or "off".
    #[arg(long, env = "LOYALSCORE_STATE", default_value = "state/customers.redb")]
    pub state: String,
    /// Seconds a purchase event may arrive after a later one of the same customer and still be
    /// folded in its place; older ones are refused as late.
    #[arg(long, env = "LOYALSCORE_STATE_LATENESS_SECS", default_value_t = 3 * 86_400)]
    pub state_lateness_secs: i64,
}

impl StateArgs {
    pub fn off() -> Self {
        StateArgs {
            state: "off".into(),
            state_lateness_secs: 3 * 86_400,
        }
    }
}

/// A transaction log to read.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct TransactionsArgs {
    /// Transaction CSV: a path, or an object-store URL (s3://bucket/key.csv, gs://, az://,
    /// file://). Columns customer_id, timestamp, amount, and optionally points_earned,
    /// points_redeemed, channel, quantity.
    #[arg(long)]
    pub transactions: String,
    /// Stop with an error when more than this share of the rows is bad (0 to 1; 0.01 = 1 %).
    #[arg(long, default_value_t = 0.01, value_parser = share)]
    pub max_bad_share: f64,
    /// Field delimiter: comma, semicolon or tab. Default: the one the header line uses.
    #[arg(long, value_parser = crate::trainer::dialect::parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Read 23,45 as 23.45 (and 1.234,56 as 1234.56). Default: on in semicolon-delimited
    /// files, as European spreadsheets write them, off otherwise.
    #[arg(long)]
    pub decimal_comma: bool,
    /// Time zone of zone-less date-times such as 2023-01-01 08:23:01 (an IANA name:
    /// Europe/Berlin). Dates and RFC 3339 times with an offset are not shifted.
    #[arg(long, default_value = "UTC", value_parser = crate::time::parse_timezone)]
    pub timezone: chrono_tz::Tz,
}

impl TransactionsArgs {
    pub fn new(transactions: impl Into<String>) -> Self {
        TransactionsArgs {
            transactions: transactions.into(),
            max_bad_share: 0.01,
            delimiter: None,
            decimal_comma: false,
            timezone: chrono_tz::Tz::UTC,
        }
    }

    /// What the loader is told; what is not forced is detected from the file.
    pub fn load_options(&self) -> crate::trainer::LoadOptions {
        crate::trainer::LoadOptions {
            max_bad_share: self.max_bad_share,
            dialect: crate::trainer::dialect::DialectOptions {
                delimiter: self.delimiter,
                decimal_comma: self.decimal_comma.then_some(true),
                timezone: self.timezone,
            },
        }
    }
}

/// `--as-of`: a date means the end of that day, so purchases on it are history; an RFC 3339
/// timestamp means that instant. Returns Unix seconds.
pub fn as_of(s: &str) -> Result<i64, String> {
    parse_as_of(s).ok_or_else(|| {
        format!("{s:?} is neither YYYY-MM-DD (the end of that day) nor an RFC 3339 timestamp")
    })
}

/// A share between 0 and 1.
pub fn share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not a share between 0 and 1")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_and_share_say_what_is_wrong() {
        assert_eq!(as_of("1970-01-01"), Ok(86_400));
        assert_eq!(as_of("1970-01-01T00:00:10Z"), Ok(10));
        assert!(as_of("yesterday").unwrap_err().contains("YYYY-MM-DD"));
        assert_eq!(share("0.5"), Ok(0.5));
        assert!(share("1.5").unwrap_err().contains("between 0 and 1"));
        assert!(share("x").unwrap_err().contains("not a number"));
    }
}
