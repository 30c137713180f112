//! Command-line front ends: flag parsing and printing, calling the library. The binaries in
//! `src/bin` are one-line shells around these.

pub mod admin;
pub mod bench;
pub mod client;
pub mod progress;
pub mod score_log;
pub mod serve;
pub mod traffic;
pub mod train;

/// Logs go to stderr, so stdout stays clean for tables and JSON.
pub fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}
