//! `loyalscore-serve`: the gRPC scoring server.

// The server holds many small, short-lived allocations across threads (request buffers,
// customer states); glibc malloc's per-thread arenas fragment under that, and RSS doubled
// in the state benchmark. mimalloc keeps it flat.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use loyalscore::cli::serve;

fn main() -> ExitCode {
    let cli = serve::Cli::parse();
    loyalscore::cli::init_tracing(
        cli.config.log.filter("info"),
        cli.config.log_format == "json",
    );
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve::run(cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", loyalscore::cli::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
