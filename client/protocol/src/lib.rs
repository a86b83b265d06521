//! Bytes to typed values and back, with no IO: the broker uses this same code. The crate
//! depends on no runtime or socket library, so "the protocol does no IO" holds by construction;
//! the client re-exports it as `smq_client::protocol`. [`nameserver_api`] holds the serde types
//! of the NameServer's HTTP/JSON interface.

pub mod api;
pub mod broker_api;
pub mod credential;
pub mod error_code;
pub mod frame;
pub mod limits;
pub mod nameserver_api;
pub mod record_batch;
pub mod replication;
pub mod request;
pub mod response;
pub mod role;
pub mod role_change;
pub mod wire;

pub use api::ApiKey;
pub use error_code::ErrorCode;
pub use frame::{FrameError, RequestFrame, RequestHeader, ResponseFrame};
pub use request::Request;
pub use response::{ErrorResponse, Response};
pub use role::Role;
pub use wire::DecodeError;
