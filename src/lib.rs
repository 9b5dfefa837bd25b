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
pub mod packages;
pub mod pipeline;
pub mod remote;
pub mod run;
pub mod server;
pub mod store;

/// The folders use only those below them: no folder imports one that imports it back.
#[cfg(test)]
mod house {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    fn imports(dir: &Path, top: &str, found: &mut BTreeMap<String, BTreeSet<String>>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                imports(&path, top, found);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    found.entry(top.to_string()).or_default().insert(name);
                }
            }
        }
    }

    #[test]
    fn folders_import_no_cycle() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&src).unwrap().flatten() {
            if entry.path().is_dir() {
                let top = entry.file_name().to_string_lossy().into_owned();
                imports(&entry.path(), &top, &mut found);
            }
        }
        assert!(found.len() > 10, "{found:?}");
        for start in found.keys() {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<&String> = found[start].iter().collect();
            while let Some(next) = todo.pop() {
                assert_ne!(next, start, "{start} imports itself back: {found:#?}");
                if seen.insert(next.clone()) {
                    todo.extend(found.get(next).into_iter().flatten());
                }
            }
        }
    }
}
