//! Compiles proto/ with protox (pure Rust, so no protoc is needed) and keeps the descriptor set
//! so that the text formats (`contract.prototxt`, `saved_model.pbtxt`) can be read through
//! prost-reflect, and so that inference can walk framework files field by field.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/hydrosphere/contract/model_contract.proto",
        "proto/tensorflow/saved_model.proto",
        "proto/onnx/onnx.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    prost_build::Config::new()
        // Sorted maps: SignatureDef keys and field names come out in a deterministic order.
        .btree_map([".tensorflow"])
        .compile_fds(descriptors)?;
    Ok(())
}
