//! `podman pull` — the container engine users run the images with — from both of mlambda's
//! servers: `mlambda registry serve` and the manager's `/v2/`.

use crate::common;

use common::manager::ManagerServer;
use common::*;
use std::path::Path;
use std::process::Command;

/// podman with a private store (vfs: no overlay mounts needed), as RECIPE.md runs it.
fn podman(podman: &Path, work: &Path) -> Command {
    let mut command = Command::new(podman);
    command
        .args(["--storage-driver=vfs", "--root"])
        .arg(work.join("storage"))
        .arg("--runroot")
        .arg(work.join("run"))
        .env("HOME", work);
    command
}

/// Pulls `reference` and returns the manifest digest podman recorded for it.
fn pull_digest(tool: &Path, work: &Path, reference: &str) -> String {
    run_ok(podman(tool, work).args(["pull", "--tls-verify=false", reference]));
    let output =
        run_ok(podman(tool, work).args(["image", "inspect", "--format", "{{.Digest}}", reference]));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn podman_pulls_from_registry_serve_and_from_the_managers_registry() {
    let Some(tool) = tool("podman") else { return };
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let uploaded = json_of(&run_ok(
        mlambda(&home)
            .args(["upload", "--json", "--base", "scratch"])
            .arg(example_dir()),
    ));
    let digest = uploaded["digest"].as_str().unwrap().to_string();

    let registry = common::registry::registry_serve(&home.join("registry"), &[]);
    let pulled = pull_digest(
        &tool,
        &work.path().join("podman1"),
        &format!("{}/example_tokenizer_model:1", registry.host()),
    );
    drop(registry);
    assert_eq!(pulled, digest);

    // The manager serves the same store at /v2/.
    let manager = ManagerServer::start(&home, &[]);
    let pulled = pull_digest(
        &tool,
        &work.path().join("podman2"),
        &format!("{}/example_tokenizer_model:1", manager.host()),
    );
    assert_eq!(pulled, digest);
}
