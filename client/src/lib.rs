//! smq's client library. It holds the wire codec that the broker shares ([`protocol`]); the
//! producer, consumer, admin API and the `smq` CLI come with the single-broker work (issue 3).

pub mod protocol;
