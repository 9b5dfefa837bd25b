//! Many build hosts, one model history: a PostgreSQL catalogue shared by several homes (each
//! home stands for a host), version tags that are never moved on a registry, leases that let
//! any host close the build of a host that died, and `catalog migrate`.

use crate::common;

use common::manager::{ManagerServer, get_json};
use common::postgres::Postgres;
use common::registry::{Distribution, RegistryOptions};
use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "example_tokenizer_model";

/// `mlambda --catalog URL` in `home`.
fn on(home: &Path, catalog: &str) -> Command {
    let mut command = mlambda(home);
    command.args(["--catalog", catalog]);
    command
}

fn upload_to(home: &Path, catalog: Option<&str>, registry: &str, folder: &Path) -> Command {
    let mut command = match catalog {
        Some(catalog) => on(home, catalog),
        None => mlambda(home),
    };
    command
        .args([
            "upload",
            "--json",
            "--base",
            "scratch",
            "--registry",
            registry,
        ])
        .arg(folder);
    command
}

fn spawn(mut command: Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn versions(command: &mut Command) -> Vec<serde_json::Value> {
    let listed = json_of(&run_ok(command.args(["versions", MODEL, "--json"])));
    listed.as_array().unwrap().clone()
}

/// The manifest digest the registry serves under `tag`, as skopeo reads it.
fn registry_digest(registry: &Distribution, tag: &str) -> Option<String> {
    let skopeo = tool("skopeo")?;
    let inspected = run_ok(
        Command::new(skopeo)
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{}/{MODEL}:{tag}", registry.authority())),
    );
    Some(mlambda::oci::digest::sha256_of(&inspected.stdout))
}

/// The example model with one file changed: another host's code under the same name.
fn changed_example(marker: &str) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    copy_tree(&example_dir(), folder.path());
    std::fs::write(folder.path().join("requirements.txt"), marker).unwrap();
    folder
}

#[test]
fn two_hosts_sharing_postgres_number_ten_concurrent_uploads_one_to_ten() {
    let (Some(postgres), Some(registry)) = (
        Postgres::start(),
        Distribution::start(RegistryOptions::default()),
    ) else {
        return;
    };
    let catalog = postgres.url("two_hosts");
    let (host_a, host_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (code_a, code_b) = (changed_example("a"), changed_example("b"));
    let children: Vec<Child> = (0..5)
        .flat_map(|_| {
            [
                spawn(upload_to(
                    host_a.path(),
                    Some(&catalog),
                    &registry.url(),
                    code_a.path(),
                )),
                spawn(upload_to(
                    host_b.path(),
                    Some(&catalog),
                    &registry.url(),
                    code_b.path(),
                )),
            ]
        })
        .collect();
    assert_eq!(versions_of_uploads(children), (1..=10).collect::<Vec<_>>());

    // Both hosts read the same history, and every tag holds the image its record names.
    let from_a = versions(&mut on(host_a.path(), &catalog));
    let from_b = versions(&mut on(host_b.path(), &catalog));
    assert_eq!(from_a, from_b);
    assert_eq!(from_a.len(), 10);
    for record in &from_a {
        assert_eq!(record["status"], "Finished", "{record}");
        let tag = record["version"].to_string();
        if let Some(served) = registry_digest(&registry, &tag) {
            assert_eq!(Some(served.as_str()), record["pushed_digest"].as_str());
        }
    }
}

#[test]
fn without_a_shared_catalogue_the_second_host_cannot_overwrite_version_one() {
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let (host_a, host_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (code_a, code_b) = (changed_example("a"), changed_example("b"));
    let first = json_of(&run_ok(&mut upload_to(
        host_a.path(),
        None,
        &registry.url(),
        code_a.path(),
    )));
    assert_eq!(first["version"], 1);
    let first_digest = first["pushed_digest"].as_str().unwrap().to_string();

    let refused = run_fail(&mut upload_to(
        host_b.path(),
        None,
        &registry.url(),
        code_b.path(),
    ));
    assert!(refused.contains("never overwritten"), "{refused}");
    assert!(refused.contains(&first_digest), "{refused}");
    assert!(refused.contains("--catalog"), "{refused}");
    let record = &versions(&mut mlambda(host_b.path()))[0];
    assert_eq!(record["status"], "Failed", "{record}");
    let error = record["error"].as_str().unwrap();
    assert!(error.contains(&first_digest), "{error}");
    assert!(
        error.contains(record["digest"].as_str().unwrap()),
        "both digests are named: {error}"
    );
    if let Some(served) = registry_digest(&registry, "1") {
        assert_eq!(served, first_digest, "the registry keeps the first image");
    }

    // Pushing the same image again is no overwrite.
    run_ok(
        mlambda(host_a.path())
            .args(["push", &format!("{MODEL}:1"), "--registry"])
            .arg(registry.url()),
    );
}

#[test]
fn two_manager_replicas_sharing_postgres_serve_one_history() {
    let (Some(postgres), Some(registry)) = (
        Postgres::start(),
        Distribution::start(RegistryOptions::default()),
    ) else {
        return;
    };
    let catalog = postgres.url("replicas");
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = ["--catalog", &catalog, "--registry", &registry.url()];
    let replica_a = ManagerServer::start(home_a.path(), &extra);
    let replica_b = ManagerServer::start(home_b.path(), &extra);
    let client = tempfile::tempdir().unwrap();
    for replica in [&replica_a, &replica_b, &replica_a] {
        let uploaded = json_of(&run_ok(&mut replica.upload(
            client.path(),
            &example_dir(),
            &["--json", "--base", "scratch"],
        )));
        assert_eq!(uploaded["status"], "Finished", "{uploaded}");
    }
    for replica in [&replica_a, &replica_b] {
        let models = get_json(replica, "/api/v2/model");
        assert_eq!(models[0]["versions"], 3, "{models}");
        let page = replica.get(&format!("/models/{MODEL}")).text().unwrap();
        for version in 1..=3 {
            assert!(
                page.contains(&format!("/models/{MODEL}/{version}\"")),
                "{page}"
            );
        }
    }
    let records = versions(&mut on(client.path(), &catalog));
    for record in &records {
        let tag = record["version"].to_string();
        if let Some(served) = registry_digest(&registry, &tag) {
            assert_eq!(Some(served.as_str()), record["pushed_digest"].as_str());
        }
    }
}

/// A home whose builds seem to come from another machine: a UTS namespace with its own host
/// name (root and util-linux's unshare; `None` otherwise).
fn on_another_host(home: &Path, catalog: &str, folder: &Path) -> Option<Command> {
    let unshare = tool("unshare")?;
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        eprintln!("SKIPPED: another host's name needs root");
        return None;
    }
    let mut command = Command::new(unshare);
    command
        .args([
            "--uts",
            "--",
            "sh",
            "-c",
            "hostname builder-b && exec \"$@\"",
            "sh",
        ])
        .arg(mlambda_bin())
        .args(["--catalog", catalog, "upload", "--base", "scratch"])
        .arg(folder)
        .env("MLAMBDA_HOME", home)
        .env_remove("SOURCE_DATE_EPOCH");
    Some(command)
}

/// The example with a big (sparse) payload file, so that its build lasts seconds.
fn slow_example() -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    copy_tree(&example_dir(), folder.path());
    let yaml = std::fs::read_to_string(folder.path().join("serving.yaml")).unwrap();
    std::fs::write(
        folder.path().join("serving.yaml"),
        yaml.replace(
            "  - \"requirements.txt\"",
            "  - \"requirements.txt\"\n  - \"weights.bin\"",
        ),
    )
    .unwrap();
    let weights = std::fs::File::create(folder.path().join("weights.bin")).unwrap();
    weights.set_len(16 << 30).unwrap();
    folder
}

fn wait_for(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "waited {seconds} s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_host_killed_mid_build_is_failed_by_another_host_once_its_lease_runs_out() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let catalog = postgres.url("lease");
    let (host_a, host_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let folder = slow_example();
    let Some(mut command) = on_another_host(host_b.path(), &catalog, folder.path()) else {
        return;
    };
    let mut builder = command
        .env("MLAMBDA_BUILD_LEASE", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = || {
        let listed = on(host_a.path(), &catalog)
            .env("MLAMBDA_BUILD_LEASE", "2")
            .args(["versions", MODEL, "--json"])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&listed.stdout)
            .ok()
            .and_then(|v| v[0].clone().as_object().cloned())
    };
    wait_for("the build on host B to run", 60, || {
        status().is_some_and(|r| r["status"] == "Running")
    });
    // Longer than the lease: host B's heartbeat keeps it alive, host A leaves it alone.
    let alive_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < alive_until {
        assert_eq!(status().unwrap()["status"], "Running");
        assert!(
            builder.try_wait().unwrap().is_none(),
            "the build ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    builder.kill().unwrap(); // SIGKILL: no chance to record anything
    builder.wait().unwrap();
    wait_for("host A to fail the dead build", 10, || {
        status().is_some_and(|r| r["status"] == "Failed")
    });
    let record = status().unwrap();
    let error = record["error"].as_str().unwrap();
    assert!(error.contains("stopped renewing its lease"), "{error}");
    assert!(error.contains("builder-b"), "{error}");
}

#[test]
fn postgres_stopping_mid_upload_is_a_clear_error_and_no_version_is_left_open() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let catalog = postgres.url("down");
    let host = tempfile::tempdir().unwrap();
    let folder = slow_example();
    let mut upload = on(host.path(), &catalog);
    let child = upload
        .env("MLAMBDA_BUILD_LEASE", "2")
        .args(["upload", "--base", "scratch"])
        .arg(folder.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let running = || {
        on(host.path(), &catalog)
            .args(["versions", MODEL, "--json"])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .is_some_and(|v| v[0]["status"] == "Running")
    };
    wait_for("the upload to run", 60, running);
    postgres.stop();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("catalogue postgres://"), "{stderr}");
    assert!(stderr.contains("PostgreSQL server running"), "{stderr}");

    postgres.restart();
    std::thread::sleep(Duration::from_secs(3));
    let records = versions(&mut on(host.path(), &catalog));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["status"], "Failed", "{records:?}");
}

#[test]
fn catalog_migrate_copies_sqlite_into_postgres_and_back_and_never_overwrites() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let shared = postgres.url("migrate");
    let host = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        run_ok(
            mlambda(host.path())
                .args(["upload", "--base", "scratch"])
                .arg(example_dir()),
        );
    }
    let local = versions(&mut mlambda(host.path()));
    let migrate = |from: Option<&str>, to: &str| {
        let mut command = mlambda(host.path());
        command.args(["catalog", "migrate", "--json", "--to", to]);
        if let Some(from) = from {
            command.args(["--from", from]);
        }
        command
    };
    let report = json_of(&run_ok(&mut migrate(None, &shared)));
    assert_eq!(
        (report["versions"].as_u64(), report["copied"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(versions(&mut on(host.path(), &shared)), local);
    let again = json_of(&run_ok(&mut migrate(None, &shared)));
    assert_eq!(again["copied"], 0, "{again}");

    let back = host.path().join("back.db");
    let back_url = format!("sqlite:{}", back.display());
    run_ok(&mut migrate(Some(&shared), &back_url));
    assert_eq!(versions(&mut on(host.path(), &back_url)), local);

    // Another host's own version 1 is not the shared one: nothing is copied.
    let other = tempfile::tempdir().unwrap();
    let code = changed_example("other");
    run_ok(
        mlambda(other.path())
            .args(["upload", "--base", "scratch"])
            .arg(code.path()),
    );
    let refused = run_fail(mlambda(other.path()).args(["catalog", "migrate", "--to", &shared]));
    assert!(refused.contains("never overwritten"), "{refused}");
    assert_eq!(versions(&mut on(host.path(), &shared)), local);
}

#[test]
fn tls_to_postgres_follows_libpq_sslmode() {
    let Some(postgres) = Postgres::start_tls_only() else {
        return;
    };
    let url = postgres.url("postgres");
    let ca = postgres.ca_cert();
    let host = tempfile::tempdir().unwrap();
    let models = |query: &str| {
        let mut command = on(host.path(), &format!("{url}?{query}"));
        command.args(["models", "--json"]);
        command
    };
    // Checked against the server's CA: the certificate names 127.0.0.1.
    run_ok(&mut models(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca.display()
    )));
    // Not checkable without the CA: refused, with the reason.
    let refused = run_fail(&mut models("sslmode=verify-full"));
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    // libpq's require: encrypted, identity unchecked; the default (prefer) takes TLS too.
    run_ok(&mut models("sslmode=require"));
    run_ok(on(host.path(), &url).args(["models", "--json"]));
    // The server takes nothing but TLS, so the three above were encrypted.
    let plain = run_fail(&mut models("sslmode=disable"));
    assert!(plain.contains("no pg_hba.conf entry"), "{plain}");
}
