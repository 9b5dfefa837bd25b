//! Any bytes as a SavedModel, in both its binary (`saved_model.pb`) and text
//! (`saved_model.pbtxt`) forms. Seed the corpus with ../shared/fixtures/tf_savedmodel.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = mlambda::infer::infer_savedmodel_reader(Cursor::new(data), Path::new("saved_model.pb"));
    let _ = mlambda::infer::infer_savedmodel_text_reader(data, Path::new("saved_model.pbtxt"));
});
