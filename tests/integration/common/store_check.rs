//! A checker of a whole file-backed store, for the crash and race tests: whatever happened,
//! every blob's bytes match its name, every manifest a repository lists has its blobs with
//! their declared sizes, every tag reads with skopeo and umoci (no server involved), and
//! (given a home) no version is left `Pending` or `Running`.

use super::{mlambda, tool};
use mlambda::oci::digest::{Algorithm, digest_reader};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Panics with every problem found in the store at `root` (and the catalogue of `home`).
pub fn assert_store_consistent(root: &Path, home: Option<&Path>) {
    let problems = check_store(root, home);
    assert!(
        problems.is_empty(),
        "the store {} is inconsistent:\n  {}",
        root.display(),
        problems.join("\n  ")
    );
}

/// Every problem found, as one line each.
pub fn check_store(root: &Path, home: Option<&Path>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut hashed = BTreeSet::new();
    check_blobs(&root.join("_blobs"), &mut hashed, &mut problems);
    for repository in repositories(root) {
        let dir = root.join(&repository);
        check_blobs(&dir, &mut hashed, &mut problems);
        check_repository(&dir, &repository, &mut problems);
    }
    if let Some(home) = home {
        check_versions(home, &mut problems);
    }
    problems
}

/// Every folder under `root` holding an `oci-layout` file (the store's own `_…` folders and
/// a layout's `blobs` are not repositories).
pub fn repositories(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(prefix) = todo.pop() {
        let dir = root.join(&prefix);
        let is_layout = !prefix.is_empty() && dir.join("oci-layout").is_file();
        if is_layout {
            found.push(prefix.clone());
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !entry.file_type().is_ok_and(|t| t.is_dir())
                || name.starts_with('_')
                || (is_layout && name == "blobs")
            {
                continue;
            }
            todo.push(if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            });
        }
    }
    found.sort();
    found
}

/// Hashes every blob under `dir/blobs/<algorithm>/` (each inode once) against its name.
fn check_blobs(dir: &Path, hashed: &mut BTreeSet<u64>, problems: &mut Vec<String>) {
    for (name, algorithm) in [("sha256", Algorithm::Sha256), ("sha512", Algorithm::Sha512)] {
        let blobs = dir.join("blobs").join(name);
        for entry in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !hashed.insert(meta.ino()) {
                continue;
            }
            let expected = format!("{name}:{}", entry.file_name().to_string_lossy());
            match std::fs::File::open(&path).and_then(|f| digest_reader(algorithm, f)) {
                Ok((actual, _)) if actual == expected => {}
                Ok((actual, _)) => {
                    problems.push(format!("{}: its bytes are {actual}", path.display()))
                }
                Err(e) => problems.push(format!("{}: cannot read: {e}", path.display())),
            }
        }
    }
}

fn blob_size(dir: &Path, digest: &str) -> Option<u64> {
    let (algorithm, hex) = digest.split_once(':')?;
    std::fs::metadata(dir.join("blobs").join(algorithm).join(hex))
        .ok()
        .map(|m| m.len())
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

/// The repository's index, every manifest it lists (and their children) complete, and every
/// tag of an image read by skopeo and umoci.
fn check_repository(dir: &Path, name: &str, problems: &mut Vec<String>) {
    let index = match read_json(&dir.join("index.json")) {
        Ok(index) => index,
        Err(e) => {
            problems.push(format!("{name}: index.json: {e}"));
            return;
        }
    };
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let mut seen = BTreeSet::new();
    for entry in &entries {
        let tag = entry["annotations"]["org.opencontainers.image.ref.name"].as_str();
        let is_image = check_manifest(dir, name, entry, &mut seen, problems);
        // OCI layout readers know OCI manifests only (a Docker schema 2 manifest is stored
        // and served as pushed, but skopeo's `oci:` and umoci do not read it).
        let is_oci = entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json";
        if let (Some(tag), true) = (tag, is_image && is_oci) {
            check_with_tools(dir, name, tag, problems);
        }
    }
}

/// Whether the descriptor's manifest is there with its size and all it names (children
/// followed); `true` when it is a complete image with an image config.
fn check_manifest(
    dir: &Path,
    name: &str,
    descriptor: &serde_json::Value,
    seen: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) -> bool {
    let digest = descriptor["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let declared = descriptor["size"].as_u64();
    let Some(size) = blob_size(dir, &digest) else {
        problems.push(format!("{name}: manifest {digest} is listed but missing"));
        return false;
    };
    if declared != Some(size) {
        problems.push(format!(
            "{name}: manifest {digest} holds {size} bytes, listed as {declared:?}"
        ));
    }
    if !seen.insert(digest.clone()) {
        return true;
    }
    let (algorithm, hex) = digest.split_once(':').unwrap_or_default();
    let manifest = match read_json(&dir.join("blobs").join(algorithm).join(hex)) {
        Ok(manifest) => manifest,
        Err(e) => {
            problems.push(format!("{name}: manifest {digest}: {e}"));
            return false;
        }
    };
    let mut complete = true;
    let mut needs = |d: &serde_json::Value, what: &str| {
        let media = d["mediaType"].as_str().unwrap_or_default();
        if media.contains("nondistributable") || media.contains("foreign") {
            return;
        }
        let digest_needed = d["digest"].as_str().unwrap_or_default();
        match blob_size(dir, digest_needed) {
            Some(size) if Some(size) == d["size"].as_u64() => {}
            Some(size) => {
                complete = false;
                problems.push(format!(
                    "{name}: {what} {digest_needed} of {digest} holds {size} bytes, declared {:?}",
                    d["size"].as_u64()
                ));
            }
            None => {
                complete = false;
                problems.push(format!(
                    "{name}: {what} {digest_needed} of {digest} is missing"
                ));
            }
        }
    };
    if manifest.get("config").is_some() {
        needs(&manifest["config"], "config");
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            needs(layer, "layer");
        }
    }
    for child in manifest["manifests"].as_array().into_iter().flatten() {
        complete &= check_manifest(dir, name, child, seen, problems);
    }
    let config_media = manifest["config"]["mediaType"].as_str().unwrap_or_default();
    complete && IMAGE_CONFIGS.contains(&config_media)
}

/// `skopeo inspect oci:DIR:TAG`, `umoci stat` and `umoci ls`, when the tools are installed.
fn check_with_tools(dir: &Path, name: &str, tag: &str, problems: &mut Vec<String>) {
    let image = format!("{}:{tag}", dir.display());
    let mut run = |program: &Path, args: &[&str]| {
        let out = Command::new(program).args(args).output().unwrap();
        if !out.status.success() {
            problems.push(format!(
                "{name}:{tag}: {} {} failed: {}",
                program.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return String::new();
        }
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    if let Some(skopeo) = tool("skopeo") {
        run(&skopeo, &["inspect", &format!("oci:{image}")]);
    }
    if let Some(umoci) = tool("umoci") {
        run(&umoci, &["stat", "--image", &image]);
        let listed = run(&umoci, &["ls", "--layout", &dir.display().to_string()]);
        if !listed.lines().any(|line| line.trim() == tag) {
            problems.push(format!("{name}:{tag}: umoci ls does not list it: {listed}"));
        }
    }
}

/// No version of any model left `Pending` or `Running` in the catalogue of `home`.
fn check_versions(home: &Path, problems: &mut Vec<String>) {
    let json = |args: &[&str]| -> serde_json::Value {
        let out = mlambda(home).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "mlambda {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for model in json(&["models", "--json"]).as_array().into_iter().flatten() {
        let name = model["name"].as_str().unwrap_or_default();
        for version in json(&["versions", name, "--json"])
            .as_array()
            .into_iter()
            .flatten()
        {
            let status = version["status"].as_str().unwrap_or_default();
            if matches!(status, "Pending" | "Running") {
                problems.push(format!("{name}:{} is left {status}", version["version"]));
            }
        }
    }
}
