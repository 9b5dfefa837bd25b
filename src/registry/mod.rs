//! Where images go: the local file-backed store, single-file archives and remote registries;
//! and the store served over the distribution API.

pub mod archive;
pub mod client;
pub mod server;
pub mod store;
