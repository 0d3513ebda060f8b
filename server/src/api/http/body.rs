//! Reading an HTTP request body whole, and parsing it as JSON with errors
//! that name the field (`parse`). Bodies are read within the gRPC port's bounds: at
//! most --max-message-bytes (413 beyond; refused before a byte is read when
//! `Content-Length` says so), charged while it arrives against the
//! server-wide budget of incomplete request bodies that gRPC messages share
//! (--max-pending-request-bytes; 429 when it is spent), and within the idle
//! timeout (408), so slow or stalled uploads cannot hoard memory or a
//! concurrency slot.

use super::super::gate::Budget;
use super::answer::Refused;
use crate::core::error::ServeError;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::time::Duration;

/// How request bodies are bounded.
#[derive(Clone)]
pub struct Bounds {
    pub max_bytes: usize,
    pub budget: std::sync::Arc<Budget>,
    /// How long the whole body may take to arrive.
    pub within: Duration,
}

/// Bytes charged to the budget, returned when dropped (the body complete,
/// refused, or its caller gone).
struct Charged<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl Drop for Charged<'_> {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// The request's body, whole.
pub async fn read(headers: &HeaderMap, body: Body, bounds: &Bounds) -> Result<Bytes, Refused> {
    let too_large = |bytes: String| {
        Refused::from(ServeError::invalid(
            "(body)",
            format!(
                "is {bytes} bytes; this server accepts request bodies of at most {} bytes (--max-message-bytes): split the batch",
                bounds.max_bytes
            ),
        ))
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(length) = declared.filter(|length| *length > bounds.max_bytes) {
        return Err(too_large(length.to_string()));
    }
    let reading = async {
        let mut charged = Charged { budget: &bounds.budget, bytes: 0 };
        let mut whole = BytesMut::with_capacity(declared.unwrap_or(0));
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk
                .map_err(|error| Refused::from(ServeError::invalid("(body)", format!("could not be read: {error}"))))?;
            if whole.len() + chunk.len() > bounds.max_bytes {
                return Err(too_large(format!("more than {}", bounds.max_bytes)));
            }
            if !bounds.budget.charge(chunk.len()) {
                return Err(Refused::from(ServeError::Overloaded {
                    message: format!(
                        "the server is holding its limit of {} bytes of incomplete request bodies (--max-pending-request-bytes); retry shortly, or send smaller requests",
                        bounds.budget.limit()
                    ),
                    retry_after: Duration::from_secs(1),
                }));
            }
            charged.bytes += chunk.len();
            whole.extend_from_slice(&chunk);
        }
        Ok(whole.freeze())
    };
    match tokio::time::timeout(bounds.within, reading).await {
        Ok(read) => read,
        Err(_) => Err(Refused::from(ServeError::DeadlineExceeded(format!(
            "the request body did not arrive within {} s (--http-idle-seconds)",
            bounds.within.as_secs_f64()
        )))
        .with_status(StatusCode::REQUEST_TIMEOUT)),
    }
}

/// `body` as JSON of type `T`; a violation names the field that does not
/// fit (`inputs[0].shape`), or the body when it is not JSON at all.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refused> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let path = error.path().to_string();
        unparsed(path, error.into_inner())
    })?;
    json.end().map_err(|error| unparsed(".".to_string(), error))?;
    Ok(value)
}

/// Why a body did not parse: the body when it is not JSON, else the field
/// at `path` (`.`: the body itself).
fn unparsed(path: String, error: serde_json::Error) -> Refused {
    let violation = match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            ("(body)".to_string(), format!("is not valid JSON: {error}"))
        }
        _ if path == "." => ("(body)".to_string(), format!("is invalid: {error}")),
        _ => (path, format!("is invalid: {error}")),
    };
    Refused::from(ServeError::invalid(violation.0, violation.1))
}
