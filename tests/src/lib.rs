//! Multi-process tests of smq's real binaries. They arrive with the broker server (issue 3); the
//! storage engine's crash test, which needs no network, lives in broker/tests/.
