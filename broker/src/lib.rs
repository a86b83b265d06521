//! smq's broker.

pub mod storage;
