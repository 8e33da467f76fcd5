//! State-machine replies to client errors: a command or query result carries a status,
//! and anything but OK becomes the matching [`ServiceError`].

use super::ServiceError;
use crate::proto::state::{CommandResult, QueryResult, command_result::Status};

/// The error a non-OK state-machine status stands for.
fn error_from_status(status: i32, error: String) -> Result<(), ServiceError> {
    match Status::from_i32(status).unwrap_or(Status::Invalid) {
        Status::Ok => Ok(()),
        Status::NotFound => Err(ServiceError::NotFound(error)),
        Status::Conflict => Err(ServiceError::Conflict(error)),
        Status::Invalid => Err(ServiceError::Invalid(error)),
        Status::OverQuota => Err(ServiceError::OverQuota(error)),
    }
}

/// A state-machine reply: its status says whether the request did what was asked.
pub(super) trait Reply: prost::Message + Default {
    fn status(&self) -> (i32, &str);
}

impl Reply for CommandResult {
    fn status(&self) -> (i32, &str) {
        (self.status, &self.error)
    }
}

impl Reply for QueryResult {
    fn status(&self) -> (i32, &str) {
        (self.status, &self.error)
    }
}

/// Turns a non-OK status into the matching error.
pub(super) fn checked<R: Reply>(reply: R) -> Result<R, ServiceError> {
    let (status, error) = reply.status();
    error_from_status(status, error.to_string())?;
    Ok(reply)
}

pub(super) fn decode_reply<R: Reply>(bytes: &[u8]) -> Result<R, ServiceError> {
    checked(R::decode(bytes).map_err(|e| ServiceError::Internal(e.to_string()))?)
}
