//! Scripts: the launchers pip writes for a wheel's `[console_scripts]` and `[gui_scripts]` entry
//! points (whose module and function are checked to be dotted identifiers, since they are
//! written into Python source), the setuptools launchers of the same entry points that pip drops
//! for its own, and the `#!python` line of a wheel's scripts rewritten to the interpreter's path.

use super::InstallError;
use super::wheel::{Entry, Wheel};
use std::io::{self, Read};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EntryPoint {
    pub(super) name: String,
    pub(super) module: String,
    /// `attr` or `attr.sub`: what is called.
    pub(super) function: String,
}

pub(super) fn parse_entry_points(text: &str) -> Result<Vec<EntryPoint>, String> {
    let mut points = Vec::new();
    let mut section = String::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != "console_scripts" && section != "gui_scripts" {
            continue;
        }
        let point = parse_entry_point(line)
            .map_err(|problem| format!("line {}: {line:?}: {problem}", number + 1))?;
        points.push(point);
    }
    Ok(points)
}

/// `name = module:attr.sub [extras]`. The module and the function are written into Python
/// source, so they must be dotted identifiers and nothing else; the name becomes a file name.
fn parse_entry_point(line: &str) -> Result<EntryPoint, String> {
    let (name, value) = line
        .split_once('=')
        .ok_or("is not name = module:function")?;
    let name = name.trim();
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!("{name:?} is not a script name"));
    }
    let value = match value.split_once('[') {
        Some((value, extras)) if extras.trim_end().ends_with(']') => value,
        Some(_) => return Err("its [extras] are not closed".into()),
        None => value,
    };
    let (module, function) = value
        .trim()
        .split_once(':')
        .ok_or("has no ':function' after the module")?;
    let (module, function) = (module.trim(), function.trim());
    if !dotted_identifiers(module) || !dotted_identifiers(function) {
        return Err(format!(
            "{module:?}:{function:?} is not a module:function of dotted Python identifiers"
        ));
    }
    Ok(EntryPoint {
        name: name.to_string(),
        module: module.to_string(),
        function: function.to_string(),
    })
}

fn dotted_identifiers(text: &str) -> bool {
    text.split('.').all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
            && chars.all(|c| c == '_' || c.is_alphanumeric())
    })
}

/// pip's launcher (distlib's script template), byte for byte, so that it behaves as pip's.
pub(super) fn launcher(point: &EntryPoint, interpreter: &str) -> String {
    let import_name = point.function.split('.').next().unwrap_or_default();
    format!(
        "#!{interpreter}\n\
         # -*- coding: utf-8 -*-\n\
         import re\n\
         import sys\n\
         from {module} import {import_name}\n\
         if __name__ == '__main__':\n    \
         sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    \
         sys.exit({function}())\n",
        module = point.module,
        function = point.function,
    )
}

/// setuptools also puts launchers of its entry points in scripts/ (`EP`, `EP.exe`,
/// `EP-script.py`, `EP.pya`); pip drops them for its own, and so does this.
pub(super) fn is_entry_point_wrapper(path: &str, points: &[EntryPoint]) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let lower = name.to_lowercase();
    let stem = [".exe", "-script.py", ".pya"]
        .iter()
        .find(|suffix| lower.ends_with(*suffix))
        .map_or(name, |suffix| &name[..name.len() - suffix.len()]);
    points.iter().any(|p| p.name == stem)
}

/// A script whose first line starts with `#!python` (`#!pythonw`, `#!python -u`): the wheel
/// spec's marker for "the interpreter it is installed for". The interpreter word is replaced,
/// the arguments after it kept, and the line ended with `\n` (a `\r` would become part of the
/// interpreter's name on Linux).
pub(super) fn rewrite_shebang(script: &[u8], interpreter: &str) -> Vec<u8> {
    let line_end = script
        .iter()
        .position(|&b| b == b'\n')
        .map_or(script.len(), |at| at + 1);
    let line = &script[..line_end];
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let word_end = line
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let mut out = Vec::with_capacity(script.len() + interpreter.len());
    out.extend_from_slice(b"#!");
    out.extend_from_slice(interpreter.as_bytes());
    out.extend_from_slice(&line[word_end..]);
    out.push(b'\n');
    out.extend_from_slice(&script[line_end..]);
    out
}

/// Whether a script starts with `#!python`: its first bytes only are read.
pub(super) fn starts_with_python_shebang(
    wheel: &mut Wheel,
    entry: &Entry,
) -> Result<bool, InstallError> {
    let mut head = Vec::new();
    let read = wheel
        .archive
        .by_index(entry.index)
        .map_err(io::Error::from)
        .and_then(|file| file.take(8).read_to_end(&mut head));
    if let Err(e) = read {
        return Err(wheel.corrupt(&entry.name, format!("cannot be read: {e}")));
    }
    Ok(head == b"#!python")
}

#[cfg(test)]
mod tests {
    use super::super::Scheme;
    use super::super::test_wheels::*;

    #[test]
    fn python_shebangs_are_rewritten_and_scripts_made_executable() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", true);
        let scripts = "demo-1.0.data/scripts";
        files.push(file(
            &format!("{scripts}/plain"),
            b"#!python\nprint(1)\n",
            0o644,
        ));
        files.push(file(
            &format!("{scripts}/args"),
            b"#!python -u -O\r\nprint(2)\n",
            0o644,
        ));
        files.push(file(
            &format!("{scripts}/gui"),
            b"#!pythonw\nprint(3)",
            0o644,
        ));
        files.push(file(
            &format!("{scripts}/shell"),
            b"#!/bin/sh\necho 4\n",
            0o644,
        ));
        files.push(file(&format!("{scripts}/bare"), b"#!python", 0o644));
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let (installed, layout) = install(dir.path(), &[w], &Scheme::debian("3.11")).unwrap();
        let got = files_of(&entries(&layout, &installed.layer));
        let text = |name: &str| {
            let (mode, bytes) = &got[&format!("usr/local/bin/{name}")];
            assert_eq!(*mode, 0o755, "{name}");
            String::from_utf8(bytes.clone()).unwrap()
        };
        assert_eq!(text("plain"), "#!/usr/bin/python3.11\nprint(1)\n");
        assert_eq!(text("args"), "#!/usr/bin/python3.11 -u -O\nprint(2)\n");
        assert_eq!(text("gui"), "#!/usr/bin/python3.11\nprint(3)");
        assert_eq!(text("shell"), "#!/bin/sh\necho 4\n");
        assert_eq!(text("bare"), "#!/usr/bin/python3.11\n");
        check_record(&got, &format!("{SITE}/demo-1.0.dist-info/RECORD"), SITE);
    }

    const ENTRY_POINTS: &str = "[console_scripts]\n\
        demo-cli = demo.cli:main\n\
        # a comment\n\
        demo-sub = demo.tools:App.run [extra1, extra2]\n\
        \n\
        [gui_scripts]\n\
        demo-gui=demo.gui:start\n\
        \n\
        [demo.plugins]\n\
        not-a-script = anything goes: here\n";

    #[test]
    fn console_and_gui_entry_points_get_pips_launchers() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", true);
        files.push(file(
            "demo-1.0.dist-info/entry_points.txt",
            ENTRY_POINTS.as_bytes(),
            0o644,
        ));
        // setuptools' own launcher for the same entry point: pip drops it, and so do we.
        files.push(file(
            "demo-1.0.data/scripts/demo-cli",
            b"#!python\nold\n",
            0o755,
        ));
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let (installed, layout) = install(dir.path(), &[w], &Scheme::debian("3.11")).unwrap();
        let got = files_of(&entries(&layout, &installed.layer));
        let launcher = |name: &str| {
            let (mode, bytes) = &got[&format!("usr/local/bin/{name}")];
            assert_eq!(*mode, 0o755);
            String::from_utf8(bytes.clone()).unwrap()
        };
        let template = |import: &str, name: &str, call: &str| {
            format!(
                "#!/usr/bin/python3.11\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom {import} import {name}\nif __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit({call}())\n"
            )
        };
        assert_eq!(launcher("demo-cli"), template("demo.cli", "main", "main"));
        assert_eq!(
            launcher("demo-sub"),
            template("demo.tools", "App", "App.run")
        );
        assert_eq!(launcher("demo-gui"), template("demo.gui", "start", "start"));
        assert!(!got.contains_key("usr/local/bin/not-a-script"));
        check_record(&got, &format!("{SITE}/demo-1.0.dist-info/RECORD"), SITE);
    }

    #[test]
    fn a_malformed_entry_point_names_the_wheel_and_line() {
        let dir = tempfile::tempdir().unwrap();
        for (bad, line) in [
            ("[console_scripts]\nok = a:b\nbroken = no_function\n", 3),
            ("[gui_scripts]\nevil = os:system('rm -rf /')\n", 2),
            ("[console_scripts]\n../../etc/cron = a:b\n", 2),
        ] {
            let mut files = dist("demo", "1.0", true);
            files.push(file(
                "demo-1.0.dist-info/entry_points.txt",
                bad.as_bytes(),
                0o644,
            ));
            let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
            let error = install(
                &dir.path().join(line.to_string()),
                &[w],
                &Scheme::debian("3.11"),
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains("demo-1.0-py3-none-any.whl"), "{error}");
            assert!(error.contains(&format!("line {line}")), "{error}");
        }
    }
}
