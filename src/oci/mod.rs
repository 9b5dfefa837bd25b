//! The foundation every other module stands on: the OCI spec's wire types, content digests,
//! the reference grammar (repository names, tags, registry references), platforms, and the
//! one parser of the places an image can be named by (`oci:DIR`, archives, registries).

pub mod digest;
pub mod location;
pub mod name;
pub mod platform;
mod spec;

pub use location::{ArchiveKind, Location};
pub use name::{Reference, RegistryReference, check_repository, is_tag};
pub use platform::{WantedPlatform, host_architecture};
pub use spec::*;
