//! The foundation every other module stands on: the OCI spec's wire types, content digests,
//! the reference grammar (repository names, tags, registry references), platforms, and the
//! one parser of the places an image can be named by (`oci:DIR`, archives, registries).

pub mod digest;
mod spec;

pub use spec::*;
