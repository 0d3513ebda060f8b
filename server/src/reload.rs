//! Re-reading files that may change under a running server (API keys, TLS
//! certificates): on SIGHUP, and when their content changes, checked every
//! few seconds (polling also sees Kubernetes Secret updates, which swap
//! symlinks rather than write files). A reload that fails keeps what was
//! loaded before: a bad edit never takes a working server down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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

/// Reloads `item` on SIGHUP and every few seconds, until `stop` resolves.
pub fn watch(item: Arc<dyn Reload>, stop: impl Future<Output = ()> + Send + 'static) {
    let watching = async move {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(POLL);
        loop {
            match hangup.as_mut() {
                Some(signal) => tokio::select! {
                    _ = signal.recv() => tracing::info!(what = item.name(), "SIGHUP: re-reading"),
                    _ = tick.tick() => {}
                },
                None => {
                    tick.tick().await;
                }
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
