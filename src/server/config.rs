//! The server's settings: one clap block, every flag also an environment variable (the Helm
//! chart sets exactly these; a test compares the two lists).

use clap::Args;

use crate::flags::{AliasArgs, LogArgs, RegistryArgs, StateArgs};
use crate::scoring::Limits;

/// Every server setting; each flag can also be set by its environment variable.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// gRPC listen address, host:port (0.0.0.0:50051 to listen on every interface).
    #[arg(long, env = "LOYALSCORE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub alias: AliasArgs,
    /// Seconds between checks of the alias and its traffic document in the registry.
    #[arg(long, env = "LOYALSCORE_POLL_INTERVAL_SECS", default_value_t = 10)]
    pub poll_interval_secs: u64,
    /// Prometheus metrics listen address, host:port (GET /metrics); "off" disables it.
    #[arg(
        long,
        env = "LOYALSCORE_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: String,
    /// Most customers in one BatchScore call (or rows in one KServe V2 tensor).
    #[arg(long, env = "LOYALSCORE_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Most transactions in one customer's history.
    #[arg(long, env = "LOYALSCORE_MAX_HISTORY", default_value_t = 10_000)]
    pub max_history: usize,
    /// Most transactions in one request over all its customers (the cost budget, checked
    /// before any work starts; past it: INVALID_ARGUMENT on items).
    #[arg(
        long,
        env = "LOYALSCORE_MAX_REQUEST_TRANSACTIONS",
        default_value_t = 1_000_000
    )]
    pub max_request_transactions: usize,
    /// Threads that score large batches (0: one per core); small requests are scored where
    /// they arrive.
    #[arg(long, env = "LOYALSCORE_SCORING_THREADS", default_value_t = 0)]
    pub scoring_threads: usize,
    /// Scoring and V2 requests in progress at once over all connections; past it a request
    /// is refused at once with RESOURCE_EXHAUSTED (retry with backoff), never queued.
    #[arg(
        long,
        env = "LOYALSCORE_MAX_CONCURRENT_REQUESTS",
        default_value_t = 256
    )]
    pub max_concurrent_requests: usize,
    /// Pinned versions (requests naming `version`) held loaded at once; a new one beyond it
    /// takes the place of one unused for a minute, else is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "LOYALSCORE_MAX_PINNED_VERSIONS", default_value_t = 4)]
    pub max_pinned_versions: usize,
    /// Connections open at once; one past it is closed at once. Default: three quarters of
    /// the process's open-file limit, at most 10,000.
    #[arg(long, env = "LOYALSCORE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a new connection may stay silent before it is closed (the HTTP/2 preface is
    /// its first bytes), so idle sockets cannot hold the connection slots.
    #[arg(long, env = "LOYALSCORE_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,
    /// Seconds between HTTP/2 keepalive pings; a connection whose peer does not answer one
    /// within 20 s is closed. 0: no pings.
    #[arg(long, env = "LOYALSCORE_HTTP2_KEEPALIVE_SECS", default_value_t = 60)]
    pub http2_keepalive_secs: u64,
    /// Largest request message the server decodes, in bytes.
    #[arg(long, env = "LOYALSCORE_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Seconds to finish in-flight requests after SIGTERM or SIGINT; flushing the exposure
    /// log and stopping the metrics port take at most 8 s more.
    #[arg(long, env = "LOYALSCORE_DRAIN_SECS", default_value_t = 20)]
    pub drain_secs: u64,
    /// Log format: text (for people) or json (one object a line, for log collectors).
    #[arg(long, env = "LOYALSCORE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(flatten)]
    pub log: LogArgs,
    /// PEM certificate chain for TLS on the gRPC and metrics ports (with --tls-key); re-read
    /// when it changes, as cert-manager renews it. Unset: plaintext.
    #[arg(long, env = "LOYALSCORE_TLS_CERT")]
    pub tls_cert: Option<String>,
    /// PEM private key of --tls-cert (re-read with it).
    #[arg(long, env = "LOYALSCORE_TLS_KEY")]
    pub tls_key: Option<String>,
    /// PEM CA certificates: every client must present a certificate one of them signed
    /// (mutual TLS). Needs --tls-cert and --tls-key.
    #[arg(long, env = "LOYALSCORE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<String>,
    /// Token the Registry admin service and Forget require (authorization: Bearer TOKEN), at
    /// least 32 bytes; without one the service is off.
    #[arg(long, env = "LOYALSCORE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File of tokens (one a line, each at least 32 bytes) that Scoring, KServe V2 and
    /// CustomerState callers must send as `authorization: Bearer TOKEN`; re-read when it
    /// changes. Unset: no token is asked for.
    #[arg(long, env = "LOYALSCORE_SCORING_TOKENS_FILE")]
    pub scoring_tokens_file: Option<String>,
    /// Where experiment exposures are appended as JSON lines: a folder or a bucket URL.
    /// Off when unset.
    #[arg(long, env = "LOYALSCORE_EXPOSURE_LOG")]
    pub exposure_log: Option<String>,
    /// Milliseconds an exposure record waits in memory at most before it is written: the
    /// records a SIGKILL can lose are those of the last interval (SIGTERM loses none; the
    /// gauge loyalscore_exposure_pending says how many are waiting).
    #[arg(long, env = "LOYALSCORE_EXPOSURE_FLUSH_MS", default_value_t = 5000)]
    pub exposure_flush_ms: u64,
    /// Secret key for the hash that stands for customer ids in the exposure log (at least
    /// 16 bytes); the read-out needs the same key.
    #[arg(long, env = "LOYALSCORE_EXPOSURE_KEY", hide_env_values = true)]
    pub exposure_key: Option<String>,
    /// Shadow scoring jobs queued at most (jobs, one per answered customer); past it they are
    /// dropped and counted.
    #[arg(long, env = "LOYALSCORE_SHADOW_QUEUE", default_value_t = 10_000)]
    pub shadow_queue: usize,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub kafka: crate::stream::kafka::KafkaArgs,
}

impl Config {
    /// Every flag at its default, as `loyalscore-serve` with no flags and no environment
    /// runs (tests and the quickstart start from here and change what they need).
    pub fn defaults() -> Result<Self, clap::Error> {
        use clap::{CommandFactory, FromArgMatches, Parser};
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        let matches = Only::command()
            .mut_args(|a| a.env(None::<&str>))
            .try_get_matches_from(["loyalscore-serve"])?;
        Ok(Only::from_arg_matches(&matches)?.config)
    }

    /// The connection limit in force (see `--max-connections`).
    pub fn connection_limit(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            super::conn::open_files_limit().map_or(10_000, |n| (n / 4 * 3).clamp(64, 10_000))
        })
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_history: self.max_history,
            max_batch: self.max_batch,
            max_request_transactions: self.max_request_transactions,
        }
    }
}
