//! Bytes to typed values and back, with no IO: the broker uses this same code.

pub mod api;
pub mod error_code;
pub mod frame;
pub mod limits;
pub mod record_batch;
pub mod replication;
pub mod request;
pub mod response;
pub mod wire;

pub use api::ApiKey;
pub use error_code::ErrorCode;
pub use frame::{FrameError, RequestFrame, RequestHeader, ResponseFrame};
pub use request::Request;
pub use response::{ErrorResponse, Response};
pub use wire::DecodeError;
