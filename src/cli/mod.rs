//! Command-line front ends: flag parsing and printing, calling the library. The binaries in
//! `src/bin` are one-line shells around these.

pub mod admin;
pub mod bench;
pub mod client;
pub mod kafka;
pub mod progress;
pub mod score_log;
pub mod serve;
pub mod state;
pub mod traffic;
pub mod train;

/// Logs go to stderr, so stdout stays clean for tables and JSON; colours only when stderr is
/// a terminal, so a log file or a collector gets plain text.
pub fn init_tracing(filter: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

/// An error and its causes as one line, for the binaries' `error:` line. Most of our errors
/// already print their cause (`registry: {0}`), so a cause whose text the line already ends
/// with is not said twice.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[from] std::io::Error);
        let e = anyhow::Error::from(Outer(std::io::Error::other("disk full"))).context("writing x");
        assert_eq!(super::error_line(&e), "writing x: outer: disk full");
    }

    use clap::CommandFactory;

    /// Every argument of every command of the three binaries has a help line, and so has
    /// every subcommand: `--help` never shows a bare flag.
    #[test]
    fn every_flag_and_command_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path}: argument {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                if sub
                    .get_about()
                    .is_none_or(|h| h.to_string().trim().is_empty())
                {
                    missing.push(format!("{path}: subcommand {}", sub.get_name()));
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::admin::Cli::command(), "", &mut missing);
        walk(&super::train::Cli::command(), "", &mut missing);
        walk(&super::serve::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "without a help line: {missing:#?}");
    }
}
