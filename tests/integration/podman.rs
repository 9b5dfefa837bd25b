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

/// podman, where runc is there too (RECIPE.md: this machine runs containers only with runc).
fn podman_with_runc() -> Option<std::path::PathBuf> {
    let podman = tool("podman")?;
    common::tool("runc")?;
    Some(podman)
}

/// A home under `work` with the tokenizer example uploaded as version 1 (python runtime).
fn tokenizer_home(work: &Path) -> std::path::PathBuf {
    let home = work.join("home");
    run_ok(mlambda(&home).arg("upload").arg(example_dir()));
    home
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

/// The image a model version is runs under a real OCI engine as KServe would run it: its
/// config exposes 8080 with the entrypoint the runtime set, and `podman run` of the stored
/// layout answers the Open Inference Protocol. (runc and fixed rlimits, as RECIPE.md says
/// this machine needs.)
#[test]
fn podman_runs_a_model_image_that_answers_the_protocol() {
    let Some(tool) = podman_with_runc() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let home = tokenizer_home(work.path());
    let layout = home.join("registry/example_tokenizer_model");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(
                layout
                    .join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )
            .unwrap(),
        )
        .unwrap()
    };
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/python3.11", "/runtime/serve.py"])
    );
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["--host", "0.0.0.0", "--port", "8080"])
    );

    let port = common::http::free_port();
    let name = format!("mlambda-test-{port}");
    // podman names an image of a layout after its path, which must be lower case.
    let lower = std::env::temp_dir().join(format!("mlambda-podman-{}-{port}", std::process::id()));
    std::os::unix::fs::symlink(&layout, &lower).unwrap();
    let mut container = podman(&tool, work.path())
        .args([
            "--runtime",
            "runc",
            "run",
            "--rm",
            "--network",
            "host",
            "--name",
            &name,
        ])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .arg(format!("oci:{}:1", lower.display()))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.path().join("podman.log")).unwrap())
        .spawn()
        .unwrap();
    let listening = common::rootfs::listening_within(port, 180);
    let _ = std::fs::remove_file(&lower);
    if !listening {
        let _ = container.kill();
        panic!(
            "podman run never served: {}",
            std::fs::read_to_string(work.path().join("podman.log")).unwrap()
        );
    }
    common::rootfs::wait_ready(port);
    let answer = common::rootfs::request(
        port,
        "POST",
        "/v2/models/example_tokenizer_model/infer",
        r#"{"inputs": [{"name": "input_text", "datatype": "BYTES", "shape": [1, 1], "data": ["Podman Runs It"]}]}"#,
    );
    let _ = podman(&tool, work.path())
        .args(["rm", "-f", &name])
        .output();
    let _ = container.kill();
    let _ = container.wait();
    assert_eq!(answer.0, 200, "{}", answer.1);
    let answer: serde_json::Value = serde_json::from_str(&answer.1).unwrap();
    assert_eq!(
        answer["outputs"][0]["data"],
        serde_json::json!(["podman runs it"])
    );
}

/// `mlambda run --isolation podman`: the unpacked image under podman (`run --rootfs`), with
/// podman's own configuration as a user sets it (here runc, fixed rlimits and a private vfs
/// store, as RECIPE.md says this machine needs); SIGTERM (what `kill`, `podman stop` and
/// Kubernetes send) stops it and leaves no container — the server is the container's PID 1,
/// which ignores a signal it has no handler for.
#[test]
fn mlambda_run_under_podman_serves_the_protocol_and_stops_when_killed() {
    let Some(tool) = podman_with_runc() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let home = tokenizer_home(work.path());
    let conf = work.path().join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n[engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    let storage = work.path().join("storage.conf");
    std::fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            work.path().join("graph").display(),
            work.path().join("runroot").display()
        ),
    )
    .unwrap();
    let port = common::http::free_port();
    let stderr_path = work.path().join("run.log");
    let mut running = mlambda(&home)
        .args(["run", "example_tokenizer_model:1", "--isolation", "podman"])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .env("CONTAINERS_CONF", &conf)
        .env("CONTAINERS_STORAGE_CONF", &storage)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let listening = common::rootfs::listening_within(port, 180);
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    if !listening {
        let _ = running.kill();
        panic!("mlambda run under podman never served: {}", log());
    }
    common::rootfs::wait_ready(port);
    let answer = common::rootfs::request(
        port,
        "POST",
        "/v2/models/example_tokenizer_model/infer",
        r#"{"inputs": [{"name": "input_text", "datatype": "BYTES", "shape": [1, 1], "data": ["Isolated By Podman"]}]}"#,
    );
    // SIGTERM to the process (podman, exec'd in mlambda's place), which passes it on.
    run_ok(Command::new("kill").args(["-TERM", &running.id().to_string()]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let stopped = loop {
        if let Some(status) = running.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = running.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(answer.0, 200, "{}", answer.1);
    let answer: serde_json::Value = serde_json::from_str(&answer.1).unwrap();
    assert_eq!(
        answer["outputs"][0]["data"],
        serde_json::json!(["isolated by podman"])
    );
    assert!(log().contains("isolated with podman"), "{}", log());
    assert!(stopped.is_some(), "SIGTERM did not stop it: {}", log());
    let left = run_ok(
        Command::new(&tool)
            .args(["ps", "--all", "--quiet"])
            .env("CONTAINERS_CONF", &conf)
            .env("CONTAINERS_STORAGE_CONF", &storage),
    );
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "containers left"
    );
    assert!(!common::rootfs::listening_within(port, 1), "still serving");
}
