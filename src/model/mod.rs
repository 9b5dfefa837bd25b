//! A model folder: its `serving.yaml`, its older contract files, and the model name rules.

pub mod name;
#[allow(dead_code)] // used by the serving.yaml reader, which comes next
mod suggest;
#[allow(dead_code)]
mod yaml;

pub use name::{normalize_model_name, validate_model_name};
