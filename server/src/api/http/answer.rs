//! The one mapping from the core's errors to HTTP answers: the status code
//! for each canonical code (400 invalid input, 404 unknown model or version,
//! 429 over the concurrency limit and 503 loading or draining with
//! `Retry-After`, 504 the
//! caller's deadline passed, 500 a bug), a JSON body `{"error": …}` (the
//! field the Open Inference Protocol's REST clients read) with the same
//! field violations gRPC's BadRequest carries, and API-key refusals as 401
//! (`WWW-Authenticate: Bearer`) or 403. Every HTTP path that answers an error
//! goes through here.

use super::super::auth::Denied;
use super::super::call::Call;
use crate::core::error::{Canonical, ServeError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A request refused with `error`, answered with `status`.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub error: ServeError,
}

impl Refused {
    /// The same refusal answered with another status (a body over the size
    /// limit is invalid input answered 413).
    pub fn with_status(self, status: StatusCode) -> Refused {
        Refused { status, ..self }
    }
}

impl From<ServeError> for Refused {
    fn from(error: ServeError) -> Refused {
        Refused { status: status_of(&error), error }
    }
}

/// The HTTP status a core error is answered with.
pub fn status_of(error: &ServeError) -> StatusCode {
    match error.canonical() {
        Canonical::Ok => StatusCode::OK,
        Canonical::InvalidArgument => StatusCode::BAD_REQUEST,
        Canonical::NotFound => StatusCode::NOT_FOUND,
        Canonical::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Canonical::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Canonical::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Canonical::FailedPrecondition => StatusCode::CONFLICT,
        Canonical::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Records `call`'s outcome once (metrics, span; an internal error logged
/// with its request id) and returns it, the status kept.
pub fn finish<T>(call: &Call, result: Result<T, Refused>) -> Result<T, Refused> {
    match result {
        Ok(value) => call.finished(Ok(value)).map_err(Refused::from),
        Err(Refused { status, error }) => {
            let error = call.finished::<T>(Err(error)).err().expect("an error stays an error");
            Err(Refused { status, error })
        }
    }
}

/// The JSON body of every error answer.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    violations: Vec<ViolationBody<'a>>,
}

#[derive(Serialize)]
struct ViolationBody<'a> {
    field: &'a str,
    description: &'a str,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let violations = self
            .error
            .violations()
            .iter()
            .map(|v| ViolationBody { field: &v.field, description: &v.description })
            .collect();
        let mut response = json(self.status, &ErrorBody { error: self.error.to_string(), violations });
        if let Some(retry_after) = self.error.retry_after() {
            // Retry-After counts whole seconds; a sub-second delay is one.
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// An API-key refusal as HTTP: 401 with a `WWW-Authenticate: Bearer`
/// challenge for a missing or invalid key, 403 for a key without the right.
pub fn unauthorized(denied: Denied) -> Response {
    let (code, message) = match denied {
        Denied::Unauthenticated(message) => (StatusCode::UNAUTHORIZED, message),
        Denied::PermissionDenied(message) => (StatusCode::FORBIDDEN, message),
    };
    let mut response = json(code, &ErrorBody { error: message.to_string(), violations: Vec::new() });
    if code == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"candela\""));
    }
    response
}

/// `value` as a JSON answer with `status`.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("answers always serialize");
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// An inference answer (or refusal) carrying the call's request id, under
/// which its rows' outcomes are fed back.
pub fn with_request_id(call: &Call, mut response: Response) -> Response {
    if let Ok(id) = HeaderValue::from_str(&call.request_id) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_core_error_has_the_status_that_says_what_happened() {
        let overloaded = ServeError::Overloaded { message: "full".into(), retry_after: std::time::Duration::ZERO };
        for (error, status) in [
            (ServeError::invalid("features", "has 3 values"), 400),
            (ServeError::NotFound("no model".into()), 404),
            (overloaded, 429),
            (ServeError::Unavailable("loading".into()), 503),
            (ServeError::DeadlineExceeded("late".into()), 504),
            (ServeError::Internal("bug".into()), 500),
        ] {
            assert_eq!(status_of(&error).as_u16(), status, "{error:?}");
        }
    }
}
