//! Where images go: the local file-backed store, single-file archives, and remote registries.

pub mod archive;
pub mod client;
pub mod store;
