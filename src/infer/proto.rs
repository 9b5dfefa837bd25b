//! The generated messages of the TensorFlow and ONNX schema subsets (proto/), and their
//! descriptors, which drive the pruning readers.

use prost_reflect::{DescriptorPool, MessageDescriptor};
use std::sync::LazyLock;

pub(crate) mod tensorflow {
    include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
}

// ONNX's own names (TypeProto's tensor_type, sequence_type...), generated, not ours to change.
#[allow(clippy::enum_variant_names)]
pub(crate) mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(crate::contract::proto::DESCRIPTOR_SET)
        .expect("the descriptor set is compiled in by build.rs")
});

/// The descriptor of a message compiled from proto/, e.g. `onnx.ModelProto`.
pub(crate) fn message(full_name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("proto/ defines {full_name}"))
}
