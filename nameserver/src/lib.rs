//! smq's NameServer. Nothing is built yet: the HTTP API, the registry and fencing come with the
//! NameServer issue (issue 4); this crate holds the place PRODUCT.md gives it in the workspace.
