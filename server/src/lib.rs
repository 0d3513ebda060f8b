//! Candela's server: a model repository served over gRPC.
//!
//! `run` takes an already-bound listener and a shutdown future, so the binary
//! and the tests start the server the same way. The code is in layers, each
//! importing only the layers below it:
//!
//! - `api`: the front, the only code that speaks gRPC (tonic, prost, the
//!   generated `candela` types): services, connections, the gate, auth, TLS,
//!   each call's context, and the one mapping from core errors to statuses.
//! - `config`: every setting (flags, environment, file), read by `run` and
//!   the front.
//! - `core`: the serving core, transport-neutral: the registry of served
//!   models, scoring (validation → batching → the compute workers), per-model
//!   statistics and the core error.
//! - `model`: load time: the repository scan, manifests, files, the device,
//!   and the network whose forward pass is the model interface the core
//!   calls. Nothing in it runs on the request path except that pass.
//! - `observe`: metrics and telemetry, leaf sinks taking plain labels that
//!   every layer may report to.
//!
//! The demo data generator and trainer (`train`, the `candela-train`
//! binary) are behind the `train` feature; the test harness (`testing`)
//! behind `test-util`.

pub mod api;
pub mod config;
pub mod core;
pub mod model;
pub mod observe;
#[cfg(feature = "test-util")]
pub mod testing;
#[cfg(feature = "train")]
pub mod train;

use crate::core::registry::{Registry, ServedModel};
use crate::core::workers::Workers;
use crate::observe::metrics::{self, Metrics};
use anyhow::Context;
use api::serving::Serving;
use api::{auth, connections, reload, router, shutdown, tls};
use config::Settings;
use model::{LoadedModel, device, repository};
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
    let router::Routers { main, health_only, reporter } = router::router(serving.clone(), &settings, keys)?;
    // tonic-health reports "" as SERVING from the start; a probe without a
    // service name must not pass before the models are ready.
    router::set_health(&reporter, ServingStatus::NotServing).await;
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
    let models = match loaded.map(|loaded| loaded.and_then(|loaded| serve(loaded, &settings, &serving.metrics))) {
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
    let _workers = Workers::start(models.models(), settings.compute_workers, settings.compute_threads)
        .context("cannot start the compute threads")?;
    serving.publish(models);
    router::set_health(&reporter, ServingStatus::Serving).await;
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
async fn load_models(settings: &Settings) -> anyhow::Result<Vec<LoadedModel>> {
    let (spec, dir, max_model_bytes) = (settings.device, settings.models.clone(), settings.max_model_bytes);
    tokio::task::spawn_blocking(move || {
        let (device, device_name) = device::open(spec)?;
        Ok(repository::load(&dir, &device, &device_name, max_model_bytes)?)
    })
    .await
    .context("model loading task failed")?
}

/// Serves the loaded models: each gets its queue under the batching policy
/// and statistics, and is published in the metrics.
fn serve(loaded: Vec<LoadedModel>, settings: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<Registry> {
    let overrides = settings.batching_overrides();
    let mut models = Vec::with_capacity(loaded.len());
    for model in loaded {
        let (dtype, created) = (model.manifest.dtype.as_str(), &model.manifest.provenance.created);
        metrics.model_loaded(&model.segment, model.version, dtype, &model.device, created);
        models.push(ServedModel::new(model, &overrides, metrics.clone()));
    }
    Registry::new(models, settings.default_segment.as_deref()).map_err(anyhow::Error::msg)
}
