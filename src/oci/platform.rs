//! Platforms: this machine's, the one a user asks for (`--platform os/arch[/variant]`), and
//! the image an index holds for it.

use super::{Descriptor, Index, Platform};

/// The platform wanted from an image index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedPlatform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl WantedPlatform {
    /// `linux/<this machine's architecture>`.
    pub fn host() -> WantedPlatform {
        WantedPlatform {
            os: "linux".into(),
            architecture: host_architecture().into(),
            variant: None,
        }
    }

    /// `OS/ARCHITECTURE[/VARIANT]`.
    pub fn parse(text: &str) -> Result<WantedPlatform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, architecture, rest @ ..]
                if rest.len() <= 1 && !os.is_empty() && !architecture.is_empty() =>
            {
                Ok(WantedPlatform {
                    os: os.to_string(),
                    architecture: architecture.to_string(),
                    variant: rest.first().map(|v| v.to_string()),
                })
            }
            _ => Err("expected OS/ARCHITECTURE[/VARIANT], e.g. linux/arm64".into()),
        }
    }

    pub fn matches(&self, platform: &Platform) -> bool {
        platform.os == self.os
            && platform.architecture == self.architecture
            && (self.variant.is_none() || platform.variant == self.variant)
    }

    /// The image of `index` for this platform, or an error listing the platforms it has.
    pub fn pick(&self, index: &Index) -> Result<Descriptor, String> {
        index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| self.matches(p)))
            .cloned()
            .ok_or_else(|| {
                let platforms: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(platform_text))
                    .collect();
                format!(
                    "the image index has no {self} image (it has: {}); choose one with --platform",
                    platforms.join(", ")
                )
            })
    }
}

impl std::fmt::Display for WantedPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// `os/architecture[/variant]`.
pub fn platform_text(platform: &Platform) -> String {
    let mut text = format!("{}/{}", platform.os, platform.architecture);
    if let Some(variant) = &platform.variant {
        text.push('/');
        text.push_str(variant);
    }
    text
}

/// The OCI name of this machine's architecture (the packages apt downloads are for it).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        assert_eq!(
            WantedPlatform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert!(WantedPlatform::parse("arm64").is_err());
        assert!(WantedPlatform::parse("linux/arm/v7/x").is_err());
    }
}
