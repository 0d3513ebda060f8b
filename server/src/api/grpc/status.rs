//! The one mapping from the core's errors to gRPC: the status code (the
//! core's canonical code, which gRPC shares), `google.rpc` details
//! (`BadRequest` field violations for invalid input, `RetryInfo` when
//! overloaded, loading or draining), and the same error as one StreamPredict response's
//! `BatchError`. Every path that answers a core error goes through here.

use crate::core::error::ServeError;
use candela::v1;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The gRPC status code `error` is answered with.
pub fn code(error: &ServeError) -> Code {
    Code::from_i32(error.canonical().number())
}

impl From<ServeError> for Status {
    fn from(error: ServeError) -> Status {
        if let Some(retry_after) = error.retry_after() {
            let details = ErrorDetails::with_retry_info(Some(retry_after));
            return Status::with_error_details(code(&error), error.to_string(), details);
        }
        let violations = error.violations();
        if violations.is_empty() {
            return Status::new(code(&error), error.to_string());
        }
        let mut details = ErrorDetails::new();
        for v in violations {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        Status::with_error_details(code(&error), error.to_string(), details)
    }
}

/// `error` as one StreamPredict response's `error`, for streams that carry on.
pub fn batch_error(error: &ServeError) -> v1::BatchError {
    v1::BatchError {
        code: error.canonical().number(),
        message: error.to_string(),
        field_violations: error
            .violations()
            .iter()
            .map(|v| v1::FieldViolation { field: v.field.clone(), description: v.description.clone() })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::Canonical;

    #[test]
    fn canonical_codes_are_grpcs_codes_and_names() {
        for (canonical, grpc, name) in [
            (Canonical::Ok, Code::Ok, "OK"),
            (Canonical::InvalidArgument, Code::InvalidArgument, "INVALID_ARGUMENT"),
            (Canonical::DeadlineExceeded, Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (Canonical::NotFound, Code::NotFound, "NOT_FOUND"),
            (Canonical::ResourceExhausted, Code::ResourceExhausted, "RESOURCE_EXHAUSTED"),
            (Canonical::FailedPrecondition, Code::FailedPrecondition, "FAILED_PRECONDITION"),
            (Canonical::Internal, Code::Internal, "INTERNAL"),
            (Canonical::Unavailable, Code::Unavailable, "UNAVAILABLE"),
        ] {
            assert_eq!(Code::from_i32(canonical.number()), grpc);
            assert_eq!(canonical.name(), name);
        }
    }
}
