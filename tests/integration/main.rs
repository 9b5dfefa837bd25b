//! The integration tests, in one binary (as ripgrep keeps them): the crate is linked once
//! instead of once per file, and every file shares the helpers of `common/` (running the real
//! binary in a private home, third-party tools, the registries and servers the tests start).
//! Each module is one area, named as its file.

mod common;

mod bad_input;
mod base_import;
mod base_import_registry;
mod build;
mod digest_cache;
mod hostile_clients;
mod infer_fixtures;
mod infer_generated;
mod infer_onnx_external;
mod infer_spark_keras_mlflow;
mod infer_spark_multicol;
mod infer_streaming;
mod infer_tflite_torch;
mod infer_weights;
mod manager;
mod manager_page;
mod one_pass;
mod packages;
mod podman;
mod push;
mod read_input;
mod registry_reliability;
mod registry_server;
mod robustness;
mod runtimes;
mod runtimes_spark;
mod serving_yaml;
mod shared_catalog;
mod upload;
mod upload_faults;
mod wheels;
