//! A model folder: its `serving.yaml` (or older contract files), the model name rules, its
//! payload, and the whole resolved spec that the commands build from.

pub mod name;
pub mod payload;
pub mod serving;
pub mod spec;
mod suggest;
mod yaml;

pub use name::{normalize_model_name, validate_model_name};
pub use serving::{
    Problem, ServingError, ServingFile, Spanned, parse_serving_str, parse_serving_yaml,
    read_contract_file,
};
