//! The front's context of one call (or one message of a stream): its
//! service and method, request id, deadline and trace span, built from the
//! request's headers (gRPC metadata is HTTP/2 headers; the HTTP front's
//! are HTTP/1.1's); and recording its outcome once, in the metrics and the
//! span, as it is answered. The core sees the request as an `Inference`
//! (routing key, deadline, the id answers are kept under) and reports back
//! through `Progress`.

use crate::core::batching::Timing;
use crate::core::engine::{Inference, Progress};
use crate::core::error::{Canonical, ServeError};
use crate::core::scoring::Deadline;
use crate::model::LoadedModel;
use crate::observe::{metrics::Metrics, telemetry};
use http::HeaderMap;
use opentelemetry::propagation::Extractor;
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tonic::Status;

/// One call being served.
#[derive(Clone)]
pub struct Call {
    /// The gRPC service and method, for metrics.
    pub service: &'static str,
    pub method: &'static str,
    /// The segment and version the call was routed to, once known.
    route: OnceLock<(String, u64)>,
    /// Where the call's outcome is counted.
    metrics: Arc<Metrics>,
    /// The request id its answers are kept under for `Feedback`: the call's
    /// own; for a stream message, the stream's and the message's id
    /// (`<stream id>/<message id>`; none for a message without an id, whose
    /// rows no outcome could name).
    answer_id: Option<String>,
    /// The call's trace span; fields are recorded as they become known.
    span: tracing::Span,
    /// The id the response carries: the caller's own, or one generated.
    pub request_id: String,
    /// How logs name the call: a generated id as is, a caller's id only as a
    /// salted hash (it may identify a person or an order).
    pub log_id: String,
    /// The caller's `x-routing-key` (a customer, an account), which keeps
    /// one caller on one side of a canary split.
    routing_key: Option<String>,
    /// When the call arrived and the caller's deadline.
    pub deadline: Deadline,
}

impl Call {
    /// The context of a call arriving with `headers`: its request id (the
    /// caller's `x-request-id` when it is a sane token, else a fresh UUID),
    /// how logs name it (hashed with `log_salt`), its deadline (see
    /// `requested_timeout`) and its span.
    pub fn new(
        headers: &HeaderMap,
        service: &'static str,
        method: &'static str,
        log_salt: &[u8],
        metrics: Arc<Metrics>,
    ) -> Call {
        let received = Instant::now();
        let token = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        };
        let caller_id = token("x-request-id");
        let routing_key = token("x-routing-key").map(str::to_string);
        let (request_id, log_id) = match caller_id {
            Some(id) => {
                let digest = Sha256::new().chain_update(log_salt).chain_update(id.as_bytes()).finalize();
                let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
                (id.to_string(), format!("h:{short}"))
            }
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                (id.clone(), id)
            }
        };
        // A malformed timeout was refused by the front before the call was made.
        let at = requested_timeout(headers).ok().flatten().map(|t| received + t);
        let parent = || opentelemetry::global::get_text_map_propagator(|p| p.extract(&TraceHeaders(headers)));
        Call {
            service,
            method,
            route: OnceLock::new(),
            metrics,
            answer_id: Some(request_id.clone()),
            span: telemetry::call_span(parent, service, method, &log_id),
            request_id,
            log_id,
            routing_key,
            deadline: Deadline { received, at },
        }
    }

    /// This call's request for `segment` and `version`, as the core takes
    /// it. Its side of a canary split is drawn by the caller's
    /// `x-routing-key`, else its request id (a fresh UUID when the caller
    /// sent none: a random draw). `explain`: the reasons asked for per row.
    pub fn inference<'a>(&'a self, segment: &'a str, version: u64, explain: u32) -> Inference<'a> {
        Inference {
            segment,
            version,
            routing_key: self.routing_key.as_deref().unwrap_or(&self.request_id),
            deadline: self.deadline,
            answer_id: self.answer_id.as_deref(),
            explain: explain as usize,
        }
    }

    /// The same call's context for one message of its stream: timed and
    /// routed on its own.
    pub fn message(&self) -> Call {
        let deadline = Deadline { received: Instant::now(), ..self.deadline };
        Call { deadline, route: OnceLock::new(), answer_id: None, ..self.clone() }
    }

    /// This stream message's call, its answers kept for outcomes under
    /// `<stream request id>/<id>` (`id`: the message's own).
    pub fn named(&self, id: &str) -> Call {
        let answer_id = (!id.is_empty()).then(|| format!("{}/{id}", self.request_id));
        Call { answer_id, ..self.clone() }
    }

    /// Records the call's (or stream message's) outcome once, in the metrics
    /// and its span, and returns it (an internal error as `reported`).
    pub fn finished<T>(&self, result: Result<T, ServeError>) -> Result<T, ServeError> {
        self.record(result.as_ref().err());
        result.map_err(|error| self.reported(error))
    }

    /// Records the call's outcome and answers it as gRPC does.
    pub fn finish<T>(&self, result: Result<T, ServeError>) -> Result<T, Status> {
        self.finished(result).map_err(Status::from)
    }

    /// Records a call refused with `error`, and answers it.
    pub fn refuse(&self, error: ServeError) -> Status {
        self.record(Some(&error));
        Status::from(self.reported(error))
    }

    fn record(&self, error: Option<&ServeError>) {
        let code = error.map_or(Canonical::Ok, ServeError::canonical);
        let (segment, version) = self.route.get().map_or(("", 0), |(segment, version)| (segment.as_str(), *version));
        let elapsed = self.deadline.received.elapsed();
        self.metrics.record_call(self.service, self.method, segment, version, code.name(), elapsed);
        self.span.record("rpc.grpc.status_code", code.number());
    }

    /// `error` as the caller is told it: an internal error is logged with the
    /// call's log id, and its message gives the caller the request id to report.
    fn reported(&self, error: ServeError) -> ServeError {
        match error {
            ServeError::Internal(message) => {
                tracing::error!(request = self.log_id, %message, "inference failed");
                ServeError::Internal(format!("{message} (request id {})", self.request_id))
            }
            other => other,
        }
    }
}

/// The call's metrics and span are labelled by the model it was routed
/// to, and its span notes where the time to score went.
impl Progress for Call {
    fn routed(&self, model: &LoadedModel) {
        if self.route.set((model.segment.clone(), model.version)).is_ok() {
            self.span.record("segment", model.segment.as_str());
            self.span.record("version", model.version);
        }
    }

    fn scored(&self, rows: usize, timing: &Timing) {
        self.span.record("rows", rows);
        self.span.record("batch_rows", timing.batch_rows);
        self.span.record("queue_seconds", timing.queue.as_secs_f64());
        self.span.record("compute_seconds", timing.compute.as_secs_f64());
    }
}

/// How long the caller will wait: gRPC's `grpc-timeout`, else (the HTTP
/// front's callers) `x-request-timeout` or `request-timeout`, in seconds
/// (`0.25`) or with a unit (`250ms`, `2s`). A header that is present but is
/// not a timeout is refused naming the header (the fronts check it before
/// anything else): a caller who meant a deadline must not silently get none.
pub fn requested_timeout(headers: &HeaderMap) -> Result<Option<Duration>, ServeError> {
    let header =
        |name: &'static str| headers.get(name).map(|v| (name, v.to_str().map(str::trim).unwrap_or("\u{fffd}")));
    let refused = |name: &str, value: &str, how: &str| {
        let shown: String = value.chars().take(40).collect();
        ServeError::invalid(name, format!("is `{shown}`, not a timeout: {how}"))
    };
    if let Some((name, value)) = header("grpc-timeout") {
        return grpc_timeout(value).map(Some).ok_or_else(|| {
            refused(name, value, "gRPC timeouts are up to 8 digits and a unit (H, M, S, m, u, n), e.g. 250m")
        });
    }
    let Some((name, value)) = header("x-request-timeout").or_else(|| header("request-timeout")) else {
        return Ok(None);
    };
    let parsed = match value.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds).ok(),
        Err(_) => humantime::parse_duration(value).ok(),
    };
    parsed.map(Some).ok_or_else(|| refused(name, value, "give seconds (0.25) or a duration with a unit (250ms, 2s)"))
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Reads W3C trace context (`traceparent`) from the request's headers.
struct TraceHeaders<'a>(&'a HeaderMap);

impl Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{grpc_timeout, requested_timeout};
    use http::HeaderMap;
    use std::time::Duration;

    #[test]
    fn http_callers_say_their_timeout_in_seconds_or_with_a_unit() {
        let timeout = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, value.parse().unwrap());
            }
            requested_timeout(&headers).map_err(|error| error.to_string())
        };
        assert_eq!(timeout(&[("x-request-timeout", "0.25")]), Ok(Some(Duration::from_millis(250))));
        assert_eq!(timeout(&[("request-timeout", "250ms")]), Ok(Some(Duration::from_millis(250))));
        assert_eq!(timeout(&[("x-request-timeout", "2")]), Ok(Some(Duration::from_secs(2))));
        assert_eq!(timeout(&[("grpc-timeout", "5m"), ("x-request-timeout", "9")]), Ok(Some(Duration::from_millis(5))));
        assert_eq!(timeout(&[]), Ok(None));
        for bad in ["-1", "-5", "soon", "garbage", "NaN", "1e30", "inf"] {
            let refused = timeout(&[("x-request-timeout", bad)]).unwrap_err();
            assert!(refused.contains("x-request-timeout") && refused.contains("not a timeout"), "{bad}: {refused}");
        }
        let refused = timeout(&[("grpc-timeout", "10x")]).unwrap_err();
        assert!(refused.contains("grpc-timeout"), "{refused}");
    }

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("5000u"), Some(Duration::from_micros(5000)));
        assert_eq!(grpc_timeout("123456789m"), None, "at most 8 digits");
        assert_eq!(grpc_timeout("m"), None);
        assert_eq!(grpc_timeout("10x"), None);
        assert_eq!(grpc_timeout(""), None);
    }
}
