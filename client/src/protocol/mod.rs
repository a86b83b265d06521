//! Bytes to typed values and back, with no IO: the broker uses this same code.

pub mod limits;
pub mod record_batch;
