//! The contract on the wire: `contract.protobin` (binary) and `contract.prototxt` (text format).

use super::proto::hydrosphere::contract as pb;
use super::proto::hydrosphere::tensorflow as tf;
use super::{Contract, DataType, Dim, Field, FieldKind, Profile, Shape, Signature};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a valid binary ModelContract: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("not a valid text-format ModelContract: {0}")]
    Text(String),
    #[error("field '{field}' has unknown {what} value {value}")]
    UnknownEnum {
        field: String,
        what: &'static str,
        value: i32,
    },
}

pub fn to_protobin(contract: &Contract) -> Vec<u8> {
    to_message(contract).encode_to_vec()
}

pub fn from_protobin(bytes: &[u8]) -> Result<Contract, WireError> {
    from_message(pb::ModelContract::decode(bytes)?)
}

pub fn to_prototxt(contract: &Contract) -> String {
    let bytes = to_protobin(contract);
    let message = DynamicMessage::decode(contract_descriptor(), bytes.as_slice())
        .expect("bytes we just encoded decode with their own descriptor");
    let mut text = message.to_text_format_with_options(
        &prost_reflect::text_format::FormatOptions::new().pretty(true),
    );
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

pub fn from_prototxt(text: &str) -> Result<Contract, WireError> {
    let message = DynamicMessage::parse_text_format(contract_descriptor(), text)
        .map_err(|e| WireError::Text(e.to_string()))?;
    from_protobin(&message.encode_to_vec())
}

fn contract_descriptor() -> prost_reflect::MessageDescriptor {
    let pool = DescriptorPool::decode(super::proto::DESCRIPTOR_SET)
        .expect("the descriptor set is compiled in by build.rs");
    pool.get_message_by_name("hydrosphere.contract.ModelContract")
        .expect("proto/ defines hydrosphere.contract.ModelContract")
}

fn to_message(contract: &Contract) -> pb::ModelContract {
    pb::ModelContract {
        model_name: contract.model_name.clone(),
        signatures: contract
            .signatures
            .iter()
            .map(|s| pb::ModelSignature {
                signature_name: s.name.clone(),
                inputs: s.inputs.iter().map(field_to_message).collect(),
                outputs: s.outputs.iter().map(field_to_message).collect(),
            })
            .collect(),
    }
}

fn field_to_message(field: &Field) -> pb::ModelField {
    let type_or_subfields = match &field.kind {
        FieldKind::Tensor(dtype) => pb::model_field::TypeOrSubfields::Dtype(*dtype as i32),
        FieldKind::Nested(fields) => {
            pb::model_field::TypeOrSubfields::Subfields(pb::model_field::Subfield {
                data: fields.iter().map(field_to_message).collect(),
            })
        }
    };
    pb::ModelField {
        name: field.name.clone(),
        shape: field.shape.as_ref().map(|shape| tf::TensorShapeProto {
            dim: shape
                .dims
                .iter()
                .map(|d| tf::tensor_shape_proto::Dim {
                    size: d.size,
                    name: d.name.clone(),
                })
                .collect(),
            unknown_rank: shape.unknown_rank,
        }),
        type_or_subfields: Some(type_or_subfields),
        profile: field.profile as i32,
    }
}

fn from_message(message: pb::ModelContract) -> Result<Contract, WireError> {
    let signatures = message
        .signatures
        .into_iter()
        .map(|s| {
            Ok(Signature {
                name: s.signature_name,
                inputs: fields_from_messages(s.inputs)?,
                outputs: fields_from_messages(s.outputs)?,
            })
        })
        .collect::<Result<_, WireError>>()?;
    Ok(Contract {
        model_name: message.model_name,
        signatures,
    })
}

fn fields_from_messages(fields: Vec<pb::ModelField>) -> Result<Vec<Field>, WireError> {
    fields.into_iter().map(field_from_message).collect()
}

fn field_from_message(field: pb::ModelField) -> Result<Field, WireError> {
    let unknown = |what, value| WireError::UnknownEnum {
        field: field.name.clone(),
        what,
        value,
    };
    let kind = match field.type_or_subfields {
        Some(pb::model_field::TypeOrSubfields::Subfields(sub)) => {
            FieldKind::Nested(fields_from_messages(sub.data)?)
        }
        Some(pb::model_field::TypeOrSubfields::Dtype(value)) => {
            FieldKind::Tensor(DataType::try_from(value).map_err(|_| unknown("data type", value))?)
        }
        None => FieldKind::Tensor(DataType::DtInvalid),
    };
    let profile =
        Profile::try_from(field.profile).map_err(|_| unknown("profile", field.profile))?;
    Ok(Field {
        shape: field.shape.map(|shape| Shape {
            dims: shape
                .dim
                .into_iter()
                .map(|d| Dim {
                    size: d.size,
                    name: d.name,
                })
                .collect(),
            unknown_rank: shape.unknown_rank,
        }),
        name: field.name,
        kind,
        profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Contract {
        let mut input = Field::tensor(
            "input_text",
            DataType::DtString,
            Some(Shape::from_sizes(&[-1, 1])),
        );
        input.profile = Profile::Text;
        Contract {
            model_name: "example_tokenizer_model".into(),
            signatures: vec![Signature {
                name: "tokenize".into(),
                inputs: vec![input],
                outputs: vec![
                    Field::tensor("scalar", DataType::DtInvalid, Some(Shape::scalar())),
                    Field::tensor("any", DataType::DtFloat, None),
                ],
            }],
        }
    }

    #[test]
    fn protobin_round_trip_keeps_scalar_and_any_apart() {
        let contract = tokenizer();
        let bytes = to_protobin(&contract);
        assert_eq!(from_protobin(&bytes).unwrap(), contract);
    }

    #[test]
    fn dtype_zero_is_still_written() {
        let field = Field::tensor("x", DataType::DtInvalid, None);
        let bytes = field_to_message(&field).encode_to_vec();
        // name (tag 1, "x") then dtype (field 4, varint) = 0x20 0x00
        assert_eq!(bytes, vec![0x0a, 0x01, b'x', 0x20, 0x00]);
    }

    #[test]
    fn prototxt_round_trip() {
        let contract = tokenizer();
        let text = to_prototxt(&contract);
        assert!(text.contains("DT_STRING"), "{text}");
        assert_eq!(from_prototxt(&text).unwrap(), contract);
    }
}
