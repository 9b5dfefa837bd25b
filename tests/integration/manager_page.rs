//! The manager's web page in a real browser (issue #8): headless Chromium loads the Models
//! page, a model's versions and a version's details, finds what the catalogue holds, and
//! leaves screenshots behind; with JavaScript on, a running build's log and status follow the
//! build live, and the same page without JavaScript already reads as it is.

use crate::common;
use common::http::client;
use common::manager::*;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "example_tokenizer_model";
/// How long one Chromium run may take before it is killed and the test fails.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Headless Chromium with a throw-away profile and nothing running in the background.
struct Chromium {
    bin: PathBuf,
    profile: tempfile::TempDir,
}

impl Chromium {
    fn new() -> Option<Chromium> {
        Some(Chromium {
            bin: tool("chromium")?,
            profile: tempfile::tempdir().unwrap(),
        })
    }

    fn command(&self, extra: &[&str], url: &str) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
            ])
            .arg(format!(
                "--user-data-dir={}",
                self.profile.path().join("profile").display()
            ))
            .args(extra)
            .arg(url)
            // Its own HOME: nothing of the caller's desktop is read or written.
            .env("HOME", self.profile.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs Chromium on `url` and returns its standard output; killed (with every process
    /// it started) after CHROMIUM_TIMEOUT.
    fn run(&self, extra: &[&str], url: &str) -> String {
        use std::os::unix::process::CommandExt;
        let out_path = self.profile.path().join("stdout");
        let err_path = self.profile.path().join("stderr");
        let mut command = self.command(extra, url);
        command
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .process_group(0);
        let mut child = command.spawn().expect("chromium starts");
        let deadline = Instant::now() + CHROMIUM_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                // The whole group: the browser, its zygote, renderers and GPU process.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromium {url} {extra:?} did not end within {CHROMIUM_TIMEOUT:?}\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        assert!(
            status.success(),
            "chromium {url} {extra:?}: {status}\nstderr: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        stdout
    }

    /// The document after the page's own scripts ran, as `--dump-dom` prints it.
    fn dom(&self, url: &str) -> String {
        let dom = self.run(&["--dump-dom"], url);
        assert!(dom.contains("</html>"), "no document for {url}: {dom}");
        dom
    }

    /// A PNG of the page, kept in CARGO_TARGET_TMPDIR as a test artifact.
    fn screenshot(&self, url: &str, name: &str) -> PathBuf {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
        let _ = std::fs::remove_file(&path);
        self.run(
            &[
                &format!("--screenshot={}", path.display()),
                "--window-size=1280,900",
                "--hide-scrollbars",
            ],
            url,
        );
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            path.display()
        );
        // A blank 1280x900 page compresses to a few kilobytes; text and tables do not.
        assert!(
            bytes.len() > 10_000,
            "{}: {} bytes, too small for a rendered page",
            path.display(),
            bytes.len()
        );
        println!("screenshot: {}", path.display());
        path
    }
}

/// The text of the element with `id` (its inner HTML, which has no nested tags for the ones
/// read here).
fn element_text<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let open = format!("<{tag} id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag} id=\"{id}\"> in {dom}"));
    let content = start + dom[start..].find('>').unwrap() + 1;
    let end = content + dom[content..].find(&format!("</{tag}>")).unwrap();
    &dom[content..end]
}

/// The rows of the table with `id`, each as the text of its cells (`th` and `td`), tags
/// dropped; the header row included.
fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    rows_of(element_text(dom, "table", id))
}

/// The contract's tables (one per signature), rows without their header.
fn contract_rows(dom: &str) -> Vec<Vec<String>> {
    dom.split("<table class=\"contract\">")
        .skip(1)
        .flat_map(|table| {
            rows_of(&table[..table.find("</table>").unwrap()])
                .into_iter()
                .skip(1)
        })
        .collect()
}

fn rows_of(table: &str) -> Vec<Vec<String>> {
    table
        .split("<tr>")
        .skip(1)
        .map(|row| {
            let row = &row[..row.find("</tr>").unwrap_or(row.len())];
            row.split("</td>")
                .flat_map(|part| part.split("</th>"))
                .filter(|cell| cell.contains("<td") || cell.contains("<th"))
                .map(strip_tags)
                .collect()
        })
        .collect()
}

/// The value beside the header `key` in a two-column table.
fn detail(rows: &[Vec<String>], key: &str) -> String {
    rows.iter()
        .find(|row| row.first().map(String::as_str) == Some(key))
        .and_then(|row| row.get(1).cloned())
        .unwrap_or_else(|| panic!("no {key} in {rows:?}"))
}

/// Text as HTML escapes it, read back (the server and Chromium escape differently).
fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

fn upload_ok(server: &ManagerServer, client_home: &Path, dir: &Path, extra: &[&str]) {
    run_ok(&mut server.upload(client_home, dir, extra));
}

#[test]
fn headless_chromium_finds_models_versions_statuses_and_the_contract() {
    let Some(chromium) = Chromium::new() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let client = work.path().join("client");
    std::fs::create_dir_all(&home).unwrap();
    // A build that fails once its version is taken: the store cannot hold the image, as a
    // file stands where the model's repository would go.
    std::fs::create_dir_all(home.join("registry")).unwrap();
    std::fs::write(home.join("registry/broken_model"), "not a repository").unwrap();
    let server = ManagerServer::start(&home, &[]);

    for _ in 0..2 {
        upload_ok(&server, &client, &example_dir(), &["--base", "scratch"]);
    }
    wait_for_status(&server, MODEL, 2, &["Finished"], Duration::from_secs(120));
    upload_ok(
        &server,
        &client,
        &example_dir(),
        &["--base", "scratch", "--name", "broken_model", "--async"],
    );
    let failed = wait_for_status(
        &server,
        "broken_model",
        1,
        &["Failed", "Finished"],
        Duration::from_secs(120),
    );
    assert_eq!(failed["status"], "Failed", "{failed}");
    let digest = get_json(&server, &format!("/api/v2/model/version/{MODEL}/2"))["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // The Models page: both models, their versions, the latest and its status.
    let dom = chromium.dom(&server.url("/"));
    let models = table_rows(&dom, "models");
    assert_eq!(
        models[0],
        [
            "Name",
            "Versions",
            "Latest",
            "Build Status",
            "Model Type",
            "Updated"
        ],
        "{dom}"
    );
    let row = |name: &str| {
        models
            .iter()
            .find(|row| row[0] == name)
            .unwrap_or_else(|| panic!("no {name} in {models:?}"))
            .clone()
    };
    assert_eq!(
        row(MODEL)[1..5],
        ["2", "2", "Finished", "python:3.6"],
        "{dom}"
    );
    assert_eq!(row("broken_model")[1..4], ["1", "1", "Failed"], "{dom}");
    assert!(dom.contains(&format!("href=\"/models/{MODEL}\"")), "{dom}");

    // The model's versions, newest first, both Finished, the latest's digest shown.
    let dom = chromium.dom(&server.url(&format!("/models/{MODEL}")));
    let versions = table_rows(&dom, "versions");
    assert_eq!(
        versions[0],
        ["Version", "Created", "Build Status", "Model Type", "Digest"],
        "{dom}"
    );
    let summary: Vec<[&str; 3]> = versions[1..]
        .iter()
        .map(|r| [r[0].as_str(), r[2].as_str(), r[3].as_str()])
        .collect();
    assert_eq!(
        summary,
        [
            ["2", "Finished", "python:3.6"],
            ["1", "Finished", "python:3.6"]
        ],
        "{dom}"
    );
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(versions[1][4], digest, "{dom}");
    for version in [1, 2] {
        let link = format!("href=\"/models/{MODEL}/{version}\"");
        assert!(dom.contains(&link), "no {link} in {dom}");
    }

    // A version: its status, image, the contract's fields, and its build log.
    let dom = chromium.dom(&server.url(&format!("/models/{MODEL}/2")));
    assert_eq!(element_text(&dom, "span", "status"), "Finished", "{dom}");
    let details = table_rows(&dom, "details");
    assert_eq!(detail(&details, "Build Status"), "Finished");
    assert_eq!(
        detail(&details, "Image"),
        format!("{}/{MODEL}:2", server.host())
    );
    assert_eq!(detail(&details, "Digest"), digest);
    assert_eq!(detail(&details, "Base"), "scratch");
    assert!(
        dom.contains("<h3>Signature <code>tokenize</code></h3>"),
        "{dom}"
    );
    assert_eq!(
        contract_rows(&dom),
        [
            ["input", "input_text", "string", "[-1, 1]", "text"],
            ["output", "output_text", "string", "[-1, 1]", "text"],
        ],
        "{dom}"
    );
    let log = element_text(&dom, "pre", "log");
    assert!(log.contains(&format!("manifest {digest}")), "{log}");
    assert!(
        !dom.contains("<script"),
        "a finished build's page needs no script: {dom}"
    );

    // The failed version says so, and why.
    let dom = chromium.dom(&server.url("/models/broken_model/1"));
    assert_eq!(element_text(&dom, "span", "status"), "Failed", "{dom}");
    let details = table_rows(&dom, "details");
    let error = unescape(&detail(&details, "Error"));
    assert_eq!(Some(error.as_str()), failed["error"].as_str(), "{dom}");
    assert!(!error.is_empty(), "{dom}");

    // The artifacts: what a person reviewing the change looks at.
    chromium.screenshot(&server.url("/"), "manager-page-models");
    chromium.screenshot(
        &server.url(&format!("/models/{MODEL}")),
        "manager-page-versions",
    );
    chromium.screenshot(
        &server.url(&format!("/models/{MODEL}/2")),
        "manager-page-version",
    );
    chromium.screenshot(&server.url("/models/broken_model/1"), "manager-page-failed");
}

/// A page fetched as a browser without JavaScript gets it: the server's HTML.
fn html(server: &ManagerServer, path: &str) -> String {
    let response = client().get(server.url(path)).send().unwrap();
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    response.text().unwrap()
}

#[test]
fn with_javascript_a_running_builds_log_and_status_follow_the_build() {
    let Some(chromium) = Chromium::new() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let client = work.path().join("client");
    std::fs::create_dir_all(&home).unwrap();
    let server = ManagerServer::start(&home, &[]);
    // A build that takes a while: 1 GiB the server hashes and stores (sparse here and on the
    // server's side; the stored layer is not). A model-type no runtime serves logs its note
    // first, then builds on scratch.
    let folder = work.path().join("slow");
    copy_tree(&example_dir(), &folder);
    std::fs::File::create(folder.join("src/weights.bin"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let name = "slow_model";
    upload_ok(
        &server,
        &client,
        &folder,
        &["--name", name, "--model-type", "custom:1", "--async"],
    );
    let path = format!("/models/{name}/1");

    // Running, its first line logged: what a browser without JavaScript reads.
    let deadline = Instant::now() + Duration::from_secs(120);
    let before = loop {
        let document = wait_for_status(
            &server,
            name,
            1,
            &["Running", "Finished", "Failed"],
            Duration::from_secs(120),
        );
        assert_eq!(
            document["status"], "Running",
            "the build ended before the page was read; make it slower: {document}"
        );
        let page = html(&server, &path);
        if element_text(&page, "pre", "log").contains("no runtime in base-images/") {
            break page;
        }
        assert!(Instant::now() < deadline, "no log line: {page}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        element_text(&before, "span", "status"),
        "Running",
        "{before}"
    );
    let lines_before = element_text(&before, "pre", "log").lines().count();
    assert!(!before.contains("manifest sha256:"), "{before}");
    assert!(before.contains("<script>"), "{before}");
    // A browser without JavaScript reloads the page of a running build by itself.
    assert!(
        before.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"),
        "{before}"
    );

    // With JavaScript, the page follows the build's events until it ends. Chromium's virtual
    // time waits for the event stream, which ends with the final status.
    let started = Instant::now();
    let after = chromium.run(
        &["--virtual-time-budget=300000", "--dump-dom"],
        &server.url(&path),
    );
    let log = element_text(&after, "pre", "log");
    assert_eq!(
        element_text(&after, "span", "status"),
        "Finished",
        "{after}"
    );
    assert!(
        log.lines().count() > lines_before && log.contains("manifest sha256:"),
        "{after}"
    );
    // It was the script that followed: the browser asked for the event stream.
    let stream = format!("GET /api/v2/model/version/{name}/1/logs 200");
    assert!(
        server.log_text().contains(&stream),
        "no {stream} in the server's log: the script did not run, or the build ended before \
         Chromium loaded the page (then the model must be bigger):\n{}",
        server.log_text()
    );
    // Once Finished, the log the browser shows is the one the server has, no line twice.
    let finished = html(&server, &path);
    assert_eq!(
        unescape(element_text(&after, "pre", "log")),
        unescape(element_text(&finished, "pre", "log"))
    );
    // The script resumes the stream from the line count the page states, which is the
    // stream's own: its next event is the next line.
    let stated = before
        .split("data-lines=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no data-lines on the log: {before}"));
    assert_eq!(stated, lines_before, "{before}");
    let events = common::http::client()
        .get(server.url(&format!(
            "/api/v2/model/version/{name}/1/logs?last-event-id={stated}"
        )))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let full_log = unescape(element_text(&finished, "pre", "log"));
    let next_line = full_log.lines().nth(stated).unwrap();
    assert!(
        events.starts_with(&format!(
            "id: {}\nevent: log\ndata: {next_line}\n",
            stated + 1
        )),
        "{events}"
    );
    println!(
        "Chromium followed the build for {:?}; {}",
        started.elapsed(),
        if after.contains("<script>") {
            "the page kept its script"
        } else {
            "the page reloaded once the build ended"
        }
    );
}
