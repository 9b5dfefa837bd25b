//! Any bytes as an ONNX model: an error or a contract, never a panic, a hang or a huge
//! allocation. Seed the corpus with ../shared/fixtures/onnx/*/*.onnx.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = mlambda::infer::infer_onnx_reader(Cursor::new(data), Path::new("fuzz.onnx"));
});
