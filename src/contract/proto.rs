//! The generated protobuf messages (proto/), and the descriptor set for the text format.

pub mod hydrosphere {
    pub mod tensorflow {
        include!(concat!(env!("OUT_DIR"), "/hydrosphere.tensorflow.rs"));
    }
    pub mod contract {
        include!(concat!(env!("OUT_DIR"), "/hydrosphere.contract.rs"));
    }
}

/// The encoded `FileDescriptorSet` of proto/, for prost-reflect.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
