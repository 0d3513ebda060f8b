//! The `candela-server` binary: parse settings, set up logging, bind, run.

use anyhow::Context;
use candela_server::config::Settings;
use std::process::ExitCode;

fn main() -> ExitCode {
    let settings = Settings::from_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    candela_server::telemetry::init(settings.log_format);
    tracing::info!(settings = ?settings, "candela-server {} starting", env!("CARGO_PKG_VERSION"));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start the tokio runtime");
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        candela_server::run(listener, settings, candela_server::shutdown::signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
