//! The interpreter a lock is made for: the image's Python, never the host's. Its wheel tags in
//! the order pip prefers them (`packaging.tags` for CPython on manylinux), a wheel file name
//! read into its parts, and the PEP 508 marker environment of the image.

use super::install::Scheme;
use pep508_rs::{MarkerEnvironment, MarkerEnvironmentBuilder};
use serde_json::Value;
use std::collections::HashMap;

/// What the base image says of its Python, as labels of its config (mlambda's runtimes set
/// them; `base build` writes them).
pub const LABEL_PYTHON: &str = "io.mlambda.python.version";
/// `debian` (dist-packages under /usr/local, Debian's python3.X) or `prefix-local` (the
/// python.org layout of the Docker official images).
pub const LABEL_SCHEME: &str = "io.mlambda.python.scheme";
/// `2.36`: the glibc the image has, the newest manylinux its wheels may need.
pub const LABEL_GLIBC: &str = "io.mlambda.glibc";

/// When a base says nothing of its glibc: Debian 10 and RHEL 8 era, what most images have.
const GLIBC_UNKNOWN: (u32, u32) = (2, 28);

#[derive(Debug, Clone)]
pub struct PythonTarget {
    /// `(3, 11)`.
    pub python: (u32, u32),
    /// `x86_64`, `aarch64`: as wheel tags and `platform_machine` spell it.
    pub machine: String,
    pub glibc: (u32, u32),
    pub scheme: Scheme,
}

impl PythonTarget {
    /// The Python of a base image, from its config: mlambda's labels, else the `PYTHON_VERSION`
    /// of the Docker official images. `None`: the base has no Python mlambda knows of.
    pub fn of_base(config: &Value) -> Option<PythonTarget> {
        let runtime = &config["config"];
        let label = |key: &str| runtime["Labels"][key].as_str().map(str::to_string);
        let env = |key: &str| {
            runtime["Env"].as_array()?.iter().find_map(|e| {
                e.as_str()?
                    .strip_prefix(key)?
                    .strip_prefix('=')
                    .map(str::to_string)
            })
        };
        let machine = machine_of(config["architecture"].as_str().unwrap_or("amd64"))?;
        let (python, scheme_name) = match label(LABEL_PYTHON) {
            Some(version) => (version, label(LABEL_SCHEME).unwrap_or_default()),
            None => (env("PYTHON_VERSION")?, "prefix-local".to_string()),
        };
        let python = parse_pair(&python)?;
        let short = format!("{}.{}", python.0, python.1);
        let scheme = match scheme_name.as_str() {
            "debian" => Scheme::debian(&short),
            _ => Scheme::prefix_local(&short),
        };
        let glibc = label(LABEL_GLIBC)
            .and_then(|g| parse_pair(&g))
            .unwrap_or(GLIBC_UNKNOWN);
        Some(PythonTarget {
            python,
            machine,
            glibc,
            scheme,
        })
    }

    /// A target for `packages fetch`, where there is no image: CPython `version` on `platform`.
    pub fn for_platform(
        python: &str,
        architecture: &str,
        glibc: (u32, u32),
    ) -> Result<PythonTarget, String> {
        let version = parse_pair(python)
            .ok_or_else(|| format!("'{python}' is not a Python version such as 3.11"))?;
        let machine = machine_of(architecture).ok_or_else(|| {
            format!("no manylinux wheels exist for architecture '{architecture}'")
        })?;
        let short = format!("{}.{}", version.0, version.1);
        Ok(PythonTarget {
            python: version,
            machine,
            glibc,
            scheme: Scheme::debian(&short),
        })
    }

    /// `cp311 manylinux_2_36_x86_64`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "cp{}{} manylinux_{}_{}_{}",
            self.python.0, self.python.1, self.glibc.0, self.glibc.1, self.machine
        )
    }

    /// uv's `--python-platform` for this target (`x86_64-manylinux_2_36`).
    pub fn uv_platform(&self) -> String {
        format!(
            "{}-manylinux_{}_{}",
            self.machine, self.glibc.0, self.glibc.1
        )
    }

    pub fn python_version(&self) -> String {
        format!("{}.{}", self.python.0, self.python.1)
    }

    /// The tags this interpreter installs, best first (`packaging.tags.sys_tags` for CPython
    /// on manylinux; `linux_*` wheels are built for one machine and never taken).
    pub fn tags(&self) -> Vec<(String, String, String)> {
        let (major, minor) = self.python;
        let platforms = self.platforms();
        let cp = format!("cp{major}{minor}");
        let mut tags = Vec::new();
        let mut push = |py: &str, abi: &str, platform: &str| {
            tags.push((py.to_string(), abi.to_string(), platform.to_string()));
        };
        for abi in [cp.as_str(), "abi3", "none"] {
            for platform in &platforms {
                push(&cp, abi, platform);
            }
        }
        for older in (2..minor).rev() {
            for platform in &platforms {
                push(&format!("cp{major}{older}"), "abi3", platform);
            }
        }
        let py_versions: Vec<String> = std::iter::once(format!("py{major}{minor}"))
            .chain(std::iter::once(format!("py{major}")))
            .chain((0..minor).rev().map(|m| format!("py{major}{m}")))
            .collect();
        for py in &py_versions {
            for platform in &platforms {
                push(py, "none", platform);
            }
        }
        push(&cp, "none", "any");
        for py in &py_versions {
            push(py, "none", "any");
        }
        tags
    }

    /// `manylinux_2_36_x86_64` down to `manylinux_2_5_x86_64`, with the legacy aliases
    /// (`manylinux2014`, `manylinux2010`, `manylinux1`) beside the versions they stand for.
    fn platforms(&self) -> Vec<String> {
        let (glibc_major, newest) = self.glibc;
        let arch = &self.machine;
        let mut platforms = Vec::new();
        for minor in (5..=newest).rev() {
            platforms.push(format!("manylinux_{glibc_major}_{minor}_{arch}"));
            let alias = match minor {
                17 => Some("manylinux2014"),
                12 => Some("manylinux2010"),
                5 => Some("manylinux1"),
                _ => None,
            };
            if let Some(alias) = alias {
                platforms.push(format!("{alias}_{arch}"));
            }
        }
        platforms
    }

    /// Ranks every tag of this target: lower is better.
    pub fn ranking(&self) -> TagRanking {
        TagRanking {
            ranks: self
                .tags()
                .into_iter()
                .enumerate()
                .map(|(rank, tag)| (tag, rank))
                .collect(),
        }
    }

    /// The marker environment of the image's interpreter, for requirements' `; markers`.
    pub fn markers(&self) -> MarkerEnvironment {
        let short = self.python_version();
        // The patch level is unknown and markers on it are rare: the first release of the line.
        let full = format!("{short}.0");
        MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
            implementation_name: "cpython",
            implementation_version: &full,
            os_name: "posix",
            platform_machine: &self.machine,
            platform_python_implementation: "CPython",
            platform_release: "",
            platform_system: "Linux",
            platform_version: "",
            python_full_version: &full,
            python_version: &short,
            sys_platform: "linux",
        })
        .expect("a version built from two numbers parses")
    }
}

pub struct TagRanking {
    ranks: HashMap<(String, String, String), usize>,
}

impl TagRanking {
    /// The best rank of a wheel's tags, `None` when the target cannot install it.
    pub fn rank(&self, wheel: &WheelName) -> Option<usize> {
        let mut best = None;
        for py in wheel.python.split('.') {
            for abi in wheel.abi.split('.') {
                for platform in wheel.platform.split('.') {
                    let key = (py.to_string(), abi.to_string(), platform.to_string());
                    if let Some(&rank) = self.ranks.get(&key) {
                        best = Some(best.map_or(rank, |b: usize| b.min(rank)));
                    }
                }
            }
        }
        best
    }
}

/// A wheel's file name, `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    /// Normalised (PEP 503): lower case, runs of `-_.` as one `-`.
    pub name: String,
    pub version: String,
    pub python: String,
    pub abi: String,
    pub platform: String,
}

impl WheelName {
    pub fn parse(filename: &str) -> Option<WheelName> {
        let stem = filename.strip_suffix(".whl")?;
        let parts: Vec<&str> = stem.split('-').collect();
        let (name, version, tags) = match parts.as_slice() {
            [name, version, _build, py, abi, platform] => (name, version, [py, abi, platform]),
            [name, version, py, abi, platform] => (name, version, [py, abi, platform]),
            _ => return None,
        };
        if name.is_empty() || version.is_empty() || tags.iter().any(|t| t.is_empty()) {
            return None;
        }
        Some(WheelName {
            name: normalize(name),
            version: version.to_string(),
            python: tags[0].to_string(),
            abi: tags[1].to_string(),
            platform: tags[2].to_string(),
        })
    }
}

/// A project name as PEP 503 compares them.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
            continue;
        }
        if separator && !out.is_empty() {
            out.push('-');
        }
        separator = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// OCI architecture → the machine name of wheel tags; only those manylinux has.
fn machine_of(architecture: &str) -> Option<String> {
    Some(
        match architecture {
            "amd64" | "x86_64" => "x86_64",
            "arm64" | "aarch64" => "aarch64",
            "ppc64le" => "ppc64le",
            "s390x" => "s390x",
            "386" | "i686" => "i686",
            "arm" | "armv7l" => "armv7l",
            "riscv64" => "riscv64",
            _ => return None,
        }
        .to_string(),
    )
}

/// `3.11` or `3.11.7` → `(3, 11)`.
fn parse_pair(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target() -> PythonTarget {
        PythonTarget::for_platform("3.11", "amd64", (2, 36)).unwrap()
    }

    #[test]
    fn the_best_wheel_is_the_most_specific_one() {
        let ranking = target().ranking();
        let rank = |f: &str| ranking.rank(&WheelName::parse(f).unwrap());
        let native =
            rank("numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl");
        let legacy =
            rank("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
        let abi3 = rank("cryptography-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl");
        let pure = rank("six-1.16.0-py2.py3-none-any.whl");
        assert!(native.unwrap() < legacy.unwrap());
        assert!(legacy.unwrap() < abi3.unwrap());
        assert!(abi3.unwrap() < pure.unwrap());
        for not_ours in [
            "numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl",
            "numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl",
            "numpy-2.4.6-cp311-cp311-musllinux_1_2_x86_64.whl",
            "numpy-2.4.6-cp311-cp311-win_amd64.whl",
            "numpy-2.4.6-cp311-cp311-linux_x86_64.whl",
            "numpy-2.4.6-cp311-cp311-manylinux_2_39_x86_64.whl",
        ] {
            assert_eq!(rank(not_ours), None, "{not_ours}");
        }
        assert!(rank("x-1-1-py3-none-any.whl").is_some(), "a build tag");
    }

    #[test]
    fn the_python_of_a_base_comes_from_its_labels_or_the_official_images_env() {
        let ours = json!({"architecture": "arm64", "config": {"Labels": {
            LABEL_PYTHON: "3.11", LABEL_SCHEME: "debian", LABEL_GLIBC: "2.36"}}});
        let ours = PythonTarget::of_base(&ours).unwrap();
        assert_eq!(ours.describe(), "cp311 manylinux_2_36_aarch64");
        assert_eq!(
            ours.scheme.purelib,
            "usr/local/lib/python3.11/dist-packages"
        );
        let official = json!({"architecture": "amd64", "config": {"Env": ["PATH=/usr/local/bin", "PYTHON_VERSION=3.12.7"]}});
        let official = PythonTarget::of_base(&official).unwrap();
        assert_eq!(official.uv_platform(), "x86_64-manylinux_2_28");
        assert_eq!(
            official.scheme.purelib,
            "usr/local/lib/python3.12/site-packages"
        );
        assert!(PythonTarget::of_base(&json!({"architecture": "amd64", "config": {}})).is_none());
    }

    #[test]
    fn names_compare_as_pep_503_says() {
        assert_eq!(normalize("Scikit_Learn"), "scikit-learn");
        assert_eq!(normalize("zope.interface"), "zope-interface");
        assert_eq!(
            WheelName::parse("scikit_learn-1.9.1-cp311-cp311-manylinux_2_28_x86_64.whl")
                .unwrap()
                .name,
            "scikit-learn"
        );
        assert_eq!(WheelName::parse("numpy-2.4.6.tar.gz"), None);
    }
}
