//! Images wherever they live, read and written as a manifest plus blobs.

pub mod archive;
