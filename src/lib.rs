//! mlambda: a model folder in, a versioned OCI image out, without Docker.
//!
//! The folders follow the data, each using only those below it:
//!
//! - `oci`: the OCI spec's types, digests, the reference grammar (repository names, tags,
//!   registry references, the loopback rule), platforms, and the one parser of image locations.
//! - `image`: an image as a manifest plus blobs read as streams ([`image::Source`]) and
//!   written ([`image::Sink`]); the walks over them (index → manifest → config, copy) and the
//!   single-file archives.
//! - `store`: the file-backed store, one OCI layout per repository (a source and a sink).
//! - `remote`: a registry over the distribution HTTP API (a source and a sink).
//! - `model` (the folder) → `contract` → `infer`; `model_image`: the model's layers, config
//!   and manifest on top of a base; `base`: which base, and the runtimes.
//! - `catalog`: the versions; `pipeline`: the steps in order, and the home.
//! - `http`: listener, TLS, htpasswd and query parsing shared by `server` (the distribution
//!   API) and `manager` (`mlambda serve`); `manager_client` is `upload --host`.
//! - `cli` is the only place that prints.

pub mod base;
pub mod catalog;
pub mod cli;
pub mod contract;
pub mod http;
pub mod image;
pub mod infer;
pub mod manager;
pub mod manager_client;
pub mod model;
pub mod model_image;
pub mod oci;
pub mod pipeline;
pub mod remote;
pub mod server;
pub mod store;
