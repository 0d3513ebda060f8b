//! The one error type of the serving core, transport-neutral: each variant
//! has its canonical code (the google.rpc.Code space gRPC speaks natively and
//! other fronts map from), and invalid input carries field violations so
//! callers learn which row and field to fix. The front turns it into its
//! protocol's answer (`api::grpc::status` for gRPC).

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

/// The retry hint of an UNAVAILABLE answer (loading, draining).
const UNAVAILABLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// The server is not in a state the request can act on (no canary to roll back).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bug. The front logs it with the request's id (never with feature
    /// values) and tells the caller that id.
    #[error("internal error: {0}")]
    Internal(String),
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

    /// When the caller may retry, for the answer's retry hint (RetryInfo,
    /// `Retry-After`): a limit's own delay; a server loading or draining,
    /// a second (a client's retry policy then moves it to another replica
    /// or back once loaded); none for errors a retry would repeat.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ServeError::Overloaded { retry_after, .. } => Some(*retry_after),
            ServeError::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        }
    }

    /// The canonical code this error is answered with (see DESIGN.md's table).
    pub fn canonical(&self) -> Canonical {
        match self {
            ServeError::InvalidArgument { .. } => Canonical::InvalidArgument,
            ServeError::NotFound(_) => Canonical::NotFound,
            ServeError::Unavailable(_) => Canonical::Unavailable,
            ServeError::Overloaded { .. } => Canonical::ResourceExhausted,
            ServeError::DeadlineExceeded(_) => Canonical::DeadlineExceeded,
            ServeError::FailedPrecondition(_) => Canonical::FailedPrecondition,
            ServeError::Internal(_) => Canonical::Internal,
        }
    }

    /// The invalid fields, for an invalid request; none otherwise.
    pub fn violations(&self) -> &[Violation] {
        match self {
            ServeError::InvalidArgument { violations, .. } => violations,
            _ => &[],
        }
    }
}

/// The outcomes the core distinguishes, numbered and named as google.rpc.Code
/// (and so gRPC) numbers and names them: the metrics' `code` label, the
/// span's status, and what each front maps to its own protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonical {
    Ok = 0,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Internal = 13,
    Unavailable = 14,
}

impl Canonical {
    /// The code's number.
    pub fn number(self) -> i32 {
        self as i32
    }

    /// The code's name, as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Canonical::Ok => "OK",
            Canonical::InvalidArgument => "INVALID_ARGUMENT",
            Canonical::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Canonical::NotFound => "NOT_FOUND",
            Canonical::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Canonical::FailedPrecondition => "FAILED_PRECONDITION",
            Canonical::Internal => "INTERNAL",
            Canonical::Unavailable => "UNAVAILABLE",
        }
    }
}
