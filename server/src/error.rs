//! The one error type of the serving core and its one mapping to gRPC status.
//! Handlers end in `?`; every variant maps to its code on purpose (see the
//! table in DESIGN.md), and invalid input carries `google.rpc.BadRequest`
//! field violations so callers learn which row and field to fix.

use candela::v1;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// At most this many field violations are listed; the message gives the total.
pub const MAX_VIOLATIONS: usize = 16;

/// The most characters of a caller's own text (a segment name, a tensor
/// name) an error message repeats back.
pub const ECHO_CHARS: usize = 48;

/// A caller's text as an error message may repeat it: at most `ECHO_CHARS`
/// characters, control characters escaped, and the full length said when
/// cut, so a huge name cannot blow up the status (gRPC clients refuse
/// metadata over a few KiB and would report RESOURCE_EXHAUSTED instead).
pub fn echo(text: &str) -> String {
    let mut shown: String = text.chars().take(ECHO_CHARS).flat_map(char::escape_default).collect();
    if text.chars().nth(ECHO_CHARS).is_some() {
        shown.push_str(&format!("… ({} bytes in all)", text.len()));
    }
    shown
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

/// Why the core did not answer a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServeError {
    /// The request does not fit the model or the server's limits.
    #[error("{message}")]
    InvalidArgument { message: String, violations: Vec<Violation> },
    /// No such segment or version.
    #[error("{0}")]
    NotFound(String),
    /// Not ready yet, or shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// A limit is reached; the caller should retry after `retry_after`.
    #[error("{message}")]
    Overloaded { message: String, retry_after: std::time::Duration },
    /// The caller's deadline passed before the work could be done; it was dropped.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A bug: logged with the request id, never with feature values.
    #[error("internal error (request id {request_id}): {message}")]
    Internal { request_id: String, message: String },
}

impl ServeError {
    /// One invalid field, described for the caller.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> ServeError {
        let violation = Violation { field: field.into(), description: description.into() };
        ServeError::InvalidArgument {
            message: format!("{} {}", violation.field, violation.description),
            violations: vec![violation],
        }
    }

    /// The gRPC status code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            ServeError::InvalidArgument { .. } => Code::InvalidArgument,
            ServeError::NotFound(_) => Code::NotFound,
            ServeError::Unavailable(_) => Code::Unavailable,
            ServeError::Overloaded { .. } => Code::ResourceExhausted,
            ServeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ServeError::Internal { .. } => Code::Internal,
        }
    }

    fn violations(&self) -> &[Violation] {
        match self {
            ServeError::InvalidArgument { violations, .. } => violations,
            _ => &[],
        }
    }

    /// This error as one StreamPredict response's `error`, for streams that carry on.
    pub fn to_batch_error(&self) -> v1::BatchError {
        v1::BatchError {
            code: self.code() as i32,
            message: self.to_string(),
            field_violations: self
                .violations()
                .iter()
                .map(|v| v1::FieldViolation { field: v.field.clone(), description: v.description.clone() })
                .collect(),
        }
    }
}

impl From<ServeError> for Status {
    fn from(error: ServeError) -> Status {
        if let ServeError::Overloaded { retry_after, .. } = &error {
            let details = ErrorDetails::with_retry_info(Some(*retry_after));
            return Status::with_error_details(error.code(), error.to_string(), details);
        }
        let violations = error.violations();
        if violations.is_empty() {
            return Status::new(error.code(), error.to_string());
        }
        let mut details = ErrorDetails::new();
        for v in violations {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        Status::with_error_details(error.code(), error.to_string(), details)
    }
}
