//! A request field refused, and the one way it becomes a gRPC status: INVALID_ARGUMENT with the
//! field in the message and as a `google.rpc.BadRequest` detail (what clients can show next to
//! the field).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A rejected field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request, e.g. `inline.title`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// `field` is refused because of `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> FieldViolation {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }

    /// `INVALID_ARGUMENT` with the field in the message and as a `BadRequest` detail.
    pub fn into_status(self) -> Status {
        let message = format!("{}: {}", self.field, self.description);
        Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request_violation(self.field, self.description),
        )
    }
}
