//! mlambda: a model folder in, a versioned OCI image out, without Docker.
//!
//! The modules follow the data: `model` (the folder) → `contract` → `image` (layers, config,
//! manifest) → `registry` (where the image goes) → `catalog` (the versions).

pub mod contract;
pub mod infer;
