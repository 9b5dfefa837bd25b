//! The runtimes of `base-images/catalog.yaml`, compiled into the binary so that mlambda works
//! from any folder.

const CATALOGUE: &str = include_str!("../../base-images/catalog.yaml");

/// Files of `base-images/` that runtimes add to their images, by their path there.
pub const RUNTIME_FILES: &[(&str, &str)] = &[
    (
        "runtime/serve.py",
        include_str!("../../base-images/runtime/serve.py"),
    ),
    (
        "runtime/contract.py",
        include_str!("../../base-images/runtime/contract.py"),
    ),
    (
        "runtime/v2.py",
        include_str!("../../base-images/runtime/v2.py"),
    ),
    (
        "runtime/loaders.py",
        include_str!("../../base-images/runtime/loaders.py"),
    ),
    (
        "runtime/grpc_v2.py",
        include_str!("../../base-images/runtime/grpc_v2.py"),
    ),
    (
        "onnx/pylock.toml",
        include_str!("../../base-images/onnx/pylock.toml"),
    ),
    (
        "scikit-learn/pylock.toml",
        include_str!("../../base-images/scikit-learn/pylock.toml"),
    ),
    (
        "tflite/pylock.toml",
        include_str!("../../base-images/tflite/pylock.toml"),
    ),
    (
        "tensorflow/pylock.toml",
        include_str!("../../base-images/tensorflow/pylock.toml"),
    ),
    (
        "spark/pylock.toml",
        include_str!("../../base-images/spark/pylock.toml"),
    ),
    (
        "spark/sources.toml",
        include_str!("../../base-images/spark/sources.toml"),
    ),
    (
        "spark/passwd",
        include_str!("../../base-images/spark/passwd"),
    ),
    ("spark/group", include_str!("../../base-images/spark/group")),
    ("spark/hosts", include_str!("../../base-images/spark/hosts")),
    (
        "fetch-debs.sh",
        include_str!("../../base-images/fetch-debs.sh"),
    ),
];

/// A runtime: what it serves, and how to assemble it when it is built from Debian packages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtime {
    pub name: String,
    pub description: String,
    pub serves: Vec<String>,
    /// Debian packages whose data.tar become its layers, in order; empty for import-only runtimes.
    pub debian: Vec<String>,
    /// Image path → file of base-images/.
    pub files: Vec<(String, String)>,
    /// Image path → symlink target.
    pub links: Vec<(String, String)>,
    pub dirs: Vec<String>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Ports its program listens on (`8080/tcp`): the config's ExposedPorts.
    pub expose: Vec<String>,
    pub workdir: Option<String>,
    /// The Python it has (`3.11`), which model packages are installed for.
    pub python: Option<String>,
    /// The glibc it has (`2.36`): the newest manylinux wheel it runs.
    pub glibc: Option<String>,
    /// The Python packages it has: a PEP 751 lock, pinned with hashes (the text of the
    /// base-images/ file its `wheels` key names), installed one layer per distribution.
    pub wheels: Option<String>,
    /// Python packages PyPI has only as source distributions, copied as they are laid out
    /// (the text of the base-images/ file its `sources` key names; see base/sources.rs).
    pub sources: Option<String>,
}

impl Runtime {
    /// What the runtime is made of, as this mlambda defines it (its catalogue entry and the
    /// files it adds): a runtime in the store built from another definition is stale.
    pub fn definition_digest(&self) -> String {
        let mut text = format!("{self:?}");
        for (_, source) in &self.files {
            text.push_str(runtime_file(source).unwrap_or_default());
        }
        crate::oci::digest::sha256_of(text.as_bytes())
    }

    pub fn glibc_version(&self) -> Option<(u32, u32)> {
        let (major, minor) = self.glibc.as_deref()?.split_once('.')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    }
}

pub fn catalogue() -> Vec<Runtime> {
    let docs = yaml_rust2::YamlLoader::load_from_str(CATALOGUE)
        .expect("base-images/catalog.yaml is valid YAML");
    let Some(runtimes) = docs[0]["runtimes"].as_hash() else {
        return Vec::new();
    };
    runtimes
        .iter()
        .map(|(name, spec)| {
            let text = |v: &yaml_rust2::Yaml| match v {
                yaml_rust2::Yaml::String(s) => s.clone(),
                yaml_rust2::Yaml::Integer(i) => i.to_string(),
                yaml_rust2::Yaml::Real(r) => r.clone(),
                _ => String::new(),
            };
            let list = |key: &str| {
                spec[key]
                    .as_vec()
                    .map(|v| v.iter().map(text).collect())
                    .unwrap_or_default()
            };
            let pairs = |key: &str| {
                spec[key]
                    .as_hash()
                    .map(|h| h.iter().map(|(k, v)| (text(k), text(v))).collect())
                    .unwrap_or_default()
            };
            Runtime {
                name: text(name),
                description: text(&spec["description"]),
                serves: list("serves"),
                debian: list("debian"),
                files: pairs("files"),
                links: pairs("links"),
                dirs: list("dirs"),
                env: list("env"),
                entrypoint: list("entrypoint"),
                cmd: list("cmd"),
                expose: list("expose"),
                workdir: spec["workdir"].as_str().map(str::to_string),
                python: Some(text(&spec["python"])).filter(|t| !t.is_empty()),
                glibc: Some(text(&spec["glibc"])).filter(|t| !t.is_empty()),
                wheels: spec["wheels"]
                    .as_str()
                    .map(|file| runtime_file(file).unwrap_or_default().to_string()),
                sources: spec["sources"]
                    .as_str()
                    .map(|file| runtime_file(file).unwrap_or_default().to_string()),
            }
        })
        .collect()
}

pub fn runtime(name: &str) -> Option<Runtime> {
    catalogue().into_iter().find(|r| r.name == name)
}

/// The runtime that serves `model_type`, if any.
pub fn runtime_for(model_type: &str) -> Option<Runtime> {
    catalogue().into_iter().find(|r| {
        r.serves
            .iter()
            .any(|pattern| glob_match(pattern, model_type))
    })
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(tail) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob_match(rest, &tail[i..]))
        }
    }
}

pub fn runtime_file(path: &str) -> Option<&'static str> {
    RUNTIME_FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, content)| *content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runtime_file_named_by_the_catalogue_is_compiled_in() {
        let runtimes = catalogue();
        assert!(
            runtimes
                .iter()
                .any(|r| r.name == "python-3.11" && !r.debian.is_empty())
        );
        assert!(
            runtimes
                .iter()
                .any(|r| r.name == "busybox" && r.debian == ["busybox-static"])
        );
        for runtime in &runtimes {
            assert_ne!(
                runtime.wheels.as_deref(),
                Some(""),
                "{} names a lock that is not compiled in",
                runtime.name
            );
            assert_ne!(
                runtime.sources.as_deref(),
                Some(""),
                "{} names source distributions that are not compiled in",
                runtime.name
            );
            for (_, source) in &runtime.files {
                assert!(
                    runtime_file(source).is_some(),
                    "{source} is not in RUNTIME_FILES"
                );
            }
        }
        assert_eq!(
            runtime("python-3.11").unwrap().cmd,
            ["--host", "0.0.0.0", "--port", "8080"]
        );
        let onnx = runtime("onnx").unwrap();
        assert_eq!(onnx.debian, runtime("python-3.11").unwrap().debian);
        assert!(
            onnx.wheels
                .as_deref()
                .unwrap()
                .contains("name = \"onnxruntime\"")
        );
    }
}
