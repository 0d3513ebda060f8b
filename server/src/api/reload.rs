//! Re-reading files that may change under a running server (API keys, TLS
//! certificates): on SIGHUP, and when their content changes, checked every
//! few seconds (polling also sees Kubernetes Secret updates, which swap
//! symlinks rather than write files). A reload that fails keeps what was
//! loaded before: a bad edit never takes a working server down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often watched files are checked for changes.
const POLL: Duration = Duration::from_secs(2);

/// Something built from files, rebuilt when they change.
pub trait Reload: Send + Sync + 'static {
    /// What it is, for log lines.
    fn name(&self) -> &'static str;
    /// Re-reads the files and swaps in the result if they changed; keeps the
    /// current state (and logs why) if they cannot be used.
    fn reload(&self);
}

/// Listens for SIGHUP until `stop` resolves; the receiver changes on each.
/// Installed first thing in `run`, whatever is configured: SIGHUP means
/// "reload what can be reloaded", and its default action would end the
/// process without a drain. tokio keeps the handler installed for the life
/// of the process, so a SIGHUP after `stop` is ignored, never fatal.
pub fn hangups(stop: impl Future<Output = ()> + Send + 'static) -> std::io::Result<watch::Receiver<()>> {
    let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (sender, receiver) = watch::channel(());
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                received = signal.recv() => {
                    if received.is_none() {
                        break;
                    }
                    // The receiver returned by `hangups` is kept by `run`; the rest are watchers.
                    let watchers = sender.receiver_count().saturating_sub(1);
                    tracing::info!(watchers, "SIGHUP: re-reading what can be reloaded");
                    sender.send_replace(());
                }
                _ = &mut stop => break,
            }
        }
    });
    Ok(receiver)
}

/// Reloads `item` on each SIGHUP (from `hangups`) and every few seconds,
/// until `stop` resolves.
pub fn watch(item: Arc<dyn Reload>, mut hangups: watch::Receiver<()>, stop: impl Future<Output = ()> + Send + 'static) {
    let watching = async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                changed = hangups.changed() => {
                    if changed.is_err() {
                        // The SIGHUP listener has stopped: the server is stopping.
                        std::future::pending::<()>().await;
                    }
                    tracing::info!(what = item.name(), "SIGHUP: re-reading");
                }
                _ = tick.tick() => {}
            }
            let item = item.clone();
            let _ = tokio::task::spawn_blocking(move || item.reload()).await;
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = watching => {}
            _ = stop => {}
        }
    });
}
