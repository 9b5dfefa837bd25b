//! Planning a wheel: where each of its files goes in the image (the root in purelib or platlib,
//! what is under `{name}-{version}.data/` in its scheme directory), its mode, and whether it is
//! streamed from the zip or made here (launchers, INSTALLER, rewritten scripts); and the new
//! RECORD, which lists the installed files relative to the root with the wheel's own hashes.

use super::record::{Hash, HashKind, csv_field};
use super::scripts::{
    is_entry_point_wrapper, launcher, rewrite_shebang, starts_with_python_shebang,
};
use super::wheel::{Entry, S_IFMT, S_IFREG, Wheel};
use super::{InstallError, Scheme};

const INSTALLER: &[u8] = b"mlambda\n";

/// A file of the layer, before it is written.
#[derive(Debug)]
pub(super) struct Planned {
    /// Its wheel's index in the call's list.
    pub(super) wheel: usize,
    pub(super) mode: u32,
    pub(super) content: Content,
}

#[derive(Debug)]
pub(super) enum Content {
    /// Streamed from the zip entry, checked against RECORD's hash on the way.
    Zip { entry: Entry, hash: Hash },
    /// Made here (launchers, INSTALLER, RECORD, rewritten scripts) or already read.
    Bytes(Vec<u8>),
}

fn join(dir: &str, rest: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        rest.to_string()
    } else {
        format!("{dir}/{rest}")
    }
}

/// `to` as seen from the directory `from` (both relative to the image's root), as RECORD
/// lists the files of a distribution: `../../../bin/f2py` from site-packages.
pub(super) fn relative(from: &str, to: &str) -> String {
    let from: Vec<&str> = from.split('/').filter(|c| !c.is_empty()).collect();
    let to: Vec<&str> = to.split('/').collect();
    let common = from
        .iter()
        .zip(&to[..to.len() - 1])
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

/// Where a wheel's file goes: the root directory, or a scheme directory for what is under
/// `{name}-{version}.data/`. True when it is a script.
fn destination(
    wheel: &Wheel,
    name: &str,
    root: &str,
    scheme: &Scheme,
) -> Result<(String, bool), InstallError> {
    let Some((top, rest)) = name
        .split_once('/')
        .filter(|(top, _)| top.ends_with(".data"))
    else {
        return Ok((join(root, name), false));
    };
    let Some((key, inside)) = rest.split_once('/') else {
        return Err(wheel.invalid(format!(
            "{name} is directly in {top}/; what a .data directory holds goes in its purelib/, platlib/, scripts/, headers/ or data/"
        )));
    };
    let dir = match key {
        "purelib" => scheme.purelib.clone(),
        "platlib" => scheme.platlib.clone(),
        "scripts" => scheme.scripts.clone(),
        "data" => scheme.data.clone(),
        "headers" => {
            let stem = top.strip_suffix(".data").unwrap_or(top);
            let project = stem.rsplit_once('-').map_or(stem, |(project, _)| project);
            if project.is_empty() || project == "." || project == ".." {
                return Err(InstallError::Unsafe {
                    wheel: wheel.filename.clone(),
                    path: name.to_string(),
                    problem: format!("its headers would go in a directory named {project:?}"),
                });
            }
            join(&scheme.headers, project)
        }
        other => {
            return Err(wheel.invalid(format!(
                "{name}: {top}/{other}/ is not a scheme directory (purelib, platlib, scripts, headers or data)"
            )));
        }
    };
    Ok((join(&dir, inside), key == "scripts"))
}

/// The files a wheel installs, with their paths in the image; its RECORD among them.
pub(super) fn plan_wheel(
    number: usize,
    wheel: &mut Wheel,
    scheme: &Scheme,
) -> Result<Vec<(String, Planned)>, InstallError> {
    let root = if wheel.root_is_purelib {
        scheme.purelib.clone()
    } else {
        scheme.platlib.clone()
    };
    let dist_info = wheel.dist_info.clone();
    // Written here, whatever the wheel holds: the signatures sign a RECORD no longer installed.
    let made_here =
        ["RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER"].map(|f| format!("{dist_info}/{f}"));
    let mut files = Vec::new();
    let mut record = Vec::new();
    for entry in wheel.entries.clone() {
        if made_here.contains(&entry.name) {
            continue;
        }
        let hash = wheel.recorded(&entry)?;
        let (path, is_script) = destination(wheel, &entry.name, &root, scheme)?;
        if is_script && is_entry_point_wrapper(&path, &wheel.entry_points) {
            continue;
        }
        // As pip: executable when the zip says a regular file with an x bit; scripts always.
        let executable = entry.mode & S_IFMT == S_IFREG && entry.mode & 0o111 != 0;
        let mode = if executable || is_script {
            0o755
        } else {
            0o644
        };
        let content = if let Some(bytes) = wheel.read.remove(&entry.name) {
            Content::Bytes(bytes)
        } else if is_script && starts_with_python_shebang(wheel, &entry)? {
            let script = wheel.read_small(&entry, Some(&hash))?;
            Content::Bytes(rewrite_shebang(&script, &scheme.interpreter))
        } else {
            Content::Zip { entry, hash }
        };
        record.push(record_row(&root, &path, &content));
        files.push((
            path,
            Planned {
                wheel: number,
                mode,
                content,
            },
        ));
    }
    let mut made = Vec::new();
    for point in &wheel.entry_points {
        let bytes = launcher(point, &scheme.interpreter).into_bytes();
        made.push((join(&scheme.scripts, &point.name), 0o755, bytes));
    }
    made.push((
        join(&root, &format!("{dist_info}/INSTALLER")),
        0o644,
        INSTALLER.to_vec(),
    ));
    for (path, mode, bytes) in made {
        let content = Content::Bytes(bytes);
        record.push(record_row(&root, &path, &content));
        files.push((
            path,
            Planned {
                wheel: number,
                mode,
                content,
            },
        ));
    }
    let record_path = join(&root, &format!("{dist_info}/RECORD"));
    record.push((relative(&root, &record_path), ",".into()));
    record.sort();
    let text: String = record
        .iter()
        .map(|(path, rest)| format!("{},{rest}\n", csv_field(path)))
        .collect();
    files.push((
        record_path,
        Planned {
            wheel: number,
            mode: 0o644,
            content: Content::Bytes(text.into_bytes()),
        },
    ));
    Ok(files)
}

/// A row of the new RECORD: the path from the root, then the hash and size. A streamed file
/// keeps the wheel's own hash: it is checked against it as it is written, and the install
/// fails if it does not match.
fn record_row(root: &str, path: &str, content: &Content) -> (String, String) {
    let (hash, size) = match content {
        Content::Zip { entry, hash } => (hash.to_record(), entry.size),
        Content::Bytes(bytes) => (
            Hash::of(HashKind::Sha256, bytes).to_record(),
            bytes.len() as u64,
        ),
    };
    (relative(root, path), format!("{hash},{size}"))
}

#[cfg(test)]
mod tests {
    use super::super::Scheme;
    use super::super::test_wheels::*;

    fn split_scheme() -> Scheme {
        Scheme {
            purelib: "pure/site".into(),
            platlib: "plat/site".into(),
            ..Scheme::debian("3.11")
        }
    }

    #[test]
    fn root_is_purelib_decides_where_the_root_goes() {
        let dir = tempfile::tempdir().unwrap();
        for (purelib, root) in [(true, "pure/site"), (false, "plat/site")] {
            let mut files = dist("demo", "1.0", purelib);
            files.push(file("demo/__init__.py", b"x = 1\n", 0o644));
            let name = format!("demo-1.0-py3-none-any-{purelib}.whl");
            let w = wheel(dir.path(), &name, &files);
            let out = dir.path().join(format!("out-{purelib}"));
            let (installed, layout) = install(&out, &[w], &split_scheme()).unwrap();
            let got = files_of(&entries(&layout, &installed.layer));
            assert_eq!(got[&format!("{root}/demo/__init__.py")].1, b"x = 1\n");
            assert!(got.contains_key(&format!("{root}/demo-1.0.dist-info/METADATA")));
            assert!(got.contains_key(&format!("{root}/demo-1.0.dist-info/RECORD")));
            assert!(got.keys().all(|p| p.starts_with(root)), "{:?}", got.keys());
            assert_eq!(installed.files, got.len() as u64);
        }
    }

    #[test]
    fn data_directories_go_to_their_scheme_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", false);
        let data = "demo-1.0.data";
        for (key, name) in [
            ("purelib", "puremod.py"),
            ("platlib", "platmod.py"),
            ("scripts", "tool"),
            ("headers", "demo.h"),
            ("data", "share/demo/table.txt"),
        ] {
            files.push(file(&format!("{data}/{key}/{name}"), key.as_bytes(), 0o644));
        }
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let (installed, layout) = install(dir.path(), &[w], &split_scheme()).unwrap();
        let got = files_of(&entries(&layout, &installed.layer));
        let expect = [
            ("pure/site/puremod.py", "purelib"),
            ("plat/site/platmod.py", "platlib"),
            ("usr/local/bin/tool", "scripts"),
            ("usr/local/include/python3.11/demo/demo.h", "headers"),
            ("usr/local/share/demo/table.txt", "data"),
        ];
        for (path, bytes) in expect {
            assert_eq!(got[path].1, bytes.as_bytes(), "{path}");
        }
        assert_eq!(got["usr/local/bin/tool"].0, 0o755);
        let record =
            String::from_utf8(got["plat/site/demo-1.0.dist-info/RECORD"].1.clone()).unwrap();
        for line in [
            "../../usr/local/bin/tool,sha256=",
            "../../pure/site/puremod.py,sha256=",
            "platmod.py,sha256=",
        ] {
            assert!(
                record.lines().any(|l| l.starts_with(line)),
                "{line} in {record}"
            );
        }

        let mut files = dist("demo", "1.0", false);
        files.push(file(&format!("{data}/purelibs/x.py"), b"", 0o644));
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let error = install(&dir.path().join("bad"), &[w], &split_scheme()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("purelibs/ is not a scheme directory"),
            "{error}"
        );
    }

    #[test]
    fn record_is_rewritten_with_the_installed_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo_pkg", "2.0", false);
        files.push(file("demo_pkg/__init__.py", b"", 0o644));
        files.push(file("demo_pkg/odd, name.txt", b"comma", 0o644));
        files.push(file(
            "demo_pkg-2.0.dist-info/entry_points.txt",
            b"[console_scripts]\ndemo = demo_pkg:main\n",
            0o644,
        ));
        files.push(file(
            "demo_pkg-2.0.data/scripts/run",
            b"#!python\nimport demo_pkg\n",
            0o644,
        ));
        files.push(file("demo_pkg-2.0.data/headers/demo.h", b"int x;\n", 0o644));
        files.push(file("demo_pkg-2.0.dist-info/INSTALLER", b"pip\n", 0o644));
        let w = wheel(
            dir.path(),
            "demo_pkg-2.0-cp311-cp311-linux_x86_64.whl",
            &files,
        );
        let (installed, layout) = install(dir.path(), &[w], &Scheme::prefix_local("3.11")).unwrap();
        let got = files_of(&entries(&layout, &installed.layer));
        let site = "usr/local/lib/python3.11/site-packages";
        check_record(&got, &format!("{site}/demo_pkg-2.0.dist-info/RECORD"), site);
        let record = String::from_utf8(
            got[&format!("{site}/demo_pkg-2.0.dist-info/RECORD")]
                .1
                .clone(),
        )
        .unwrap();
        for line in [
            "\"demo_pkg/odd, name.txt\",sha256=",
            "../../../bin/demo,sha256=",
            "../../../bin/run,sha256=",
            "../../../include/python3.11/demo_pkg/demo.h,sha256=",
            "demo_pkg-2.0.dist-info/INSTALLER,sha256=",
            "demo_pkg-2.0.dist-info/RECORD,,",
        ] {
            assert!(
                record.lines().any(|l| l.starts_with(line)),
                "{line} in {record}"
            );
        }
        assert!(!record.contains('\r') && record.ends_with('\n'));
    }

    #[test]
    fn the_exec_bit_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = two_wheels(dir.path());
        let (installed, layout) = install(dir.path(), &wheels, &Scheme::debian("3.11")).unwrap();
        let got = files_of(&entries(&layout, &installed.layer));
        assert_eq!(got[&format!("{SITE}/alpha/bin/run.sh")].0, 0o755);
        assert_eq!(got[&format!("{SITE}/alpha/__init__.py")].0, 0o644);
        assert_eq!(got["usr/local/bin/beta"].0, 0o755);
    }
}
