//! Where images go: the local file-backed store, and single-file archives.

pub mod archive;
pub mod store;
