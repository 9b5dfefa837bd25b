//! Synthetic wheels for the tests of every step: a wheel's files written into a zip with a
//! correct (or a given) RECORD, installed into a fresh layout, and the layer read back as
//! paths, modes and bytes, with a check that its RECORD lists exactly the installed files.

use super::record::{Hash, HashKind, csv_field, csv_rows};
use super::wheel::S_IFREG;
use super::{InstallError, Installed, Scheme, WheelFile, install_wheels};
use crate::model_image::layer::{Layer, LayerOptions};
use crate::store::Layout;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use zip::write::SimpleFileOptions;

/// A wheel's files: (name, bytes, unix permissions).
pub(super) type Files = Vec<(String, Vec<u8>, u32)>;

pub(super) fn dist(name: &str, version: &str, purelib: bool) -> Files {
    let info = format!("{name}-{version}.dist-info");
    vec![
        (
            format!("{info}/WHEEL"),
            format!("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: {purelib}\nTag: py3-none-any\n").into_bytes(),
            0o644,
        ),
        (
            format!("{info}/METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").into_bytes(),
            0o644,
        ),
    ]
}

pub(super) fn file(name: &str, bytes: &[u8], mode: u32) -> (String, Vec<u8>, u32) {
    (name.to_string(), bytes.to_vec(), mode)
}

pub(super) fn record_of(files: &Files, dist_info: &str) -> String {
    let mut lines: Vec<String> = files
        .iter()
        .map(|(name, bytes, _)| {
            let hash = Hash::of(HashKind::Sha256, bytes).to_record();
            format!("{},{hash},{}", csv_field(name), bytes.len())
        })
        .collect();
    lines.push(format!("{dist_info}/RECORD,,"));
    lines.join("\r\n") + "\r\n"
}

pub(super) fn zip_options(mode: u32) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .external_attributes((S_IFREG | mode) << 16)
}

/// Writes a wheel: `files`, a RECORD (`record`, or one listing `files` correctly), then
/// whatever `extra` adds.
pub(super) fn write_wheel(
    dir: &Path,
    filename: &str,
    files: &Files,
    record: Option<String>,
    extra: impl FnOnce(&mut zip::ZipWriter<File>),
) -> WheelFile {
    let path = dir.join(filename);
    let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
    for (name, bytes, mode) in files {
        zip.start_file(name, zip_options(*mode)).unwrap();
        zip.write_all(bytes).unwrap();
    }
    let info = files
        .iter()
        .find_map(|(n, _, _)| {
            n.split_once(".dist-info/")
                .map(|(d, _)| format!("{d}.dist-info"))
        })
        .unwrap();
    let record = record.unwrap_or_else(|| record_of(files, &info));
    zip.start_file(format!("{info}/RECORD"), zip_options(0o644))
        .unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    extra(&mut zip);
    zip.finish().unwrap();
    WheelFile {
        path,
        filename: filename.to_string(),
    }
}

pub(super) fn wheel(dir: &Path, filename: &str, files: &Files) -> WheelFile {
    write_wheel(dir, filename, files, None, |_| {})
}

pub(super) fn options() -> LayerOptions {
    LayerOptions {
        mtime: 1_700_000_000,
        ..LayerOptions::default()
    }
}

pub(super) fn install(
    dir: &Path,
    wheels: &[WheelFile],
    scheme: &Scheme,
) -> Result<(Installed, Layout), InstallError> {
    let layout = Layout::create(&dir.join("layout")).unwrap();
    let installed = install_wheels(wheels, scheme, &layout, &options(), "test".into())?;
    Ok((installed, layout))
}

/// An entry of a layer as read back: (path without a trailing '/', kind, mode, bytes).
pub(super) type LayerEntry = (String, tar::EntryType, u32, Vec<u8>);

pub(super) fn entries(layout: &Layout, layer: &Layer) -> Vec<LayerEntry> {
    let blob = layout.open_blob(&layer.descriptor.digest).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header();
        let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
        let (kind, mode) = (header.entry_type(), header.mode().unwrap());
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        assert_eq!(header.mtime().unwrap(), 1_700_000_000);
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.push((path.trim_end_matches('/').to_string(), kind, mode, bytes));
    }
    out
}

pub(super) fn files_of(entries: &[LayerEntry]) -> BTreeMap<String, (u32, Vec<u8>)> {
    entries
        .iter()
        .filter(|e| e.1 == tar::EntryType::Regular)
        .map(|(p, _, m, b)| (p.clone(), (*m, b.clone())))
        .collect()
}

pub(super) const SITE: &str = "usr/local/lib/python3.11/dist-packages";

/// Every line of RECORD names a file of the layer with that hash and size, and every file
/// of the distribution is listed.
pub(super) fn check_record(got: &BTreeMap<String, (u32, Vec<u8>)>, record_path: &str, root: &str) {
    let text = String::from_utf8(got[record_path].1.clone()).unwrap();
    let rows = csv_rows(&text).unwrap();
    let mut listed = BTreeSet::new();
    let mut previous = String::new();
    for (_, row) in rows {
        let line = row[0].clone();
        assert!(
            previous < line,
            "RECORD is not sorted by path: {previous} then {line}"
        );
        previous = line;
        let [rel, hash, size] = row.as_slice() else {
            panic!("{row:?}")
        };
        let mut path: Vec<&str> = root.split('/').collect();
        for part in rel.split('/') {
            if part == ".." {
                path.pop();
            } else {
                path.push(part);
            }
        }
        let path = path.join("/");
        let (_, bytes) = got
            .get(&path)
            .unwrap_or_else(|| panic!("{path} is not in the layer"));
        if path == record_path {
            assert_eq!((hash.as_str(), size.as_str()), ("", ""));
        } else {
            assert_eq!(
                *hash,
                Hash::of(HashKind::Sha256, bytes).to_record(),
                "{path}"
            );
            assert_eq!(*size, bytes.len().to_string(), "{path}");
        }
        listed.insert(path);
    }
    assert_eq!(
        got.get(&record_path.replace("RECORD", "INSTALLER"))
            .map(|f| &f.1[..]),
        Some(&b"mlambda\n"[..])
    );
    let all: BTreeSet<String> = got.keys().cloned().collect();
    assert_eq!(listed, all, "RECORD lists every file of the layer");
}

pub(super) fn two_wheels(dir: &Path) -> Vec<WheelFile> {
    let mut a = dist("alpha", "1.0", true);
    a.push(file("alpha/__init__.py", b"a = 1\n", 0o644));
    a.push(file("alpha/bin/run.sh", b"#!/bin/sh\n", 0o755));
    a.push(file("alpha/deep/er/mod.py", b"", 0o644));
    let mut b = dist("beta", "2.0", false);
    b.push(file("beta/__init__.py", b"b = 2\n", 0o644));
    b.push(file(
        "beta-2.0.dist-info/entry_points.txt",
        b"[console_scripts]\nbeta = beta:main\n",
        0o644,
    ));
    vec![
        wheel(dir, "alpha-1.0-py3-none-any.whl", &a),
        wheel(dir, "beta-2.0-py3-none-any.whl", &b),
    ]
}
