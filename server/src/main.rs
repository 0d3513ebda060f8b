//! The `candela-server` binary: parse settings, set up logs and traces, bind, run.

use anyhow::Context;
use candela_server::config::{LogFormat, Settings};
use std::process::ExitCode;

/// mimalloc instead of the system allocator: a call allocates many small
/// buffers (HTTP/2 frames, protobuf messages, tensors), and glibc's malloc
/// returned large tensor buffers to the kernel after each forward pass, so
/// the next pass page-faulted them back in (measured with perf: page faults
/// and TLB shootdowns were a tenth of a 1000-row pass).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let settings = Settings::from_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // candle sizes its CPU kernels' thread pool from RAYON_NUM_THREADS. Set
    // here, before any other thread exists (setting the environment is only
    // sound while the process is single-threaded).
    unsafe { std::env::set_var("RAYON_NUM_THREADS", settings.compute_threads.max(1).to_string()) };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start the tokio runtime");
    runtime.block_on(async {
        let json = settings.log_format == LogFormat::Json;
        let telemetry = match candela_server::observe::telemetry::init(json, settings.otlp_endpoint().as_deref()) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("cannot set up logging and tracing: {error:#}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(settings = ?settings, "candela-server {} starting", env!("CARGO_PKG_VERSION"));
        let result = async {
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen))?;
            candela_server::run(listener, settings, candela_server::api::shutdown::signal()).await
        }
        .await;
        let code = match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error:#}");
                ExitCode::FAILURE
            }
        };
        // Flush traces before the runtime goes.
        tokio::task::spawn_blocking(move || drop(telemetry)).await.ok();
        code
    })
}
