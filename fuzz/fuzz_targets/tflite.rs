//! Any bytes as a TFLite model: an error or a contract, never a panic, a hang or a huge
//! allocation. Seed the corpus with ../shared/fixtures/tflite/*/*/model.tflite and
//! tests/fixtures/tflite/*.tflite.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = mlambda::infer::infer_tflite_reader(Cursor::new(data), Path::new("fuzz.tflite"));
});
