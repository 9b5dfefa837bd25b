//! Readable forms of a contract: JSON for scripts, YAML in the `contract:` form of serving.yaml
//! (so that what `mlambda contract` prints can be pasted back into a serving.yaml).

use super::names::{dtype_name, profile_name};
use super::{Contract, Field, FieldKind, Profile, Shape};
use serde_json::{Map, Value, json};
use std::fmt::Write;

pub fn to_json(contract: &Contract) -> Value {
    json!({
        "model_name": contract.model_name,
        "signatures": contract.signatures.iter().map(|s| json!({
            "name": s.name,
            "inputs": s.inputs.iter().map(field_json).collect::<Vec<_>>(),
            "outputs": s.outputs.iter().map(field_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn field_json(field: &Field) -> Value {
    let mut object = Map::new();
    object.insert("name".into(), json!(field.name));
    object.insert("shape".into(), shape_json(field.shape.as_ref()));
    if let Some(shape) = &field.shape {
        if shape.dims.iter().any(|d| !d.name.is_empty()) {
            object.insert(
                "dim_names".into(),
                json!(shape.dims.iter().map(|d| &d.name).collect::<Vec<_>>()),
            );
        }
        if shape.unknown_rank {
            object.insert("unknown_rank".into(), json!(true));
        }
    }
    match &field.kind {
        FieldKind::Tensor(dtype) => object.insert("type".into(), json!(dtype_name(*dtype))),
        FieldKind::Nested(fields) => object.insert(
            "fields".into(),
            Value::Array(fields.iter().map(field_json).collect()),
        ),
    };
    object.insert("profile".into(), json!(profile_name(field.profile)));
    Value::Object(object)
}

fn shape_json(shape: Option<&Shape>) -> Value {
    match shape {
        None => Value::Null,
        Some(shape) if shape.dims.is_empty() && !shape.unknown_rank => json!("scalar"),
        Some(shape) => json!(shape.dims.iter().map(|d| d.size).collect::<Vec<_>>()),
    }
}

/// The `contract:` block of a serving.yaml.
pub fn to_yaml(contract: &Contract) -> String {
    let mut out = String::from("contract:\n");
    for signature in &contract.signatures {
        let _ = writeln!(out, "  {}:", yaml_key(&signature.name));
        for (section, fields) in [
            ("inputs", &signature.inputs),
            ("outputs", &signature.outputs),
        ] {
            if fields.is_empty() {
                let _ = writeln!(out, "    {section}: {{}}");
                continue;
            }
            let _ = writeln!(out, "    {section}:");
            for field in fields {
                write_field_yaml(&mut out, field, 6);
            }
        }
    }
    out
}

fn write_field_yaml(out: &mut String, field: &Field, indent: usize) {
    let pad = " ".repeat(indent);
    let _ = writeln!(out, "{pad}{}:", yaml_key(&field.name));
    match &field.shape {
        None => {
            let _ = writeln!(out, "{pad}  # shape omitted: any shape");
        }
        Some(shape) if shape.unknown_rank => {
            let _ = writeln!(out, "{pad}  # shape omitted: unknown rank");
        }
        Some(shape) if shape.dims.is_empty() => {
            let _ = writeln!(out, "{pad}  shape: scalar");
        }
        Some(shape) => {
            let sizes: Vec<String> = shape.dims.iter().map(|d| d.size.to_string()).collect();
            let _ = write!(out, "{pad}  shape: [{}]", sizes.join(", "));
            if shape.dims.iter().any(|d| !d.name.is_empty()) {
                let names: Vec<&str> = shape
                    .dims
                    .iter()
                    .map(|d| {
                        if d.name.is_empty() {
                            "_"
                        } else {
                            d.name.as_str()
                        }
                    })
                    .collect();
                let _ = write!(out, "  # dims: {}", names.join(", "));
            }
            out.push('\n');
        }
    }
    match &field.kind {
        FieldKind::Tensor(dtype) => {
            let _ = writeln!(out, "{pad}  type: {}", dtype_name(*dtype));
        }
        FieldKind::Nested(fields) => {
            let _ = writeln!(out, "{pad}  fields:");
            for sub in fields {
                write_field_yaml(out, sub, indent + 4);
            }
        }
    }
    if field.profile != Profile::None {
        let _ = writeln!(out, "{pad}  profile: {}", profile_name(field.profile));
    }
}

/// Plain keys stay plain; anything YAML could read as something else is double-quoted.
fn yaml_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        key.to_string()
    } else {
        serde_json::to_string(key).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{DataType, Signature};

    #[test]
    fn yaml_form_of_the_tokenizer() {
        let mut field = Field::tensor(
            "input_text",
            DataType::DtString,
            Some(Shape::from_sizes(&[-1, 1])),
        );
        field.profile = Profile::Text;
        let contract = Contract {
            model_name: "m".into(),
            signatures: vec![Signature {
                name: "tokenize".into(),
                inputs: vec![field],
                outputs: vec![],
            }],
        };
        assert_eq!(
            to_yaml(&contract),
            "contract:\n  tokenize:\n    inputs:\n      input_text:\n        shape: [-1, 1]\n        type: string\n        profile: text\n    outputs: {}\n"
        );
        assert_eq!(
            to_json(&contract)["signatures"][0]["inputs"][0]["shape"],
            json!([-1, 1])
        );
    }

    #[test]
    fn odd_keys_are_quoted() {
        assert_eq!(yaml_key("input:0"), "\"input:0\"");
        assert_eq!(yaml_key("yes"), "\"yes\"");
        assert_eq!(yaml_key("x_1"), "x_1");
    }
}
