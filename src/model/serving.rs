//! `serving.yaml`: the model folder's own description (SPEC §1), read with the position of
//! every value so that each complaint points at the line and column to fix.
//!
//! Two contract layouts are read: the 1.x one (`contract: {<signature>: {inputs, outputs}}`)
//! and Hydrosphere 2.x's single-signature one (`contract: {name, inputs, outputs}`), which
//! files written for `hs apply` use together with `runtime:`.
//!
//! Also here: the older contract files (`contract.prototxt` / `contract.protobin`) that sit in
//! a model folder instead of a `contract:` block.

use super::suggest::{did_you_mean, suggest};
use super::yaml::{self, Key, Map, Node, ScalarKind, Value};
use crate::contract::{
    DTYPE_NAMES, DataType, Field, FieldKind, PROFILE_NAMES, Profile, Shape, Signature, WireError,
    from_protobin, from_prototxt, parse_dtype, parse_profile,
};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A value with where it was written (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone)]
pub struct ServingFile {
    pub path: PathBuf,
    /// As written; see [`super::name::validate_model_name`].
    pub name: Option<Spanned<String>>,
    /// `model-type`, or `runtime` (the 2.x form) when `model-type` is absent.
    pub model_type: Option<Spanned<String>>,
    /// Entries as written (a trailing "/" is kept).
    pub payload: Option<Vec<Spanned<String>>>,
    /// Signatures in file order.
    pub contract: Option<Vec<Signature>>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Complete lines, `file:line:col: message`.
    pub warnings: Vec<String>,
}

/// One thing wrong in a serving.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    /// `contract.tokenize.inputs.input_text.type`; empty when the problem is not under a key.
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.col)?;
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// Every problem found in the file, in file order, one per line when displayed.
    #[error("{}", display_lines(.0))]
    Invalid(Vec<Problem>),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file that cannot be what it claims (too large, no signatures, …).
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}: {error}", path.display())]
    ContractFile { path: PathBuf, error: WireError },
    #[error(
        "{} and {} are both present; keep one of them so that it is clear which contract is meant",
        prototxt.display(),
        protobin.display()
    )]
    BothContractFiles {
        prototxt: PathBuf,
        protobin: PathBuf,
    },
}

impl ServingError {
    /// The located problems of an invalid serving.yaml; empty for the other kinds of error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ServingError::Invalid(problems) => problems,
            _ => &[],
        }
    }
}

fn display_lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Far above any real serving.yaml; stops a mistaken path (a dataset) from being slurped.
const MAX_SERVING_YAML_BYTES: u64 = 4 << 20;
/// Contract files describe fields, not weights.
const MAX_CONTRACT_FILE_BYTES: u64 = 64 << 20;

pub const TOP_LEVEL_KEYS: &[&str] = &[
    "kind",
    "name",
    "model-type",
    "runtime",
    "payload",
    "contract",
    "description",
    "install-command",
    "training-data",
    "metadata",
    "monitoring",
];
const SIGNATURE_KEYS: &[&str] = &["inputs", "outputs"];
const SINGLE_SIGNATURE_KEYS: &[&str] = &["name", "inputs", "outputs"];
const FIELD_KEYS: &[&str] = &["shape", "type", "profile", "fields"];
/// Hydrosphere 2.x's contract held exactly one signature, its `predict` member; a 2.x file
/// that leaves out `name` meant that one.
const DEFAULT_SINGLE_SIGNATURE_NAME: &str = "predict";

pub fn parse_serving_yaml(path: &Path) -> Result<ServingFile, ServingError> {
    let bytes = read_limited(path, MAX_SERVING_YAML_BYTES)?;
    match String::from_utf8(bytes) {
        Ok(text) => parse_serving_str(path, &text),
        Err(error) => {
            let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
            let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let col = 1 + String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count();
            Err(ServingError::Invalid(vec![Problem {
                file: path.to_path_buf(),
                line,
                col,
                key_path: String::new(),
                message: "the file is not UTF-8 text; save it as UTF-8".into(),
            }]))
        }
    }
}

/// `path` is only used in messages.
pub fn parse_serving_str(path: &Path, text: &str) -> Result<ServingFile, ServingError> {
    // Editors on Windows like to start files with a byte-order mark; it is not content, and
    // leaving it would shift every column on line 1.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut checker = Checker {
        file: path,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            checker.problem_at(
                1,
                1,
                "",
                "the file is empty; a serving.yaml is a mapping such as `kind: Model`, \
                 `name: my-model`, `model-type: python:3.6`",
            );
            return Err(ServingError::Invalid(checker.problems));
        }
        Err(error) => {
            checker.problem_at(
                error.line,
                error.col,
                "",
                format!("not valid YAML: {}", error.message),
            );
            return Err(ServingError::Invalid(checker.problems));
        }
    };
    let file = checker.top_level(&root);
    if checker.problems.is_empty() {
        Ok(ServingFile {
            path: path.to_path_buf(),
            warnings: checker.warnings,
            ..file
        })
    } else {
        checker.problems.sort_by_key(|p| (p.line, p.col));
        Err(ServingError::Invalid(checker.problems))
    }
}

/// The older form (Hydrosphere 1.x): `contract.prototxt` or `contract.protobin` in the
/// model folder. `Ok(None)` when there is neither. The model name in the file is dropped: the
/// caller decides the name.
pub fn read_contract_file(dir: &Path) -> Result<Option<(Vec<Signature>, PathBuf)>, ServingError> {
    let prototxt = dir.join("contract.prototxt");
    let protobin = dir.join("contract.protobin");
    let contract = match (exists(&prototxt)?, exists(&protobin)?) {
        (false, false) => return Ok(None),
        (true, true) => return Err(ServingError::BothContractFiles { prototxt, protobin }),
        (true, false) => {
            let bytes = read_limited(&prototxt, MAX_CONTRACT_FILE_BYTES)?;
            let text = String::from_utf8(bytes).map_err(|_| ServingError::File {
                path: prototxt.clone(),
                message: "not UTF-8 text; a .prototxt is the protobuf text format \
                          (a binary contract is named contract.protobin)"
                    .into(),
            })?;
            let contract = from_prototxt(&text).map_err(|error| ServingError::ContractFile {
                path: prototxt.clone(),
                error,
            })?;
            (contract, prototxt)
        }
        (false, true) => {
            let bytes = read_limited(&protobin, MAX_CONTRACT_FILE_BYTES)?;
            let contract = from_protobin(&bytes).map_err(|error| ServingError::ContractFile {
                path: protobin.clone(),
                error,
            })?;
            (contract, protobin)
        }
    };
    let (contract, path) = contract;
    if contract.signatures.is_empty() {
        return Err(ServingError::File {
            path,
            message: "the contract has no signatures".into(),
        });
    }
    Ok(Some((contract.signatures, path)))
}

fn exists(path: &Path) -> Result<bool, ServingError> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(ServingError::Io {
            path: path.to_path_buf(),
            error,
        }),
    }
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ServingError> {
    let io = |error| ServingError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    // Reading one byte past the limit tells "too large" apart without trusting metadata,
    // which a growing or special file can misreport.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ServingError::File {
            path: path.to_path_buf(),
            message: format!(
                "larger than {} MiB; this is not the file mlambda expects",
                limit >> 20
            ),
        });
    }
    Ok(bytes)
}

struct Checker<'a> {
    file: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

fn join(path: &str, key: &str) -> String {
    // Keys with dots or spaces are quoted so the path still reads unambiguously.
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let segment = if plain {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        segment
    } else {
        format!("{path}.{segment}")
    }
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn unknown_key_message(key: &str, known: &[&str], context: &str) -> String {
    let suggestions = suggest(key, known.iter().copied());
    let hint = did_you_mean(&suggestions);
    if hint.is_empty() {
        format!("unknown key '{key}'{context}; expected {}", one_of(known))
    } else {
        format!("unknown key '{key}'{context}{hint}")
    }
}

impl Checker<'_> {
    fn problem_at(&mut self, line: usize, col: usize, key_path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line,
            col,
            key_path: key_path.to_string(),
            message: message.into(),
        });
    }

    fn problem(&mut self, node: &Node, key_path: &str, message: impl Into<String>) {
        self.problem_at(node.line, node.col, key_path, message);
    }

    fn key_problem(&mut self, key: &Key, key_path: &str, message: impl Into<String>) {
        self.problem_at(key.line, key.col, key_path, message);
    }

    fn warn(&mut self, key: &Key, message: impl fmt::Display) {
        self.warnings.push(format!(
            "{}:{}:{}: {message}",
            self.file.display(),
            key.line,
            key.col
        ));
    }

    /// The entries of a mapping, reporting repeated keys with `noun` ("key", "field", …).
    fn entries<'n>(&mut self, map: &'n Map, path: &str, noun: &str) -> &'n [(Key, Node)] {
        for duplicate in &map.duplicates {
            let key = &duplicate.key;
            self.key_problem(
                key,
                &join(path, &key.text),
                format!(
                    "duplicate {noun} '{}' (first at line {})",
                    key.text, duplicate.first_line
                ),
            );
        }
        &map.entries
    }

    /// Duplicates inside values that are otherwise ignored are still mistakes in the file.
    fn check_duplicates_everywhere(&mut self, node: &Node, path: &str) {
        match &node.value {
            Value::Scalar(_) => {}
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.check_duplicates_everywhere(item, &format!("{path}[{i}]"));
                }
            }
            Value::Map(map) => {
                for (key, value) in self.entries(map, path, "key") {
                    self.check_duplicates_everywhere(value, &join(path, &key.text));
                }
            }
        }
    }

    /// A scalar as text. Numbers and booleans are taken as written (`name: 2024` is the name
    /// "2024"); a missing value or a collection is a problem.
    fn text(&mut self, node: &Node, path: &str, what: &str) -> Option<Spanned<String>> {
        match &node.value {
            Value::Scalar(s) if s.kind != ScalarKind::Null => Some(Spanned {
                value: s.text.clone(),
                line: node.line,
                col: node.col,
            }),
            _ => {
                self.problem(
                    node,
                    path,
                    format!("expected {what}, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn top_level(&mut self, root: &Node) -> ServingFile {
        let mut file = ServingFile {
            path: self.file.to_path_buf(),
            name: None,
            model_type: None,
            payload: None,
            contract: None,
            description: None,
            metadata: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let Some(map) = root.as_map() else {
            self.problem(
                root,
                "",
                format!(
                    "expected a mapping of keys ({}) at the top level, found {}",
                    TOP_LEVEL_KEYS.join(", "),
                    root.describe()
                ),
            );
            return file;
        };
        let mut runtime: Option<(Key, Spanned<String>)> = None;
        let mut model_type_key: Option<Key> = None;
        for (key, value) in self.entries(map, "", "key") {
            let path = join("", &key.text);
            match key.text.as_str() {
                "kind" => self.kind(value, &path),
                "name" => file.name = self.text(value, &path, "the model name as a string"),
                "model-type" => {
                    file.model_type =
                        self.text(value, &path, "a model type such as \"python:3.6\"");
                    model_type_key = Some(key.clone());
                }
                "runtime" => {
                    runtime = self
                        .text(value, &path, "a runtime image reference")
                        .map(|text| (key.clone(), text));
                }
                "payload" => file.payload = self.payload(key, value, &path),
                "contract" => file.contract = self.contract(key, value, &path),
                "description" => {
                    if !value.is_null() {
                        file.description =
                            self.text(value, &path, "a string").map(|text| text.value);
                    }
                }
                "metadata" => file.metadata = self.metadata(value, &path),
                "install-command" => {
                    self.check_duplicates_everywhere(value, &path);
                    self.warn(
                        key,
                        "install-command has no effect: mlambda builds images without running a \
                         container; put installed packages in the payload or the base image",
                    );
                }
                "training-data" => {
                    self.check_duplicates_everywhere(value, &path);
                    self.warn(
                        key,
                        "training-data has no effect: mlambda builds and stores images; \
                         training data belongs to the monitoring service, not the image",
                    );
                }
                "monitoring" => {
                    self.check_duplicates_everywhere(value, &path);
                    self.warn(
                        key,
                        "monitoring has no effect: metrics are configured in the serving \
                         platform, not in the image",
                    );
                }
                "model" if value.as_map().is_some() => self.key_problem(
                    key,
                    &path,
                    "'model:' is the 0.x layout; move its keys to the top level \
                     (name, payload; type becomes model-type; a contract file becomes \
                     contract.prototxt in the folder)",
                ),
                other => {
                    let message = unknown_key_message(other, TOP_LEVEL_KEYS, "");
                    self.key_problem(key, &path, message);
                }
            }
        }
        match (runtime, &file.model_type) {
            (Some((_, runtime)), None) => file.model_type = Some(runtime),
            (Some((key, _)), Some(_)) => {
                let at = model_type_key.map_or(key.line, |k| k.line);
                self.warn(
                    &key,
                    format_args!(
                        "runtime is ignored: model-type (line {at}) says which runtime to use"
                    ),
                );
            }
            (None, _) => {}
        }
        file
    }

    fn kind(&mut self, node: &Node, path: &str) {
        match &node.value {
            Value::Scalar(s) if s.kind == ScalarKind::Str && s.text == "Model" => {}
            Value::Scalar(s)
                if s.kind == ScalarKind::Str && s.text.eq_ignore_ascii_case("model") =>
            {
                self.problem(
                    node,
                    path,
                    format!("unknown kind '{}'; did you mean 'Model'?", s.text),
                );
            }
            Value::Scalar(s) if s.kind == ScalarKind::Str => self.problem(
                node,
                path,
                format!("this is a '{}' file; mlambda reads kind: Model", s.text),
            ),
            _ => self.problem(
                node,
                path,
                format!("expected kind: Model, found {}", node.describe()),
            ),
        }
    }

    fn payload(&mut self, key: &Key, node: &Node, path: &str) -> Option<Vec<Spanned<String>>> {
        match &node.value {
            Value::Seq(items) => {
                let mut entries = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    if let Some(entry) =
                        self.text(item, &item_path, "a path relative to the folder")
                    {
                        if entry.value.is_empty() {
                            self.problem(item, &item_path, "the path is empty");
                        } else {
                            entries.push(entry);
                        }
                    }
                }
                Some(entries)
            }
            _ if node.is_null() => {
                self.warn(
                    key,
                    "payload has no entries, so the default payload is used: every file of the \
                     folder except serving.yaml, hidden files and contract files",
                );
                None
            }
            _ => {
                let example = match node.as_scalar() {
                    Some(s) => format!("payload: [{:?}]", s.text),
                    None => "payload: [\"src/\", \"requirements.txt\"]".into(),
                };
                self.problem(
                    node,
                    path,
                    format!(
                        "expected a list of paths, found {}; write it as a list: {example}",
                        node.describe()
                    ),
                );
                None
            }
        }
    }

    fn metadata(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let mut metadata = BTreeMap::new();
        if node.is_null() {
            return metadata;
        }
        let Some(map) = node.as_map() else {
            self.problem(
                node,
                path,
                format!(
                    "metadata must be a mapping of strings (key: value), found {}",
                    node.describe()
                ),
            );
            return metadata;
        };
        for (key, value) in self.entries(map, path, "metadata key") {
            let value_path = join(path, &key.text);
            match &value.value {
                Value::Scalar(s) if s.kind == ScalarKind::Null => {
                    metadata.insert(key.text.clone(), String::new());
                }
                Value::Scalar(s) => {
                    metadata.insert(key.text.clone(), s.text.clone());
                }
                _ => self.problem(
                    value,
                    &value_path,
                    format!(
                        "metadata values are strings, numbers or booleans, found {}",
                        value.describe()
                    ),
                ),
            }
        }
        metadata
    }

    fn contract(&mut self, key: &Key, node: &Node, path: &str) -> Option<Vec<Signature>> {
        let map = match &node.value {
            Value::Map(map) if !map.entries.is_empty() || !map.duplicates.is_empty() => map,
            _ if node.is_null() || node.as_map().is_some() => {
                self.key_problem(
                    key,
                    path,
                    "the contract has no signatures; add one (name: {inputs: …, outputs: …}) \
                     or remove the key to use contract.prototxt or inference",
                );
                return None;
            }
            _ => {
                self.problem(
                    node,
                    path,
                    format!(
                        "expected a mapping of signature names to their inputs and outputs, found {}",
                        node.describe()
                    ),
                );
                return None;
            }
        };
        let before = self.problems.len();
        let signatures = if is_single_signature_form(map) {
            self.single_signature(key, map, path).into_iter().collect()
        } else {
            let mut signatures = Vec::new();
            for (name, body) in self.entries(map, path, "signature") {
                let sig_path = join(path, &name.text);
                if name.text.is_empty() {
                    self.key_problem(name, &sig_path, "the signature name is empty");
                    continue;
                }
                if let Some(signature) = self.signature(name, body, &sig_path) {
                    signatures.push(signature);
                }
            }
            signatures
        };
        (self.problems.len() == before).then_some(signatures)
    }

    /// The 2.x layout: `contract: {name: infer, inputs: …, outputs: …}`.
    fn single_signature(&mut self, key: &Key, map: &Map, path: &str) -> Option<Signature> {
        let mut signature = Signature {
            name: DEFAULT_SINGLE_SIGNATURE_NAME.to_string(),
            ..Signature::default()
        };
        let before = self.problems.len();
        for (k, value) in self.entries(map, path, "key") {
            let key_path = join(path, &k.text);
            match k.text.as_str() {
                "name" => {
                    if let Some(name) = self.text(value, &key_path, "the signature name") {
                        signature.name = name.value;
                    }
                }
                "inputs" => signature.inputs = self.fields(value, &key_path),
                "outputs" => signature.outputs = self.fields(value, &key_path),
                other => {
                    let message =
                        unknown_key_message(other, SINGLE_SIGNATURE_KEYS, " in the contract");
                    self.key_problem(k, &key_path, message);
                }
            }
        }
        if self.problems.len() != before {
            return None;
        }
        if signature.inputs.is_empty() && signature.outputs.is_empty() {
            self.key_problem(
                key,
                path,
                format!(
                    "signature '{}' has no inputs and no outputs",
                    signature.name
                ),
            );
            return None;
        }
        Some(signature)
    }

    fn signature(&mut self, name: &Key, node: &Node, path: &str) -> Option<Signature> {
        let mut signature = Signature {
            name: name.text.clone(),
            ..Signature::default()
        };
        let before = self.problems.len();
        match &node.value {
            Value::Map(map) => {
                for (k, value) in self.entries(map, path, "key") {
                    let key_path = join(path, &k.text);
                    match k.text.as_str() {
                        "inputs" => signature.inputs = self.fields(value, &key_path),
                        "outputs" => signature.outputs = self.fields(value, &key_path),
                        other => {
                            let context = format!(" in signature '{}'", name.text);
                            let message = unknown_key_message(other, SIGNATURE_KEYS, &context);
                            self.key_problem(k, &key_path, message);
                        }
                    }
                }
            }
            _ if node.is_null() => {}
            _ => {
                self.problem(
                    node,
                    path,
                    format!(
                        "expected a mapping with inputs and outputs, found {}",
                        node.describe()
                    ),
                );
                return None;
            }
        }
        if self.problems.len() != before {
            return None;
        }
        if signature.inputs.is_empty() && signature.outputs.is_empty() {
            self.key_problem(
                name,
                path,
                format!("signature '{}' has no inputs and no outputs", name.text),
            );
            return None;
        }
        Some(signature)
    }

    /// `inputs`, `outputs` or a nested `fields`: field name → spec, in file order.
    fn fields(&mut self, node: &Node, path: &str) -> Vec<Field> {
        let map = match &node.value {
            Value::Map(map) => map,
            Value::Seq(items) if items.is_empty() => return Vec::new(),
            _ if node.is_null() => return Vec::new(),
            _ => {
                self.problem(
                    node,
                    path,
                    format!(
                        "expected a mapping of field names to their shape, type and profile, found {}",
                        node.describe()
                    ),
                );
                return Vec::new();
            }
        };
        let mut fields = Vec::new();
        for (name, spec) in self.entries(map, path, "field") {
            let field_path = join(path, &name.text);
            if name.text.is_empty() {
                self.key_problem(name, &field_path, "the field name is empty");
                continue;
            }
            if let Some(field) = self.field(name, spec, &field_path) {
                fields.push(field);
            }
        }
        fields
    }

    fn field(&mut self, name: &Key, node: &Node, path: &str) -> Option<Field> {
        let needs = format!("field '{}' needs a type or fields", name.text);
        let map = match &node.value {
            Value::Map(map) => map,
            _ if node.is_null() => {
                self.key_problem(name, path, needs);
                return None;
            }
            _ => {
                self.problem(
                    node,
                    path,
                    format!(
                        "expected a mapping with shape, type and profile, found {}",
                        node.describe()
                    ),
                );
                return None;
            }
        };
        let before = self.problems.len();
        let mut shape = None;
        let mut profile = Profile::None;
        let mut dtype: Option<(&Key, DataType)> = None;
        let mut nested: Option<(&Key, Vec<Field>)> = None;
        let mut type_key: Option<&Key> = None;
        for (k, value) in self.entries(map, path, "key") {
            let key_path = join(path, &k.text);
            match k.text.as_str() {
                "shape" => shape = self.shape(value, &key_path),
                "type" => {
                    if let Some((fields_key, _)) = &nested {
                        self.key_problem(
                            k,
                            &key_path,
                            format!(
                                "a field has a type or fields, not both (fields at line {})",
                                fields_key.line
                            ),
                        );
                    }
                    type_key = Some(k);
                    dtype = self.dtype(value, &key_path).map(|d| (k, d));
                }
                "profile" => profile = self.profile(value, &key_path).unwrap_or(Profile::None),
                "fields" => {
                    if let Some(type_key) = type_key {
                        self.key_problem(
                            k,
                            &key_path,
                            format!(
                                "a field has a type or fields, not both (type at line {})",
                                type_key.line
                            ),
                        );
                    }
                    let sub_before = self.problems.len();
                    let sub = self.fields(value, &key_path);
                    if sub.is_empty() && self.problems.len() == sub_before {
                        self.key_problem(
                            k,
                            &key_path,
                            "fields is empty; a nested field needs at least one sub-field",
                        );
                    }
                    nested = Some((k, sub));
                }
                other => {
                    let context = format!(" in field '{}'", name.text);
                    let message = unknown_key_message(other, FIELD_KEYS, &context);
                    self.key_problem(k, &key_path, message);
                }
            }
        }
        if type_key.is_none() && nested.is_none() {
            self.key_problem(name, path, needs);
        }
        if self.problems.len() != before {
            return None;
        }
        let kind = match (dtype, nested) {
            (Some((_, dtype)), None) => FieldKind::Tensor(dtype),
            (None, Some((_, fields))) => FieldKind::Nested(fields),
            // Every other combination recorded a problem above.
            _ => return None,
        };
        Some(Field {
            name: name.text.clone(),
            shape,
            kind,
            profile,
        })
    }

    fn shape(&mut self, node: &Node, path: &str) -> Option<Shape> {
        const EXPECTED: &str = "expected \"scalar\" or a list of sizes like [-1, 1] \
                                (leave shape out for any shape)";
        match &node.value {
            Value::Scalar(s)
                if s.kind == ScalarKind::Str && s.text.eq_ignore_ascii_case("scalar") =>
            {
                Some(Shape::scalar())
            }
            Value::Seq(items) => {
                let mut sizes = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    match item.as_scalar() {
                        Some(s) => match s.kind {
                            ScalarKind::Int(size) if size == -1 || size > 0 => sizes.push(size),
                            ScalarKind::Int(size) => self.problem(
                                item,
                                &item_path,
                                format!(
                                    "dimension {size} at shape[{i}]: sizes are -1 (unknown) or positive"
                                ),
                            ),
                            ScalarKind::Str if s.text.trim().parse::<i64>().is_ok() => self.problem(
                                item,
                                &item_path,
                                format!(
                                    "dimension at shape[{i}] is the string {:?}; write sizes as numbers, without quotes",
                                    s.text
                                ),
                            ),
                            _ => self.problem(
                                item,
                                &item_path,
                                format!(
                                    "dimension at shape[{i}] is {}; sizes are integers, -1 (unknown) or positive",
                                    item.describe()
                                ),
                            ),
                        },
                        None => self.problem(
                            item,
                            &item_path,
                            format!(
                                "dimension at shape[{i}] is {}; a shape is a flat list of integers",
                                item.describe()
                            ),
                        ),
                    }
                }
                (sizes.len() == items.len()).then(|| Shape::from_sizes(&sizes))
            }
            Value::Scalar(s) if matches!(s.kind, ScalarKind::Int(_)) => {
                self.problem(
                    node,
                    path,
                    format!(
                        "{EXPECTED}, found {}; a one-dimensional shape is written [{}]",
                        node.describe(),
                        s.text
                    ),
                );
                None
            }
            _ => {
                self.problem(node, path, format!("{EXPECTED}, found {}", node.describe()));
                None
            }
        }
    }

    fn dtype(&mut self, node: &Node, path: &str) -> Option<DataType> {
        let names: Vec<&str> = DTYPE_NAMES.iter().map(|(name, _)| *name).collect();
        let text = self.name_value(node, path, "type", &names)?;
        if let Some(dtype) = parse_dtype(&text) {
            return Some(dtype);
        }
        let lower = text.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix("dt_").unwrap_or(&lower);
        let message = unknown_name_message("type", &text, bare, &names);
        self.problem(node, path, message);
        None
    }

    fn profile(&mut self, node: &Node, path: &str) -> Option<Profile> {
        let names: Vec<&str> = PROFILE_NAMES.iter().map(|(name, _)| *name).collect();
        let text = self.name_value(node, path, "profile", &names)?;
        if let Some(profile) = parse_profile(&text) {
            return Some(profile);
        }
        let message = unknown_name_message("profile", &text, &text, &names);
        self.problem(node, path, message);
        None
    }

    /// The text of a `type` or `profile` value; anything but a word is a problem.
    fn name_value(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        names: &[&str],
    ) -> Option<String> {
        match node.as_scalar() {
            Some(s) if s.kind != ScalarKind::Null => Some(s.text.clone()),
            _ => {
                self.problem(
                    node,
                    path,
                    format!(
                        "expected a {what} name, found {}; valid {what}s are {}",
                        node.describe(),
                        one_of(names)
                    ),
                );
                None
            }
        }
    }
}

fn unknown_name_message(what: &str, text: &str, compare: &str, names: &[&str]) -> String {
    let suggestions = suggest(compare, names.iter().copied());
    let hint = did_you_mean(&suggestions);
    if hint.is_empty() {
        format!(
            "unknown {what} '{text}'; valid {what}s are {}",
            one_of(names)
        )
    } else {
        format!("unknown {what} '{text}'{hint}")
    }
}

/// The 2.x layout names its one signature with a scalar `name`, or puts field maps straight
/// under `inputs`/`outputs`. A 1.x signature body is a mapping (never a scalar) whose own
/// `inputs`/`outputs` keys mark it as a signature, which keeps the two apart.
fn is_single_signature_form(map: &Map) -> bool {
    let named = map
        .get("name")
        .is_some_and(|(_, v)| v.as_scalar().is_some() && !v.is_null());
    let direct_fields = ["inputs", "outputs"].iter().any(|k| {
        map.get(k).is_some_and(|(_, v)| {
            v.as_map().is_some_and(|m| {
                !m.entries
                    .iter()
                    .any(|(k, _)| k.text == "inputs" || k.text == "outputs")
            })
        })
    });
    named || direct_fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract_names(text: &str) -> Vec<(String, usize, usize)> {
        let file = parse_serving_str(Path::new("s.yaml"), text).expect("parses");
        file.contract
            .expect("a contract")
            .into_iter()
            .map(|s| (s.name, s.inputs.len(), s.outputs.len()))
            .collect()
    }

    #[test]
    fn a_1x_signature_named_inputs_stays_a_signature() {
        assert_eq!(
            contract_names(
                "contract:\n  inputs:\n    inputs: {a: {type: float}}\n    outputs: {b: {type: float}}\n"
            ),
            [("inputs".to_string(), 1, 1)]
        );
    }

    #[test]
    fn the_2x_layout_is_recognised_by_name_or_by_direct_fields() {
        assert_eq!(
            contract_names("contract:\n  name: infer\n  outputs: {b: {type: float}}\n"),
            [("infer".to_string(), 0, 1)]
        );
        assert_eq!(
            contract_names("contract:\n  outputs: {b: {type: float}}\n"),
            [("predict".to_string(), 0, 1)]
        );
    }

    #[test]
    fn key_paths_quote_what_would_be_ambiguous() {
        assert_eq!(join("", "contract"), "contract");
        assert_eq!(join("contract", "tokenize"), "contract.tokenize");
        assert_eq!(join("contract", "a.b"), "contract.\"a.b\"");
        assert_eq!(join("metadata", ""), "metadata.\"\"");
        assert_eq!(join("x", "input_text-2"), "x.input_text-2");
    }

    #[test]
    fn lists_read_naturally() {
        assert_eq!(one_of(&["a"]), "a");
        assert_eq!(one_of(&["a", "b"]), "a or b");
        assert_eq!(one_of(&["a", "b", "c"]), "a, b or c");
    }

    #[test]
    fn too_large_files_are_refused_by_size_not_read_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("serving.yaml");
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(MAX_SERVING_YAML_BYTES + 1).expect("set_len");
        let err = parse_serving_yaml(&path).unwrap_err().to_string();
        assert!(err.contains("larger than 4 MiB"), "{err}");
    }
}
