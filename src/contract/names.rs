//! The names people write for data types and profiles (serving.yaml, `--format yaml`).

use super::{DataType, Profile};

/// Every accepted dtype spelling (lowercase) with its enum value; the first spelling of a
/// value is the one mlambda writes.
pub const DTYPE_NAMES: &[(&str, DataType)] = &[
    ("bool", DataType::DtBool),
    ("string", DataType::DtString),
    ("half", DataType::DtHalf),
    ("float16", DataType::DtHalf),
    ("float", DataType::DtFloat),
    ("float32", DataType::DtFloat),
    ("double", DataType::DtDouble),
    ("float64", DataType::DtDouble),
    ("bfloat16", DataType::DtBfloat16),
    ("uint8", DataType::DtUint8),
    ("uint16", DataType::DtUint16),
    ("uint32", DataType::DtUint32),
    ("uint64", DataType::DtUint64),
    ("int8", DataType::DtInt8),
    ("int16", DataType::DtInt16),
    ("int32", DataType::DtInt32),
    ("int64", DataType::DtInt64),
    ("qint8", DataType::DtQint8),
    ("quint8", DataType::DtQuint8),
    ("qint16", DataType::DtQint16),
    ("quint16", DataType::DtQuint16),
    ("qint32", DataType::DtQint32),
    ("complex64", DataType::DtComplex64),
    ("complex128", DataType::DtComplex128),
    ("resource", DataType::DtResource),
    ("variant", DataType::DtVariant),
    ("map", DataType::DtMap),
];

pub const PROFILE_NAMES: &[(&str, Profile)] = &[
    ("none", Profile::None),
    ("categorical", Profile::Categorical),
    ("nominal", Profile::Nominal),
    ("ordinal", Profile::Ordinal),
    ("numerical", Profile::Numerical),
    ("numeric", Profile::Numerical),
    ("continuous", Profile::Continuous),
    ("interval", Profile::Interval),
    ("ratio", Profile::Ratio),
    ("image", Profile::Image),
    ("video", Profile::Video),
    ("audio", Profile::Audio),
    ("text", Profile::Text),
];

/// Case-insensitive; also accepts the enum's own `DT_FLOAT` spelling.
pub fn parse_dtype(text: &str) -> Option<DataType> {
    let lower = text.trim().to_ascii_lowercase();
    let bare = lower.strip_prefix("dt_").unwrap_or(&lower);
    lookup(DTYPE_NAMES, bare)
}

pub fn parse_profile(text: &str) -> Option<Profile> {
    lookup(PROFILE_NAMES, &text.trim().to_ascii_lowercase())
}

pub fn dtype_name(dtype: DataType) -> &'static str {
    reverse(DTYPE_NAMES, dtype).unwrap_or("invalid")
}

pub fn profile_name(profile: Profile) -> &'static str {
    reverse(PROFILE_NAMES, profile).unwrap_or("none")
}

fn lookup<T: Copy>(table: &[(&str, T)], key: &str) -> Option<T> {
    table.iter().find(|(name, _)| *name == key).map(|(_, v)| *v)
}

fn reverse<T: Copy + PartialEq>(table: &[(&'static str, T)], value: T) -> Option<&'static str> {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_case() {
        assert_eq!(parse_dtype("FLOAT32"), Some(DataType::DtFloat));
        assert_eq!(parse_dtype("float16"), Some(DataType::DtHalf));
        assert_eq!(parse_dtype("DT_STRING"), Some(DataType::DtString));
        assert_eq!(parse_dtype("flaot"), None);
        assert_eq!(parse_profile("Numeric"), Some(Profile::Numerical));
        assert_eq!(dtype_name(DataType::DtHalf), "half");
        assert_eq!(profile_name(Profile::Numerical), "numerical");
    }
}
