//! A model folder: its `serving.yaml`, its older contract files, and the model name rules.

pub mod name;
pub mod serving;
mod suggest;
mod yaml;

pub use name::{normalize_model_name, validate_model_name};
pub use serving::{
    Problem, ServingError, ServingFile, Spanned, parse_serving_str, parse_serving_yaml,
    read_contract_file,
};
