//! What every request handler of the front shares: the core's door
//! (`Engine`: the models once loaded, the answers kept for outcomes), the
//! request limits and admission. The repository is set exactly once, after
//! loading and warm-up; until then handlers answer UNAVAILABLE. Reading it is
//! an atomic load, so the request path takes no lock.

use super::call::Call;
use crate::config::Settings;
use crate::core::engine::Engine;
use crate::core::error::ServeError;
use crate::core::explaining::ExplainLimits;
use crate::core::live::LiveRepository;
use crate::core::outcomes::{OutcomeSettings, Outcomes};
use crate::core::registry::Registry;
use crate::observe::metrics::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a refused caller is told to wait before retrying.
const RETRY_AFTER: Duration = Duration::from_millis(50);

/// The per-request limits, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_concurrent_requests: usize,
    pub max_rows: usize,
    pub max_message_bytes: usize,
    pub stream_chunk_rows: usize,
    pub stream_in_flight: usize,
    /// How long a stream may send nothing before it is ended.
    pub stream_idle: Duration,
    /// The most bytes of request headers (metadata) a call may carry, as
    /// HTTP/2 counts them (name + value + 32 per header).
    pub max_header_bytes: usize,
}

impl RequestLimits {
    /// The largest message tonic decodes (twice --max-message-bytes): one
    /// over the limit but under this still decodes and is refused naming the
    /// limit; a larger one is refused by the transport, never buffered.
    pub fn largest_message(&self) -> usize {
        self.max_message_bytes.saturating_mul(2)
    }
}

/// State shared by the API handlers.
pub struct Serving {
    /// The core's door for every scoring request.
    pub engine: Engine,
    draining: AtomicBool,
    /// One permit per inference call in progress (--max-concurrent-requests).
    admission: Arc<Semaphore>,
    /// Salt for hashing callers' request ids in logs; new each start.
    log_salt: [u8; 16],
    pub metrics: Arc<Metrics>,
    pub limits: RequestLimits,
}

impl Serving {
    pub fn new(settings: &Settings) -> Serving {
        Serving {
            engine: Engine::new(
                Arc::new(Outcomes::new(OutcomeSettings {
                    retention: settings.feedback_retention,
                    max_records: settings.feedback_max_records,
                    quality_window: settings.quality_window,
                    min_outcomes: settings.quality_min_outcomes,
                })),
                ExplainLimits { max_reasons: settings.max_explain, max_rows: settings.max_explain_rows },
            ),
            draining: AtomicBool::new(false),
            admission: Arc::new(Semaphore::new(settings.max_concurrent_requests.max(1))),
            log_salt: *uuid::Uuid::new_v4().as_bytes(),
            metrics: Arc::new(Metrics::new()),
            limits: RequestLimits {
                max_concurrent_requests: settings.max_concurrent_requests.max(1),
                max_rows: settings.max_rows.max(1),
                max_message_bytes: settings.max_message_bytes,
                stream_chunk_rows: settings.stream_chunk_rows.max(1),
                stream_in_flight: settings.stream_in_flight.max(1),
                stream_idle: Duration::from_secs_f64(settings.stream_idle_seconds.max(0.001)),
                max_header_bytes: settings.max_header_bytes,
            },
        }
    }

    /// The live repository, once started.
    pub fn repository(&self) -> Result<&Arc<LiveRepository>, ServeError> {
        self.engine.repository()
    }

    /// Marks the server as draining: still answering, no longer ready.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the server is ready for new traffic: serving models and not draining.
    pub fn is_ready(&self) -> bool {
        self.models().is_ok_and(|models| models.models().next().is_some()) && !self.is_draining()
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A snapshot of the served models (one atomic load; a request reads
    /// only this snapshot), or UNAVAILABLE while they are still loading.
    pub fn models(&self) -> Result<Arc<Registry>, ServeError> {
        self.engine.models()
    }

    /// The context of a call arriving with `headers` (see `Call::new`).
    pub fn call(&self, headers: &http::HeaderMap, service: &'static str, method: &'static str) -> Call {
        Call::new(headers, service, method, &self.log_salt, self.metrics.clone())
    }

    /// Inference calls being served now.
    pub fn in_flight(&self) -> usize {
        self.limits.max_concurrent_requests - self.admission.available_permits()
    }

    /// Admits one inference call, or refuses it at once when
    /// --max-concurrent-requests are already in progress: excess load is shed,
    /// never queued without bound. The call holds the permit until it ends.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ServeError> {
        self.admission.clone().try_acquire_owned().map_err(|_| ServeError::Overloaded {
            message: format!(
                "the server is serving its limit of {} concurrent calls; retry after the RetryInfo delay",
                self.limits.max_concurrent_requests
            ),
            retry_after: RETRY_AFTER,
        })
    }

    /// The permit the gate took for this call (see `api::gate`), or, for a
    /// call that did not pass the gate, one taken now.
    pub fn admitted(&self, extensions: &http::Extensions) -> Result<OwnedSemaphorePermit, ServeError> {
        match extensions.get::<Admitted>().and_then(|admitted| admitted.take()) {
            Some(permit) => Ok(permit),
            None => self.admit(),
        }
    }

    /// Refuses a call whose headers are over --max-header-bytes: one call's
    /// oversized metadata fails that call alone, never its connection.
    pub fn check_headers(&self, headers: &http::HeaderMap) -> Result<(), ServeError> {
        let size: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 32).sum();
        let limit = self.limits.max_header_bytes;
        if size > limit {
            return Err(ServeError::invalid(
                "(headers)",
                format!(
                    "are {size} bytes (HTTP/2 counts name + value + 32 per header); this server accepts at most {limit} (--max-header-bytes): send less metadata"
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a decoded message larger than the configured limit.
    pub fn check_message_size(&self, encoded_len: usize) -> Result<(), ServeError> {
        let limit = self.limits.max_message_bytes;
        if encoded_len > limit {
            return Err(ServeError::invalid(
                "(message)",
                format!(
                    "is {encoded_len} bytes; this server accepts messages of at most {limit} bytes: split the batch"
                ),
            ));
        }
        Ok(())
    }
}

/// A permit taken at the gate, for the handler to hold while it works. The
/// handler takes it out; if it never runs, the permit goes with the request.
#[derive(Clone)]
pub struct Admitted(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Admitted {
    pub fn new(permit: OwnedSemaphorePermit) -> Admitted {
        Admitted(Arc::new(Mutex::new(Some(permit))))
    }

    /// The permit, once.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}
