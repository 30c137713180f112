//! `loyalscore`: model versions and aliases from the command line.

use std::process::ExitCode;

use clap::Parser;
use loyalscore::cli::admin;

fn main() -> ExitCode {
    let cli = admin::Cli::parse();
    loyalscore::cli::init_tracing(cli.log.filter("warn"), false);
    match admin::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", loyalscore::cli::error_line(&e));
            if admin::is_conflict(&e) {
                ExitCode::from(admin::EXIT_CONFLICT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
