//! Candela's server: a model repository served over gRPC.
//!
//! `run` takes an already-bound listener and a shutdown future, so the binary
//! and the tests start the server the same way. The code is in layers, each
//! importing only the layers below it:
//!
//! - `api`: the fronts, the only code that knows a wire format (gRPC, HTTP,
//!   the generated `candela` types): they translate requests for the core's
//!   one door and answers back; connections, the gate, auth, TLS, each
//!   call's transport context, and the mappings from core errors to statuses.
//! - `config`: every setting (flags, environment, file), read by `run` and
//!   the front.
//! - `core`: the serving core, transport-neutral: the one door per request
//!   (`core::engine`), the live repository and its registry, release safety,
//!   scoring (validation → batching → the compute workers), outcomes,
//!   quality, drift, per-model statistics and the core error.
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

use crate::core::drift::DriftSettings;
use crate::core::live::{self, LiveRepository};
use crate::core::served::Compute;
use crate::observe::metrics::Metrics;
use anyhow::Context;
use api::grpc::router;
use api::serving::Serving;
use api::{auth, connections, gate, http, reload, shutdown, tls};
use config::{OnBrokenModel, Settings, seconds};
use model::device;
use model::remote::Location;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

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
    // Key files, each re-read on SIGHUP and when it changes.
    let key_store = |path: &Option<std::path::PathBuf>, what: &str| -> anyhow::Result<_> {
        let Some(path) = path else { return Ok(None) };
        let store = auth::KeyStore::open(path).map_err(anyhow::Error::msg)?;
        tracing::info!(file = %path.display(), keys = store.len(), "{what}");
        reload::watch(store.clone(), hangups.clone(), stop_signal(stopped.clone()));
        Ok(Some(store))
    };
    let keys = key_store(&settings.api_keys_file, "API keys required on inference calls")?;
    if keys.is_none() {
        tracing::warn!("running OPEN: no --api-keys-file is set, so every caller is accepted");
    }
    let admin = key_store(&settings.admin_keys_file, "admin keys may load and unload models")?;
    let tls = match settings.tls_files().map_err(anyhow::Error::msg)? {
        Some(files) => {
            let tls = tls::Tls::open(files).map_err(anyhow::Error::msg)?;
            reload::watch(tls.clone(), hangups.clone(), stop_signal(stopped.clone()));
            Some(tls)
        }
        None => None,
    };
    // One budget of incomplete request bodies for both ports.
    let budget = gate::Budget::new(settings.max_pending_request_bytes);
    let router::Routers { main, health_only, reporter } =
        router::router(serving.clone(), &settings, keys.clone(), admin.clone(), budget.clone())?;
    // tonic-health reports "" as SERVING from the start; a probe without a
    // service name must not pass before the models are ready.
    router::set_health(&reporter, ServingStatus::NotServing).await;
    if let Some(address) = settings.metrics_address().map_err(anyhow::Error::msg)? {
        let listener =
            TcpListener::bind(address).await.with_context(|| format!("cannot serve metrics on {address}"))?;
        tracing::info!(address = %listener.local_addr()?, "metrics listening on /metrics");
        let incoming = connections::incoming(listener, connection_limits(&settings), connections::plaintext_http());
        let idle = Duration::from_secs_f64(settings.http_idle_seconds.max(0.001));
        let app = http::metrics::router(serving.clone());
        tokio::spawn(http::serve(incoming, app, idle, stop_signal(stopped.clone())));
    }

    if let Some(address) = settings.health_listen {
        let listener = TcpListener::bind(address).await.with_context(|| format!("cannot serve health on {address}"))?;
        tracing::info!(address = %listener.local_addr()?, "plaintext health-only port listening");
        let incoming = connections::incoming(listener, connection_limits(&settings), connections::plaintext());
        tokio::spawn(health_only.serve_with_incoming_shutdown(incoming, stop_signal(stopped.clone())));
    }
    let mut http_server = match settings.http_address().map_err(anyhow::Error::msg)? {
        Some(address) => {
            let listener =
                TcpListener::bind(address).await.with_context(|| format!("cannot serve HTTP on {address}"))?;
            let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
            tracing::info!(address = %listener.local_addr()?, scheme, "HTTP API listening");
            let idle = Duration::from_secs_f64(settings.http_idle_seconds.max(0.001));
            let front = Arc::new(http::Front {
                serving: serving.clone(),
                auth: auth::Authenticator::new(keys.clone(), admin.clone()),
                admin: auth::AdminGuard::new(admin, keys),
                bounds: http::body::Bounds { max_bytes: settings.max_message_bytes, budget, within: idle },
            });
            let app = http::router(front);
            let (limits, stopped) = (connection_limits(&settings), stop_signal(stopped.clone()));
            Some(match &tls {
                Some(tls) => {
                    let incoming = connections::incoming(listener, limits, tls.clone().handshake(tls::Protocol::Http));
                    tokio::spawn(http::serve(incoming, app, idle, stopped))
                }
                None => {
                    let incoming = connections::incoming(listener, limits, connections::plaintext_http());
                    tokio::spawn(http::serve(incoming, app, idle, stopped))
                }
            })
        }
        None => None,
    };
    let address = listener.local_addr()?;
    let limits = connection_limits(&settings);
    let mut server = match tls {
        Some(tls) => {
            let incoming = connections::incoming(listener, limits, tls.handshake(tls::Protocol::Grpc));
            tokio::spawn(main.serve_with_incoming_shutdown(incoming, stop_signal(stopped.clone())))
        }
        None => {
            let incoming = connections::incoming(listener, limits, connections::plaintext());
            tokio::spawn(main.serve_with_incoming_shutdown(incoming, stop_signal(stopped.clone())))
        }
    };
    let scheme = if settings.tls_cert.is_some() { "TLS" } else { "plaintext" };
    tracing::info!(%address, scheme, models = %settings.models, "listening; NOT_SERVING until the models are loaded");

    tokio::pin!(shutdown);
    let loaded = tokio::select! {
        loaded = start_repository(&settings, serving.metrics.clone()) => Some(loaded),
        _ = &mut shutdown => None,
    };
    let repository = match loaded {
        Some(Ok(repository)) => repository,
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
    serving.engine.publish(repository.clone());
    tokio::spawn(repository.clone().watch(
        seconds(settings.repository_poll_seconds),
        hangups,
        stop_signal(stopped.clone()),
    ));
    tokio::spawn(repository.clone().supervise(serving.engine.outcomes.clone(), stop_signal(stopped.clone())));
    tokio::spawn(follow_readiness(repository.served_count(), serving.clone(), reporter.clone(), address));

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
    let ended = async {
        let ended = (&mut server).await;
        if let Some(http_server) = &mut http_server {
            let _ = http_server.await;
        }
        ended
    };
    match tokio::time::timeout(grace, ended).await {
        Ok(ended) => {
            ended.context("server task failed")?.context("gRPC server failed")?;
            tracing::info!("stopped");
        }
        Err(_) => {
            // tonic waits for every connection to close, and a client holding
            // a stream open would hold shutdown forever: past the grace period,
            // the remaining connections are dropped (callers see UNAVAILABLE).
            server.abort();
            if let Some(http_server) = &http_server {
                http_server.abort();
            }
            tracing::warn!(
                grace_seconds = grace.as_secs_f64(),
                "calls still open after the grace period were cut off; stopped"
            );
        }
    }
    Ok(())
}

/// How the gRPC ports accept connections.
fn connection_limits(settings: &Settings) -> connections::ConnectionLimits {
    connections::ConnectionLimits {
        max_connections: settings.max_connections,
        handshake_timeout: Duration::from_secs_f64(settings.handshake_timeout_seconds.max(0.001)),
    }
}

/// Opens the device and starts the live repository: loads, checks and warms
/// every model, off the reactor. With --on-broken-model refuse, any problem
/// ends the start with every problem listed.
async fn start_repository(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Arc<LiveRepository>> {
    let location = Location::open(&settings.models, &settings.model_cache).map_err(anyhow::Error::msg)?;
    if let Location::Mirrored(_) = location {
        tracing::info!(models = settings.models, cache = %settings.model_cache.display(), "model repository in object storage");
    }
    let options = live::Options {
        location,
        max_model_bytes: settings.max_model_bytes,
        policy: settings.version_policy,
        max_versions_per_segment: settings.max_versions_per_segment,
        max_loaded_versions: settings.max_loaded_versions,
        overrides: settings.batching_overrides(),
        compute: Compute {
            workers: settings.compute_workers,
            threads: settings.compute_threads,
            drift: DriftSettings {
                window: Duration::from_secs_f64(settings.drift_window_seconds.max(0.1)),
                min_rows: settings.drift_min_rows,
                max_rows: settings.drift_max_rows,
            },
        },
        default_segment: settings.default_segment.clone(),
        max_model_age: settings.max_model_age,
    };
    metrics.set_max_model_age(settings.max_model_age);
    let (spec, refuse) = (settings.device, settings.on_broken_model == OnBrokenModel::Refuse);
    let runtime = tokio::runtime::Handle::current();
    let repository = tokio::task::spawn_blocking(move || {
        let (device, device_name) = device::open(spec)?;
        anyhow::Ok(Arc::new(LiveRepository::new(options, device, device_name, metrics, runtime)))
    })
    .await
    .context("opening the device failed")??;
    repository.start(refuse).await?;
    Ok(repository)
}

/// Reports SERVING while the repository serves at least one model (and the
/// server is not draining), NOT_SERVING otherwise.
async fn follow_readiness(
    mut count: watch::Receiver<usize>,
    serving: Arc<Serving>,
    reporter: HealthReporter,
    address: std::net::SocketAddr,
) {
    let mut reported = None;
    loop {
        let models = *count.borrow_and_update();
        let ready = models > 0;
        if reported != Some(ready) && !serving.is_draining() {
            let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
            router::set_health(&reporter, status).await;
            match ready {
                true => tracing::info!(%address, models, "SERVING"),
                false => tracing::warn!(%address, "NOT_SERVING: no model can be served; publish one"),
            }
            reported = Some(ready);
        }
        if count.changed().await.is_err() {
            return;
        }
    }
}
