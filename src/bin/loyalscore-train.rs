//! `loyalscore-train`: generate sample data, and train, evaluate and publish model versions.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = loyalscore::cli::train::Cli::parse();
    loyalscore::cli::init_tracing(cli.log.filter("warn"), false);
    match loyalscore::cli::train::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", loyalscore::cli::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
