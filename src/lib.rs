//! mlambda: a model folder in, a versioned OCI image out, without Docker.
//!
//! The modules follow the data: `model` (the folder) → `contract` → `image` (layers, config,
//! manifest) → `registry` (where the image goes) → `catalog` (the versions). `pipeline` puts
//! the steps in order; `cli` is the only place that prints.

pub mod base;
pub mod catalog;
pub mod cli;
pub mod contract;
pub mod digest;
pub mod image;
pub mod infer;
pub mod manager;
pub mod model;
pub mod pipeline;
pub mod registry;
