//! Spark ML (a saved `PipelineModel`, `RFormulaModel`, tuning model or single stage): one
//! signature `default_spark`, from the stages' metadata (`metadata/part-00000`, or
//! `metadata/part-00000-<uuid>-c000.txt` since Spark 4; one JSON line each).
//!
//! Hydrosphere's rule, with one difference. Each stage class says which of its parameters name
//! input and output columns and of what type. The pipeline's inputs are the stages' input
//! columns minus the columns other stages produce, minus the training-only ones (label, weight,
//! the left-hand side of an RFormula, and whatever a stage computes from them only to make the
//! label). Its outputs are every column a stage produces, except the training-only ones:
//! a Spark transform keeps the intermediate columns in the frame it returns, so they are part
//! of the answer (Hydrosphere listed only the columns no later stage consumed).
//!
//! Columns are per row: a scalar column has shape `[]`, a vector column `[n]` (`[-1]` when the
//! size is not in the metadata). Unknown stage classes: DT_STRING with any shape, and a warning.

use super::capped::{read_file, utf8};
use super::{Detector, Folder, InferError, Inferred, clean_version, quote};
use crate::contract::{DataType, Field, Shape, Signature};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub(crate) const DETECTOR: Detector = Detector {
    framework: "spark",
    detect,
    infer: infer_file,
};

const FORMAT: &str = "Spark ML metadata";
const SIGNATURE: &str = "default_spark";
/// Pipelines inside pipelines (RFormula, tuning models) go a few levels deep, never more.
const MAX_DEPTH: usize = 16;
const MAX_STAGES: usize = 10_000;

fn detect(folder: &Folder) -> Vec<PathBuf> {
    metadata_file(&folder.dir).into_iter().collect()
}

/// The metadata file of the Spark ML object saved in `dir`, if there is one.
fn metadata_file(dir: &Path) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("metadata"))
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| {
            name == "part-00000" || (name.starts_with("part-00000-") && name.ends_with(".txt"))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| dir.join("metadata").join(name))
        .find(|path| path.is_file())
}

fn infer_file(path: &Path) -> Result<Inferred, InferError> {
    // `path` is <model>/metadata/part-00000...
    let dir = path
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| corrupt(path, "not inside a metadata folder".into()))?;
    infer_spark_dir(dir)
}

/// Infers from the Spark ML object saved in folder `dir`.
pub fn infer_spark_dir(dir: &Path) -> Result<Inferred, InferError> {
    let top_file = metadata_file(dir).ok_or_else(|| InferError::NoContract {
        path: dir.to_path_buf(),
        reason: "no metadata/part-00000 file: not a saved Spark ML model".into(),
    })?;
    let top = Meta::read(&top_file)?;
    let mut walk = Walk::default();
    walk.flatten(&top, dir, 0)?;

    let (inputs, outputs) = combine(&walk.stages, &walk.training);
    let model_type = match top.spark_version.as_deref().and_then(major_minor) {
        Some(version) => format!("spark:{version}"),
        None => {
            walk.warnings.push(format!(
                "{}: no usable sparkVersion; model-type is spark:unknown, set model-type in \
                 serving.yaml to choose the runtime",
                relative(dir, &top_file)
            ));
            "spark:unknown".into()
        }
    };
    let mut warnings = Vec::new();
    for w in walk.warnings {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    Ok(Inferred {
        signatures: vec![Signature {
            name: SIGNATURE.into(),
            inputs,
            outputs,
        }],
        model_type,
        source: format!("{FORMAT} ({})", relative(dir, &top_file)),
        warnings,
    })
}

fn major_minor(version: &str) -> Option<String> {
    let version = clean_version(version)?;
    let mut parts = version.split('.');
    let major = parts.next().filter(|p| !p.is_empty())?;
    Some(match parts.next() {
        Some(minor) => format!("{major}.{minor}"),
        None => major.to_string(),
    })
}

fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn corrupt(path: &Path, reason: String) -> InferError {
    InferError::Corrupt {
        path: path.to_path_buf(),
        format: FORMAT,
        reason,
    }
}

/// One saved object's metadata line.
struct Meta {
    file: PathBuf,
    class: String,
    spark_version: Option<String>,
    /// `defaultParamMap` overlaid with `paramMap`: what the stage actually uses.
    params: Map<String, Value>,
    /// The whole line: some classes keep facts beside the params (`numFeatures`, `numClasses`).
    line: Map<String, Value>,
}

impl Meta {
    fn read(file: &Path) -> Result<Meta, InferError> {
        let bytes = read_file(file, FORMAT)?;
        let text = utf8(&bytes, file, FORMAT)?;
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| corrupt(file, "the file is empty".into()))?;
        let value: Value = serde_json::from_str(line)
            .map_err(|e| corrupt(file, format!("not a JSON object: {e}")))?;
        let Value::Object(line) = value else {
            return Err(corrupt(file, "not a JSON object".into()));
        };
        let class = match line.get("class") {
            Some(Value::String(class)) if !class.is_empty() => class.clone(),
            _ => return Err(corrupt(file, "no \"class\"".into())),
        };
        let spark_version = line
            .get("sparkVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut params = Map::new();
        let mut set = Map::new();
        for key in ["defaultParamMap", "paramMap"] {
            match line.get(key) {
                Some(Value::Object(map)) => {
                    params.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                    set.clone_from(map);
                }
                None | Some(Value::Null) => {}
                Some(_) => return Err(corrupt(file, format!("\"{key}\" is not an object"))),
            }
        }
        prefer_multi_column(&mut params, &set);
        Ok(Meta {
            file: file.to_path_buf(),
            class,
            spark_version,
            params,
            line,
        })
    }

    /// The class name without its package.
    fn simple_class(&self) -> &str {
        self.class.rsplit('.').next().unwrap_or(&self.class)
    }

    fn package(&self) -> &str {
        self.class
            .rsplit_once('.')
            .map_or("", |(package, _)| package)
    }

    /// A column-name parameter, if set to a non-empty name.
    fn col(&self, key: &str) -> Option<&str> {
        self.params
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    fn cols(&self, key: &str) -> Vec<&str> {
        match self.params.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A size from the params or the line (`numFeatures`, `vectorSize`, `k`...); Spark writes
    /// some of them as doubles.
    fn size(&self, key: &str) -> Option<i64> {
        let value = self.params.get(key).or_else(|| self.line.get(key))?;
        let size = value.as_i64().or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0)
                .map(|f| f as i64)
        })?;
        (size > 0).then_some(size)
    }
}

/// Stages with both single- and multi-column params (StringIndexer, OneHotEncoder, Imputer,
/// Bucketizer, StopWordsRemover…) keep a default `outputCol` (`<uid>__output`) in
/// `defaultParamMap` even when they use `inputCols`/`outputCols`; Spark uses the multi-column
/// params whenever they are set, so a single-column param that was not set by the user
/// (`set`, the `paramMap`) is dropped then. A stage that sets both is invalid in Spark and is
/// left as it is.
fn prefer_multi_column(params: &mut Map<String, Value>, set: &Map<String, Value>) {
    let multi_set = |key: &str| {
        params
            .get(key)
            .and_then(Value::as_array)
            .is_some_and(|cols| !cols.is_empty())
    };
    let uses_multi = multi_set("inputCols") || multi_set("outputCols");
    // `outputCol` goes only for `outputCols`: VectorAssembler and the like read `inputCols`
    // and really write their one `outputCol`, default name included.
    let drop = [
        ("inputCol", uses_multi),
        ("outputCol", multi_set("outputCols")),
    ];
    for (single, dropped) in drop {
        if dropped && !set.contains_key(single) {
            params.remove(single);
        }
    }
}

/// The type of a column, per row.
#[derive(Clone, Copy)]
enum Col {
    Scalar(DataType),
    /// A vector of a known size, or -1.
    Vector(DataType, i64),
    /// Scalar or vector: whatever the caller's frame holds.
    Any(DataType),
}

impl Col {
    fn field(self, name: &str) -> Field {
        match self {
            Col::Scalar(dtype) => Field::tensor(name, dtype, Some(Shape::scalar())),
            Col::Vector(dtype, size) => {
                Field::tensor(name, dtype, Some(Shape::from_sizes(&[size])))
            }
            Col::Any(dtype) => Field::tensor(name, dtype, None),
        }
    }
}

use DataType::{DtDouble as DOUBLE, DtString as STRING};

/// What one leaf stage reads and writes.
struct Stage {
    inputs: Vec<Field>,
    outputs: Vec<Field>,
}

#[derive(Default)]
struct Walk {
    stages: Vec<Stage>,
    /// Columns only present when training (labels, weights).
    training: HashSet<String>,
    warnings: Vec<String>,
}

impl Walk {
    /// Adds the leaf stages of the object `meta` saved in `dir`, in pipeline order.
    fn flatten(&mut self, meta: &Meta, dir: &Path, depth: usize) -> Result<(), InferError> {
        if depth > MAX_DEPTH {
            return Err(corrupt(
                &meta.file,
                format!("pipelines nested more than {MAX_DEPTH} deep"),
            ));
        }
        match meta.simple_class() {
            "PipelineModel" | "Pipeline" => {
                for stage_dir in stage_dirs(meta, dir)? {
                    let file = metadata_file(&stage_dir).ok_or_else(|| {
                        corrupt(
                            &stage_dir,
                            "a pipeline stage folder without metadata/part-00000".into(),
                        )
                    })?;
                    let stage = Meta::read(&file)?;
                    self.flatten(&stage, &stage_dir, depth + 1)?;
                }
            }
            "CrossValidatorModel" | "TrainValidationSplitModel" => {
                let best = dir.join("bestModel");
                let file = metadata_file(&best).ok_or_else(|| {
                    corrupt(&meta.file, "its bestModel folder has no metadata".into())
                })?;
                self.flatten(&Meta::read(&file)?, &best, depth + 1)?;
            }
            "RFormulaModel" => self.rformula(meta, dir, depth)?,
            _ => self.leaf(meta),
        }
        if self.stages.len() > MAX_STAGES {
            return Err(corrupt(
                &meta.file,
                format!("more than {MAX_STAGES} pipeline stages"),
            ));
        }
        Ok(())
    }

    /// An RFormula is a pipeline of its own (saved in `pipelineModel/`) that builds the
    /// features; the label comes from the formula's left-hand side, only when training.
    fn rformula(&mut self, meta: &Meta, dir: &Path, depth: usize) -> Result<(), InferError> {
        let formula = meta.col("formula").unwrap_or_default();
        let (lhs, rhs) = formula.split_once('~').unwrap_or(("", formula));
        let lhs = lhs.trim();
        if !lhs.is_empty() {
            self.training.insert(lhs.to_string());
        }
        if let Some(label) = meta.col("labelCol") {
            self.training.insert(label.to_string());
        }
        let inner = dir.join("pipelineModel");
        if let Some(file) = metadata_file(&inner) {
            return self.flatten(&Meta::read(&file)?, &inner, depth + 1);
        }
        // No saved inner pipeline: the formula's terms are the columns it reads.
        let mut inputs = Vec::new();
        for term in rhs.split(['+', ':', '-']) {
            let term = term.trim();
            if term == "." {
                self.warnings.push(format!(
                    "RFormula {}: '.' stands for every column but the label, which the \
                     metadata does not list; write the inputs in serving.yaml",
                    quote(formula)
                ));
            } else if !term.is_empty() && term != "0" && term != "1" {
                inputs.push(Col::Any(STRING).field(term));
            }
        }
        self.warnings.push(format!(
            "RFormula {} has no pipelineModel folder: its input columns, taken from the formula, \
             are recorded as DT_STRING with any shape (they may be numeric)",
            quote(formula)
        ));
        let outputs = meta
            .col("featuresCol")
            .map(|f| vec![Col::Vector(DOUBLE, -1).field(f)])
            .unwrap_or_default();
        self.stages.push(Stage { inputs, outputs });
        Ok(())
    }

    fn leaf(&mut self, meta: &Meta) {
        let class = meta.simple_class();
        let package = meta.package();
        let stage = if package.ends_with(".ml.feature") {
            match feature(meta) {
                Some(stage) => stage,
                None => self.unknown(meta),
            }
        } else if package.ends_with(".ml.classification")
            || package.ends_with(".ml.regression")
            || package.ends_with(".ml.clustering")
        {
            self.predictor(meta)
        } else if class == "ALSModel" {
            Stage {
                inputs: [meta.col("userCol"), meta.col("itemCol")]
                    .into_iter()
                    .flatten()
                    .map(|c| Col::Scalar(DataType::DtInt32).field(c))
                    .collect(),
                outputs: out(meta, "predictionCol", Col::Scalar(DataType::DtFloat)),
            }
        } else if class == "FPGrowthModel" {
            Stage {
                inputs: out(meta, "itemsCol", Col::Vector(STRING, -1)),
                outputs: out(meta, "predictionCol", Col::Vector(STRING, -1)),
            }
        } else {
            self.unknown(meta)
        };
        self.stages.push(stage);
    }

    /// Classifiers, regressors and clustering models: features in, prediction out.
    fn predictor(&mut self, meta: &Meta) -> Stage {
        for key in ["labelCol", "weightCol", "censorCol"] {
            if let Some(col) = meta.col(key) {
                self.training.insert(col.to_string());
            }
        }
        let features = meta.size("numFeatures").unwrap_or(-1);
        let classes = meta.size("numClasses").unwrap_or(-1);
        let clustering = meta.package().ends_with(".ml.clustering");
        let prediction = if clustering {
            Col::Scalar(DataType::DtInt32)
        } else {
            Col::Scalar(DOUBLE)
        };
        let mut outputs = out(meta, "predictionCol", prediction);
        outputs.extend(out(meta, "probabilityCol", Col::Vector(DOUBLE, classes)));
        outputs.extend(out(meta, "rawPredictionCol", Col::Vector(DOUBLE, classes)));
        outputs.extend(out(meta, "varianceCol", Col::Scalar(DOUBLE)));
        outputs.extend(out(meta, "quantilesCol", Col::Vector(DOUBLE, -1)));
        outputs.extend(out(meta, "leafCol", Col::Vector(DOUBLE, -1)));
        let topics = meta.size("k").unwrap_or(-1);
        outputs.extend(out(
            meta,
            "topicDistributionCol",
            Col::Vector(DOUBLE, topics),
        ));
        if outputs.is_empty() && meta.col("featuresCol").is_none() {
            return self.unknown(meta);
        }
        // IsotonicRegression reads one element of a vector, or a plain double.
        let features_col = if meta.simple_class() == "IsotonicRegressionModel" {
            Col::Any(DOUBLE)
        } else {
            Col::Vector(DOUBLE, features)
        };
        Stage {
            inputs: out(meta, "featuresCol", features_col),
            outputs,
        }
    }

    /// A class this module does not know: its columns, found by the usual parameter names,
    /// are recorded as DT_STRING with any shape.
    fn unknown(&mut self, meta: &Meta) -> Stage {
        let any = Col::Any(STRING);
        let mut inputs = Vec::new();
        for key in ["inputCol", "featuresCol"] {
            inputs.extend(out(meta, key, any));
        }
        inputs.extend(meta.cols("inputCols").into_iter().map(|c| any.field(c)));
        let mut outputs = Vec::new();
        for key in [
            "outputCol",
            "predictionCol",
            "probabilityCol",
            "rawPredictionCol",
        ] {
            outputs.extend(out(meta, key, any));
        }
        outputs.extend(meta.cols("outputCols").into_iter().map(|c| any.field(c)));
        for key in ["labelCol", "weightCol"] {
            if let Some(col) = meta.col(key) {
                self.training.insert(col.to_string());
            }
        }
        self.warnings.push(format!(
            "stage {} is of class {}, which mlambda does not know: its columns{} are recorded \
             as DT_STRING with any shape; check them, or write the contract in serving.yaml",
            quote(
                &meta
                    .file
                    .parent()
                    .and_then(Path::parent)
                    .map_or_else(|| meta.file.display().to_string(), super::file_name)
            ),
            meta.class,
            if meta.simple_class() == "SQLTransformer" {
                " (set by its SQL statement, not by parameters)"
            } else {
                ""
            },
        ));
        Stage { inputs, outputs }
    }
}

/// The field for column parameter `key`, if it is set.
fn out(meta: &Meta, key: &str, col: Col) -> Vec<Field> {
    meta.col(key).map(|c| col.field(c)).into_iter().collect()
}

/// The stage folders of a saved pipeline, in pipeline order (`<index>_<uid>`).
fn stage_dirs(meta: &Meta, dir: &Path) -> Result<Vec<PathBuf>, InferError> {
    let stages = dir.join("stages");
    let listed = match std::fs::read_dir(&stages) {
        Ok(listed) => listed,
        Err(_) if meta.cols("stageUids").is_empty() => return Ok(Vec::new()),
        Err(source) => {
            return Err(InferError::Io {
                path: stages,
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in listed {
        let entry = entry.map_err(|source| InferError::Io {
            path: stages.clone(),
            source,
        })?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let index = name
            .split_once('_')
            .and_then(|(i, _)| i.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        found.push((index, name));
        if found.len() > MAX_STAGES {
            return Err(corrupt(
                &stages,
                format!("more than {MAX_STAGES} pipeline stages"),
            ));
        }
    }
    found.sort();
    Ok(found
        .into_iter()
        .map(|(_, name)| stages.join(name))
        .collect())
}

/// The known `pyspark.ml.feature` transformers: what their input and output columns hold.
fn feature(meta: &Meta) -> Option<Stage> {
    let vec = |size: Option<i64>| Col::Vector(DOUBLE, size.unwrap_or(-1));
    let any_vec = vec(None);
    let (input, output, many_to_one) = match meta.simple_class() {
        // Columns the pipeline machinery of RFormula uses; they name no columns.
        "VectorAttributeRewriter" | "ColumnPruner" => {
            return Some(Stage {
                inputs: Vec::new(),
                outputs: Vec::new(),
            });
        }
        "StringIndexerModel" => (Col::Scalar(STRING), Col::Scalar(DOUBLE), false),
        "IndexToString" => (Col::Scalar(DOUBLE), Col::Scalar(STRING), false),
        "OneHotEncoder" | "OneHotEncoderModel" => (Col::Scalar(DOUBLE), any_vec, false),
        "Binarizer" => (Col::Any(DOUBLE), Col::Any(DOUBLE), false),
        "Bucketizer" | "ImputerModel" => (Col::Scalar(DOUBLE), Col::Scalar(DOUBLE), false),
        "Tokenizer" | "RegexTokenizer" => (Col::Scalar(STRING), Col::Vector(STRING, -1), false),
        "StopWordsRemover" | "NGram" => (Col::Vector(STRING, -1), Col::Vector(STRING, -1), false),
        "HashingTF" => (
            Col::Vector(STRING, -1),
            vec(meta.size("numFeatures")),
            false,
        ),
        "CountVectorizerModel" => (Col::Vector(STRING, -1), any_vec, false),
        "Word2VecModel" => (Col::Vector(STRING, -1), vec(meta.size("vectorSize")), false),
        "PCAModel" => (any_vec, vec(meta.size("k")), false),
        "IDFModel"
        | "StandardScalerModel"
        | "MinMaxScalerModel"
        | "MaxAbsScalerModel"
        | "RobustScalerModel"
        | "Normalizer"
        | "ElementwiseProduct"
        | "DCT"
        | "PolynomialExpansion"
        | "ChiSqSelectorModel"
        | "UnivariateFeatureSelectorModel"
        | "VarianceThresholdSelectorModel"
        | "VectorIndexerModel"
        | "VectorSlicer"
        | "VectorSizeHint"
        | "BucketedRandomProjectionLSHModel"
        | "MinHashLSHModel" => (any_vec, any_vec, false),
        // Numbers, vectors (and for FeatureHasher strings) in, one vector out.
        "VectorAssembler" | "Interaction" => (Col::Any(DOUBLE), any_vec, true),
        "FeatureHasher" => (Col::Any(STRING), vec(meta.size("numFeatures")), true),
        _ => return None,
    };
    let mut stage = Stage {
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    let ins = meta
        .col("inputCol")
        .into_iter()
        .chain(meta.cols("inputCols"));
    stage.inputs.extend(ins.map(|c| input.field(c)));
    let outs = meta.col("outputCol").into_iter();
    let outs = outs.chain(if many_to_one {
        Vec::new()
    } else {
        meta.cols("outputCols")
    });
    stage.outputs.extend(outs.map(|c| output.field(c)));
    // Selectors and LSH models name their input `featuresCol`.
    stage.inputs.extend(out(meta, "featuresCol", input));
    Some(stage)
}

/// The pipeline's inputs and outputs, sorted by name.
fn combine(stages: &[Stage], training: &HashSet<String>) -> (Vec<Field>, Vec<Field>) {
    // Columns computed from training-only columns (an indexed label) are training-only too.
    let mut training = training.clone();
    loop {
        let before = training.len();
        for stage in stages {
            if stage.outputs.iter().any(|f| training.contains(&f.name)) {
                training.extend(stage.inputs.iter().map(|f| f.name.clone()));
                training.extend(stage.outputs.iter().map(|f| f.name.clone()));
            }
        }
        if training.len() == before {
            break;
        }
    }
    let produced: HashSet<&str> = stages
        .iter()
        .flat_map(|s| &s.outputs)
        .map(|f| f.name.as_str())
        .collect();
    let mut inputs: Vec<Field> = Vec::new();
    let mut outputs: Vec<Field> = Vec::new();
    for field in stages.iter().flat_map(|s| &s.inputs) {
        let skip = produced.contains(field.name.as_str())
            || training.contains(&field.name)
            || inputs.iter().any(|f| f.name == field.name);
        if !skip {
            inputs.push(field.clone());
        }
    }
    for field in stages.iter().flat_map(|s| &s.outputs) {
        let skip = training.contains(&field.name)
            || inputs.iter().any(|f| f.name == field.name)
            || outputs.iter().any(|f| f.name == field.name);
        if !skip {
            outputs.push(field.clone());
        }
    }
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    (inputs, outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_column_params_win_over_single_column_defaults() {
        let meta = |line: &str| {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("part-00000");
            std::fs::write(&file, line).unwrap();
            Meta::read(&file).unwrap().params
        };
        // OneHotEncoder: the default outputCol is not used.
        let params = meta(
            r#"{"class":"org.apache.spark.ml.feature.OneHotEncoderModel","paramMap":{"inputCols":["a"],"outputCols":["b"]},"defaultParamMap":{"outputCol":"OneHotEncoder_1__output"}}"#,
        );
        assert!(!params.contains_key("outputCol"));
        // VectorAssembler: inputCols and its one default outputCol, which it writes.
        let params = meta(
            r#"{"class":"org.apache.spark.ml.feature.VectorAssembler","paramMap":{"inputCols":["a","b"]},"defaultParamMap":{"outputCol":"VectorAssembler_1__output"}}"#,
        );
        assert_eq!(params["outputCol"], "VectorAssembler_1__output");
        // Single-column use: the default outputCol is the output.
        let params = meta(
            r#"{"class":"org.apache.spark.ml.feature.OneHotEncoderModel","paramMap":{"inputCol":"a"},"defaultParamMap":{"outputCol":"OneHotEncoder_1__output"}}"#,
        );
        assert_eq!(params["outputCol"], "OneHotEncoder_1__output");
    }

    #[test]
    fn model_type_versions() {
        assert_eq!(major_minor("2.4.4").as_deref(), Some("2.4"));
        assert_eq!(major_minor("4.0.0-preview1").as_deref(), Some("4.0"));
        assert_eq!(major_minor("3").as_deref(), Some("3"));
        assert_eq!(major_minor("").as_deref(), None);
    }
}
