//! The Python packages a base image already has — a runtime's locked wheels — which a model's
//! requirements do not install again. MLflow writes its flavor's framework into the folder's
//! requirements.txt (`tensorflow==2.21.0` and `tensorflow-cpu==2.21.0`, `scikit-learn==1.9.1`):
//! a second copy over the runtime's would double the image, and `tensorflow` over
//! `tensorflow-cpu` would put two builds of one package into one folder. So requirements the
//! base serves are left out, the rest is resolved with the base's versions as constraints, and
//! what the lock then shares with the base is not installed again.
//!
//! The runtime says what it has in a label of its config (written when it is assembled, so it
//! travels with the image); a base without it provides nothing.

use super::lock::LockedWheel;
use super::target::normalize;
use serde_json::Value;
use std::collections::BTreeMap;

/// `name==version` of each distribution, space-separated.
pub const LABEL_PACKAGES: &str = "io.mlambda.python.packages";

/// Distributions that are builds of one package (the same import names, the same files): a
/// requirement of either is served by the other.
const SAME_PACKAGE: &[[&str; 2]] = &[["tensorflow", "tensorflow-cpu"]];

/// Normalised (PEP 503) name → version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provided(BTreeMap<String, String>);

impl Provided {
    pub fn of_wheels<'a>(wheels: impl IntoIterator<Item = &'a LockedWheel>) -> Provided {
        Provided(
            wheels
                .into_iter()
                .map(|w| (normalize(&w.name), w.version.clone()))
                .collect(),
        )
    }

    /// What a base image's config says it has (nothing when it does not say).
    pub fn of_base(config: &Value) -> Provided {
        Provided::parse(
            config["config"]["Labels"][LABEL_PACKAGES]
                .as_str()
                .unwrap_or(""),
        )
    }

    /// A label's value (`name==version`, space-separated).
    pub fn parse(label: &str) -> Provided {
        Provided(
            label
                .split_whitespace()
                .filter_map(|pin| pin.split_once("=="))
                .map(|(name, version)| (normalize(name), version.to_string()))
                .collect(),
        )
    }

    /// These and `more` (whose version wins for a package in both: it was installed later).
    pub fn and(mut self, more: Provided) -> Provided {
        self.0.extend(more.0);
        self
    }

    /// The label's value.
    pub fn label(&self) -> String {
        self.pins().collect::<Vec<_>>().join(" ")
    }

    /// `name==version` lines, for uv's `--constraint`.
    pub fn constraints(&self) -> String {
        self.pins().map(|pin| pin + "\n").collect()
    }

    fn pins(&self) -> impl Iterator<Item = String> + '_ {
        self.0
            .iter()
            .map(|(name, version)| format!("{name}=={version}"))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The base's distribution (name, version) that serves a requirement of `name`.
    pub fn serving(&self, name: &str) -> Option<(&str, &str)> {
        let name = normalize(name);
        let same = SAME_PACKAGE
            .iter()
            .filter_map(|[a, b]| match name.as_str() {
                asked if asked == *a => Some(b.to_string()),
                asked if asked == *b => Some(a.to_string()),
                _ => None,
            });
        std::iter::once(name.clone())
            .chain(same)
            .find_map(|candidate| self.0.get_key_value(&candidate))
            .map(|(name, version)| (name.as_str(), version.as_str()))
    }

    /// Whether the base has this very distribution and version.
    pub fn has(&self, wheel: &LockedWheel) -> bool {
        self.0.get(&normalize(&wheel.name)) == Some(&wheel.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wheel(name: &str, version: &str) -> LockedWheel {
        LockedWheel {
            name: name.into(),
            version: version.into(),
            filename: format!("{name}-{version}-py3-none-any.whl"),
            url: None,
            sha256: String::new(),
            size: None,
        }
    }

    #[test]
    fn the_label_says_what_the_lock_had_and_is_read_back() {
        let provided =
            Provided::of_wheels(&[wheel("tensorflow-cpu", "2.21.0"), wheel("numpy", "2.4.6")]);
        assert_eq!(provided.label(), "numpy==2.4.6 tensorflow-cpu==2.21.0");
        let config = json!({"config": {"Labels": {LABEL_PACKAGES: provided.label()}}});
        assert_eq!(Provided::of_base(&config), provided);
        assert!(Provided::of_base(&json!({"config": {}})).is_empty());
    }

    #[test]
    fn a_model_image_has_its_base_packages_and_its_own_the_later_version_winning() {
        let all = Provided::parse("numpy==2.4.6 pandas==3.1.1")
            .and(Provided::parse("Rich==15.0.0 numpy==2.5.0"));
        assert_eq!(all.label(), "numpy==2.5.0 pandas==3.1.1 rich==15.0.0");
    }

    #[test]
    fn tensorflow_is_served_by_tensorflow_cpu_and_names_are_normalised() {
        let provided = Provided::of_wheels(&[
            wheel("tensorflow-cpu", "2.21.0"),
            wheel("scikit-learn", "1.9.1"),
        ]);
        assert_eq!(
            provided.serving("tensorflow"),
            Some(("tensorflow-cpu", "2.21.0"))
        );
        assert_eq!(
            provided.serving("Scikit_Learn"),
            Some(("scikit-learn", "1.9.1"))
        );
        assert_eq!(provided.serving("cloudpickle"), None);
        let gpu_build = Provided::of_wheels(&[wheel("tensorflow", "2.21.0")]);
        assert_eq!(
            gpu_build.serving("tensorflow-cpu"),
            Some(("tensorflow", "2.21.0"))
        );
        assert!(provided.has(&wheel("scikit-learn", "1.9.1")));
        assert!(!provided.has(&wheel("scikit-learn", "1.8.0")));
    }
}
