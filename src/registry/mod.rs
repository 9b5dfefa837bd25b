//! Where images go: the local file-backed store, and single-file archives; and the store
//! served over the distribution API.

pub mod archive;
pub mod server;
pub mod store;
