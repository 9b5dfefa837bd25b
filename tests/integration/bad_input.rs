//! Bad model folders: every one fails with a non-zero exit and a message that names the file,
//! the line and column, and the key; nothing is recorded and nothing is written to the store.

use crate::common;

use common::http::{client, json};
use common::manager::{ManagerServer, post_upload};
use common::*;
use std::path::Path;
use std::process::Command;

const GOOD: &str = "kind: Model
name: example_tokenizer_model
model-type: python:3.6
payload:
  - src/
contract:
  tokenize:
    inputs:
      input_text:
        shape: [-1, 1]
        type: string
        profile: text
    outputs:
      output_text:
        shape: [-1, 1]
        type: string
        profile: text
";

/// Uploads a copy of the tokenizer whose serving.yaml is `GOOD` with `from` replaced by `to`;
/// returns stderr.
fn upload_with(from: &str, to: &str, prepare: impl FnOnce(&Path)) -> String {
    upload_failing(from, to, &[], prepare, |upload| upload)
}

/// [`upload_with`] with `args` after the folder, and the command passed through `wrap` (to
/// run it with fewer privileges).
fn upload_failing(
    from: &str,
    to: &str,
    args: &[&str],
    prepare: impl FnOnce(&Path),
    wrap: impl FnOnce(Command) -> Command,
) -> String {
    assert!(GOOD.contains(from), "{from}");
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    copy_tree(&example_dir(), folder.path());
    std::fs::write(
        folder.path().join("serving.yaml"),
        GOOD.replacen(from, to, 1),
    )
    .unwrap();
    prepare(folder.path());
    let mut upload = mlambda(home.path());
    upload.arg("upload").arg(folder.path()).args(args);
    let stderr = run_fail(&mut wrap(upload));
    assert_eq!(
        repositories(&home.path().join("registry")),
        Vec::<String>::new(),
        "nothing may reach the store"
    );
    let models = run_ok(mlambda(home.path()).args(["models", "--json"]));
    assert_eq!(
        json_of(&models),
        serde_json::json!([]),
        "nothing may be recorded"
    );
    stderr
}

/// The repositories of a store: its folders but its own (`_blobs`, `_tmp`, …).
fn repositories(store: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(store) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('_'))
        .collect()
}

fn assert_names(stderr: &str, location: &str, key: &str, what: &str) {
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("serving.yaml:"), "no file in: {stderr}");
    assert!(first.contains(location), "no {location} in: {stderr}");
    assert!(first.contains(key), "no key {key} in: {stderr}");
    assert!(stderr.contains(what), "no '{what}' in: {stderr}");
}

#[test]
fn malformed_yaml() {
    let stderr = upload_with(
        "        shape: [-1, 1]\n",
        "        shape: [-1, 1\n",
        |_| {},
    );
    assert!(
        stderr.contains("serving.yaml:") && stderr.contains(':'),
        "{stderr}"
    );
}

#[test]
fn unknown_type_with_a_suggestion() {
    let stderr = upload_with("type: string", "type: strnig", |_| {});
    assert_names(
        &stderr,
        ":11:15",
        "contract.tokenize.inputs.input_text.type",
        "did you mean 'string'",
    );
}

#[test]
fn shapes_that_are_not_sizes() {
    for (bad, what) in [("[0, 1]", "0"), ("[-2, 1]", "-2"), ("[\"a\", 1]", "a")] {
        let stderr = upload_with("shape: [-1, 1]", &format!("shape: {bad}"), |_| {});
        assert_names(
            &stderr,
            ":10:",
            "contract.tokenize.inputs.input_text.shape",
            what,
        );
    }
}

#[test]
fn unknown_profile() {
    let stderr = upload_with("profile: text", "profile: txt", |_| {});
    assert_names(
        &stderr,
        ":12:18",
        "contract.tokenize.inputs.input_text.profile",
        "txt",
    );
}

#[test]
fn another_kind() {
    let stderr = upload_with("kind: Model", "kind: Application", |_| {});
    assert_names(&stderr, ":1:7", "kind", "Application");
}

#[test]
fn duplicate_field() {
    let stderr = upload_with(
        "    outputs:\n",
        "      input_text:\n        type: string\n    outputs:\n",
        |_| {},
    );
    assert_names(
        &stderr,
        ":13:7",
        "contract.tokenize.inputs",
        "duplicate field 'input_text'",
    );
}

#[test]
fn missing_payload_entry() {
    let stderr = upload_with("  - src/\n", "  - src/\n  - nltk_data\n", |_| {});
    assert_names(
        &stderr,
        ":6:5",
        "payload entry 'nltk_data'",
        "does not exist",
    );
}

#[test]
fn payload_escaping_the_folder() {
    for bad in ["../x", "/etc/passwd"] {
        let stderr = upload_with("  - src/\n", &format!("  - src/\n  - {bad}\n"), |_| {});
        assert_names(
            &stderr,
            ":6:5",
            &format!("payload entry '{bad}'"),
            "model folder",
        );
    }
    let stderr = upload_with("  - src/\n", "  - src/\n", |folder| {
        std::os::unix::fs::symlink("/etc/passwd", folder.join("src/passwd")).unwrap();
    });
    assert!(
        stderr.contains("src/passwd") && stderr.contains("outside the model folder"),
        "{stderr}"
    );
}

#[test]
fn payload_through_a_symlinked_folder_outside() {
    // `d -> /etc`: the entry's last component is a file, the folder it goes through is not
    // the model's.
    let stderr = upload_with("  - src/\n", "  - src/\n  - d/passwd\n", |folder| {
        std::os::unix::fs::symlink("/etc", folder.join("d")).unwrap();
    });
    assert_names(
        &stderr,
        ":6:5",
        "payload entry 'd/passwd'",
        "symlink to '/etc'",
    );
    assert!(stderr.contains("outside the model folder"), "{stderr}");
    // A folder listed whole through a symlinked folder: the same.
    let stderr = upload_with("  - src/\n", "  - src/\n  - d/ssl/\n", |folder| {
        std::os::unix::fs::symlink("/etc", folder.join("d")).unwrap();
    });
    assert_names(
        &stderr,
        ":6:5",
        "payload entry 'd/ssl/'",
        "outside the model folder",
    );
}

#[test]
fn a_payload_file_that_cannot_be_read() {
    // As root every file can be read: drop the capabilities that allow it, as a CI user has
    // none of them.
    let unprivileged = |upload: Command| {
        if !rootfs::is_root() {
            return upload;
        }
        let mut dropped = Command::new("setpriv");
        dropped
            .args(["--inh-caps=-dac_override,-dac_read_search"])
            .args(["--bounding-set=-dac_override,-dac_read_search", "--"])
            .arg(upload.get_program())
            .args(upload.get_args())
            .envs(
                upload
                    .get_envs()
                    .filter_map(|(key, value)| Some((key, value?))),
            )
            .env_remove("SOURCE_DATE_EPOCH");
        dropped
    };
    if rootfs::is_root() && tool("setpriv").is_none() {
        return;
    }
    let stderr = upload_failing(
        "  - src/\n",
        "  - src/\n",
        &[],
        |folder| {
            let file = folder.join("src/func_main.py");
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o000))
                .unwrap();
        },
        unprivileged,
    );
    assert!(
        stderr.contains("src/func_main.py: cannot be read") && stderr.contains("make it readable"),
        "{stderr}"
    );
}

/// Names the store and every image reference can hold: at most 128 characters (251–255 used
/// to take a version and fail it, over 255 the same).
#[test]
fn a_name_too_long_for_a_reference() {
    for length in [129, 251, 255, 300] {
        let name = "n".repeat(length);
        let stderr = upload_failing(
            "  - src/\n",
            "  - src/\n",
            &["--name", &name],
            |_| {},
            |c| c,
        );
        assert!(
            stderr.contains("--name: invalid model name")
                && stderr.contains(&format!("it has {length} characters"))
                && stderr.contains("at most 128"),
            "{stderr}"
        );
    }
}

/// The manager refuses it before it answers 201 and takes a version.
#[test]
fn a_name_too_long_sent_to_the_manager() {
    let work = tempfile::tempdir().unwrap();
    let server = ManagerServer::start(&work.path().join("server"), &[]);
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    archive.append_dir_all(".", example_dir()).unwrap();
    let payload = archive.into_inner().unwrap().finish().unwrap();
    for length in [251, 300] {
        let metadata = serde_json::json!({ "name": "n".repeat(length) }).to_string();
        let (status, body) = post_upload(&server, payload.clone(), &metadata);
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("at most 128"), "{error}");
    }
    let models = client().get(server.url("/api/v2/model")).send().unwrap();
    assert_eq!(json(models), serde_json::json!([]));
    assert_eq!(
        repositories(&work.path().join("server/registry")),
        Vec::<String>::new()
    );
}

#[test]
fn invalid_model_name() {
    let stderr = upload_with(
        "name: example_tokenizer_model",
        "name: Example Tokenizer!",
        |_| {},
    );
    assert_names(
        &stderr,
        ":2:7",
        "name",
        "invalid model name 'Example Tokenizer!'",
    );
}

#[test]
fn a_missing_folder() {
    let home = tempfile::tempdir().unwrap();
    let stderr = run_fail(mlambda(home.path()).args(["upload", "/no/such/model"]));
    assert!(
        stderr.contains("/no/such/model") && stderr.contains("no such model folder"),
        "{stderr}"
    );
}
