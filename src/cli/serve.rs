//! `loyalscore-serve`: flags (each also an environment variable), logs, signals.

use clap::Parser;
use tokio::net::TcpListener;

use crate::server::{serve, Config};

#[derive(Parser, Debug)]
#[command(
    name = "loyalscore-serve",
    version,
    about = "Serve churn and CLV scores over gRPC"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or SIGINT (Ctrl-C at a terminal): both
/// mean "finish what you are doing and exit".
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds the listeners and serves until a signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", config.listen))?;
    let metrics = if config.metrics_listen.eq_ignore_ascii_case("off") {
        None
    } else {
        Some(
            TcpListener::bind(&config.metrics_listen)
                .await
                .map_err(|e| anyhow::anyhow!("--metrics-listen {}: {e}", config.metrics_listen))?,
        )
    };
    serve(config, grpc, metrics, shutdown_signal()).await?;
    Ok(())
}
