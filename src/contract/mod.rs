//! The model contract: signatures with typed, shaped input and output fields.
//!
//! The domain types here are what every source (serving.yaml, contract files, framework
//! metadata) produces and what every output (protobin in the image, text for people) reads.

mod names;
pub mod proto;
mod render;
mod wire;

pub use names::{DTYPE_NAMES, PROFILE_NAMES, dtype_name, parse_dtype, parse_profile, profile_name};
pub use proto::hydrosphere::contract::DataProfileType as Profile;
pub use proto::hydrosphere::tensorflow::DataType;
pub use render::{to_json, to_yaml};
pub use wire::{WireError, from_protobin, from_prototxt, to_protobin, to_prototxt};

/// A whole contract, as it goes into `/model/contract.protobin`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contract {
    pub model_name: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    pub name: String,
    pub inputs: Vec<Field>,
    pub outputs: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// `None` means any shape; `Some` with no dims is a scalar. The wire keeps the difference.
    pub shape: Option<Shape>,
    pub kind: FieldKind,
    pub profile: Profile,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    Tensor(DataType),
    Nested(Vec<Field>),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shape {
    pub dims: Vec<Dim>,
    pub unknown_rank: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dim {
    /// -1 for an unknown size.
    pub size: i64,
    /// A symbolic name (ONNX `dim_param`, TensorFlow dim names); empty when there is none.
    pub name: String,
}

impl Shape {
    pub fn scalar() -> Self {
        Shape::default()
    }

    pub fn from_sizes(sizes: &[i64]) -> Self {
        Shape {
            dims: sizes
                .iter()
                .map(|&size| Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }
    }
}

impl Field {
    pub fn tensor(name: &str, dtype: DataType, shape: Option<Shape>) -> Self {
        Field {
            name: name.to_string(),
            shape,
            kind: FieldKind::Tensor(dtype),
            profile: Profile::None,
        }
    }
}
