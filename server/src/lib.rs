//! Candela's server: a model repository served over gRPC.
//!
//! `run` takes an already-bound listener and a shutdown future, so the binary
//! and the tests start the server the same way. The modules follow a
//! request's way through: `connections` (accepting, bounded) → `api` (the
//! network front: its `gate` admits calls and bounds request bodies, then
//! `candela.v1` and the Open Inference Protocol; `api::status` maps core
//! errors to gRPC) → `routing` (segment and version → model) →
//! `validation` → `inference` → `batching` (the model's queue and compute
//! threads: concurrent requests merged into one candle pass, off the reactor)
//! → `stats`.
//! `repository` and `model` load and check models at start; nothing on the
//! request path locks or touches the disk.

pub mod api;
pub mod batching;
pub mod config;
pub mod device;
pub mod error;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod reload;
pub mod repository;
pub mod routing;
pub mod shutdown;
pub mod stats;
pub mod synthetic;
pub mod telemetry;
pub mod training;
pub mod validation;

use anyhow::Context;
use api::serving::Serving;
use api::{auth, connections, tls};
use batching::Batcher;
use config::Settings;
use routing::ModelMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

/// Serves on `listener` until `shutdown` resolves, then drains and returns.
///
/// Health is NOT_SERVING from the first accepted connection until every model
/// is loaded and warmed; a repository that cannot be served ends `run` with
/// an error listing every problem.
pub async fn run(listener: TcpListener, settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let serving = Arc::new(Serving::new(&settings));
    // One signal stops everything run started: the gRPC port, the health-only
    // port, metrics, and the watchers that reload keys and certificates.
    let (stop, stopped) = watch::channel(());
    let stop_signal = |mut stopped: watch::Receiver<()>| async move {
        let _ = stopped.changed().await;
    };
    let hangups = reload::hangups(stop_signal(stopped.clone())).context("cannot listen for SIGHUP")?;
    let keys = match &settings.api_keys_file {
        Some(path) => {
            let store = auth::KeyStore::open(path).map_err(anyhow::Error::msg)?;
            tracing::info!(file = %path.display(), keys = store.len(), "API keys required on inference calls");
            reload::watch(store.clone(), hangups.clone(), stop_signal(stopped.clone()));
            Some(store)
        }
        None => {
            tracing::warn!("running OPEN: no --api-keys-file is set, so every caller is accepted");
            None
        }
    };
    let tls = match settings.tls_files().map_err(anyhow::Error::msg)? {
        Some(files) => {
            let tls = tls::Tls::open(files).map_err(anyhow::Error::msg)?;
            reload::watch(tls.clone(), hangups.clone(), stop_signal(stopped.clone()));
            Some(tls)
        }
        None => None,
    };
    let api::Routers { main, health_only, reporter } = api::router(serving.clone(), &settings, keys)?;
    // tonic-health reports "" as SERVING from the start; a probe without a
    // service name must not pass before the models are ready.
    api::set_health(&reporter, ServingStatus::NotServing).await;
    if let Some(address) = settings.metrics_address().map_err(anyhow::Error::msg)? {
        let listener =
            TcpListener::bind(address).await.with_context(|| format!("cannot serve metrics on {address}"))?;
        tracing::info!(address = %listener.local_addr()?, "metrics listening on /metrics");
        let in_flight = serving.clone();
        let until_stopped = stop_signal(stopped.clone());
        tokio::spawn(metrics::serve(listener, serving.metrics.clone(), move || in_flight.in_flight(), until_stopped));
    }

    if let Some(address) = settings.health_listen {
        let listener = TcpListener::bind(address).await.with_context(|| format!("cannot serve health on {address}"))?;
        tracing::info!(address = %listener.local_addr()?, "plaintext health-only port listening");
        let incoming = connections::incoming(listener, connection_limits(&settings), connections::plaintext());
        tokio::spawn(health_only.serve_with_incoming_shutdown(incoming, stop_signal(stopped.clone())));
    }
    let address = listener.local_addr()?;
    let limits = connection_limits(&settings);
    let mut server = match tls {
        Some(tls) => {
            let incoming = connections::incoming(listener, limits, tls.handshake());
            tokio::spawn(main.serve_with_incoming_shutdown(incoming, stop_signal(stopped)))
        }
        None => {
            let incoming = connections::incoming(listener, limits, connections::plaintext());
            tokio::spawn(main.serve_with_incoming_shutdown(incoming, stop_signal(stopped)))
        }
    };
    let scheme = if settings.tls_cert.is_some() { "TLS" } else { "plaintext" };
    tracing::info!(%address, scheme, models = %settings.models.display(), "listening; NOT_SERVING until the models are loaded");

    tokio::pin!(shutdown);
    let loaded = tokio::select! {
        loaded = load_models(&settings) => Some(loaded),
        _ = &mut shutdown => None,
    };
    let models = match loaded {
        Some(Ok(models)) => models,
        failed_or_stopped => {
            let _ = stop.send(());
            let _ = server.await;
            return match failed_or_stopped {
                Some(Err(error)) => Err(error),
                _ => {
                    tracing::info!("shutdown requested before the models were loaded; stopped");
                    Ok(())
                }
            };
        }
    };
    let count = models.models().count();
    let _workers = batching::Workers::start(models.models(), settings.compute_workers, settings.compute_threads)
        .context("cannot start the compute threads")?;
    serving.metrics.models_loaded(&models);
    serving.publish(models);
    api::set_health(&reporter, ServingStatus::Serving).await;
    tracing::info!(%address, models = count, "SERVING");

    tokio::select! {
        _ = &mut shutdown => {}
        ended = &mut server => {
            ended.context("server task failed")?.context("gRPC server failed")?;
            return Ok(());
        }
    }
    shutdown::drain(&reporter, &serving, Duration::from_secs_f64(settings.drain_seconds.max(0.0))).await;
    tracing::info!("drain period over: closing the listener, finishing in-flight requests");
    let _ = stop.send(());
    let grace = Duration::from_secs_f64(settings.drain_grace_seconds.max(0.0));
    match tokio::time::timeout(grace, &mut server).await {
        Ok(ended) => {
            ended.context("server task failed")?.context("gRPC server failed")?;
            tracing::info!("stopped");
        }
        Err(_) => {
            // tonic waits for every connection to close, and a client holding
            // a stream open would hold shutdown forever: past the grace period,
            // the remaining connections are dropped (callers see UNAVAILABLE).
            server.abort();
            tracing::warn!(
                grace_seconds = grace.as_secs_f64(),
                "calls still open after the grace period were cut off; stopped"
            );
        }
    }
    Ok(())
}

/// How the gRPC ports accept connections.
fn connection_limits(settings: &Settings) -> connections::Limits {
    connections::Limits {
        max_connections: settings.max_connections,
        handshake_timeout: Duration::from_secs_f64(settings.handshake_timeout_seconds.max(0.001)),
    }
}

/// Opens the device and loads, checks and warms the repository, off the reactor.
async fn load_models(settings: &Settings) -> anyhow::Result<ModelMap> {
    let (spec, dir, default) = (settings.device, settings.models.clone(), settings.default_segment.clone());
    let overrides = settings.batching_overrides();
    let max_model_bytes = settings.max_model_bytes;
    tokio::task::spawn_blocking(move || {
        let (device, device_name) = device::open(spec)?;
        let mut models = repository::load(&dir, &device, &device_name, max_model_bytes)?;
        for model in &mut models {
            model.batcher = Batcher::new(batching::Policy::resolve(&model.manifest.batching, &overrides));
        }
        ModelMap::new(models, default.as_deref()).map_err(anyhow::Error::msg)
    })
    .await
    .context("model loading task failed")?
}
