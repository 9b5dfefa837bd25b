//! Any bytes as a PyTorch exported program (`.pt2` zip) and as the formats without metadata
//! (TorchScript zip, pickle, MXNet symbol JSON): an error or a contract, never a panic, a hang
//! or a huge allocation. Seed the corpus with tests/fixtures/pytorch/*.pt2,
//! ../shared/fixtures/torchscript/*/*.pt and tests/fixtures/sklearn/*.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.pt2");
    let _ = mlambda::infer::infer_pt2_reader(Cursor::new(data), path);
    let _ = mlambda::infer::explain_torch_zip(Cursor::new(data), path);
    let _ = mlambda::infer::explain_pickle(path, data);
    let _ = mlambda::infer::explain_mxnet_symbol(data, path);
});
