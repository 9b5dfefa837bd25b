//! A small YAML node tree that remembers where every key and value was written.
//!
//! yaml-rust2's own `Yaml` tree drops positions, its `load` recurses once per nesting level
//! (a hostile file of nested `[` overflows the stack before a receiver can object) and it
//! silently keeps the last of two equal keys. So the parser's events are pulled one at a time
//! here and assembled with an explicit stack, which bounds depth and size and records
//! duplicate keys for the caller to report with its own words ("duplicate field").

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deeper than any real serving.yaml (a nested field costs two levels) and shallow enough
/// that code walking the tree recursively cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;
/// Aliases let a few lines expand into billions of nodes; no serving.yaml comes near this.
pub const MAX_NODES: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Map),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The text as written (after unquoting), kept so that `1.10` stays `1.10` when a
    /// number is used as a string.
    pub text: String,
    pub kind: ScalarKind,
}

/// What a scalar resolves to under the YAML 1.2 core schema; a quoted scalar is always `Str`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalarKind {
    Str,
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map {
    /// In file order; for a repeated key only the first is kept here.
    pub entries: Vec<(Key, Node)>,
    pub duplicates: Vec<Duplicate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub text: String,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The repeated occurrence.
    pub key: Key,
    pub first_line: usize,
    pub first_col: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Node {
    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(map) => Some(map),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(scalar) => Some(scalar),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(
            &self.value,
            Value::Scalar(Scalar {
                kind: ScalarKind::Null,
                ..
            })
        )
    }

    /// For messages: "a list", "a mapping", "the number 1.5", "the string \"1\"".
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
            Value::Scalar(s) => match s.kind {
                ScalarKind::Null => "nothing".into(),
                ScalarKind::Bool(_) => format!("the boolean {}", s.text),
                ScalarKind::Int(_) => format!("the integer {}", s.text),
                ScalarKind::Float(_) => format!("the number {}", s.text),
                ScalarKind::Str => format!("the string {:?}", s.text),
            },
        }
    }
}

impl Map {
    pub fn get(&self, key: &str) -> Option<(&Key, &Node)> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(k, v)| (k, v))
    }
}

/// Parses one YAML document. `Ok(None)` when there is no content at all (empty file,
/// only comments, or a lone `---`).
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlError {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            // The scanner reads flow collections ahead of the events, so "[[[[…" can hit
            // its own limit before the depth check here sees the nesting.
            message: if e.info() == "recursion limit exceeded" {
                format!("nested deeper than {MAX_DEPTH} levels; a serving.yaml never needs that")
            } else {
                e.info().to_string()
            },
        })?;
        let end = event == Event::StreamEnd;
        builder.on_event(event, mark);
        if let Some(error) = builder.error.take() {
            return Err(error);
        }
        if end {
            break;
        }
    }
    Ok(builder.root.filter(|root| !root.is_null()))
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Anchored>,
    nodes: usize,
    documents: usize,
    error: Option<YamlError>,
}

struct Anchored {
    node: Node,
    size: usize,
    height: usize,
}

struct Frame {
    line: usize,
    col: usize,
    anchor: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map(MapFrame),
}

#[derive(Default)]
struct MapFrame {
    map: Map,
    /// Where each explicit key was first seen, for duplicate detection in O(1).
    seen: HashMap<String, (usize, usize)>,
    pending: Option<PendingKey>,
    /// `<<` merge sources, with the entry index they were written at.
    merges: Vec<(usize, Node)>,
}

enum PendingKey {
    Key(Key),
    Duplicate(Duplicate),
    Merge,
}

fn position(mark: Marker) -> (usize, usize) {
    // yaml-rust2 markers count lines from 1 and columns from 0.
    (mark.line(), mark.col() + 1)
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let (line, col) = position(mark);
        if let Err(message) = self.handle(event, line, col) {
            self.error = Some(YamlError { line, col, message });
        }
    }
}

impl Builder {
    fn handle(&mut self, event: Event, line: usize, col: usize) -> Result<(), String> {
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(
                        "a second YAML document starts here; serving.yaml holds one document"
                            .into(),
                    );
                }
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                let kind = resolve_scalar(&text, style, tag.as_ref())?;
                self.count(1)?;
                let node = Node {
                    value: Value::Scalar(Scalar { text, kind }),
                    line,
                    col,
                };
                self.register(anchor, &node)?;
                self.complete(node, style == TScalarStyle::Plain)
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err(
                        "this alias refers to an anchor that is not finished yet (a node cannot contain itself)"
                            .into(),
                    );
                };
                if self.stack.len() + anchored.height > MAX_DEPTH {
                    return Err(format!(
                        "this alias nests the document deeper than {MAX_DEPTH} levels"
                    ));
                }
                let size = anchored.size;
                let mut node = anchored.node.clone();
                self.count(size)?;
                // Point at the alias for the node itself; what is inside keeps the positions
                // where it was written, which is where a fix would go.
                node.line = line;
                node.col = col;
                self.complete(node, false)
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_ref(), "seq")?;
                self.open(line, col, anchor, FrameKind::Seq(Vec::new()))
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_ref(), "map")?;
                self.open(line, col, anchor, FrameKind::Map(MapFrame::default()))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err("unbalanced end of a collection".into());
                };
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map(map) => match finish_map(map) {
                        Ok(map) => Value::Map(map),
                        Err(error) => {
                            self.error = Some(error);
                            return Ok(());
                        }
                    },
                };
                let node = Node {
                    value,
                    line: frame.line,
                    col: frame.col,
                };
                self.register(frame.anchor, &node)?;
                self.complete(node, false)
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => Ok(()),
        }
    }

    fn count(&mut self, n: usize) -> Result<(), String> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(format!(
                "the document has more than {MAX_NODES} values (after expanding aliases); this is not a serving.yaml"
            ));
        }
        Ok(())
    }

    fn open(
        &mut self,
        line: usize,
        col: usize,
        anchor: usize,
        kind: FrameKind,
    ) -> Result<(), String> {
        if let Some(Frame {
            kind: FrameKind::Map(MapFrame { pending: None, .. }),
            ..
        }) = self.stack.last()
        {
            return Err("a list or mapping cannot be a mapping key; keys are plain strings".into());
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!(
                "nested deeper than {MAX_DEPTH} levels; a serving.yaml never needs that"
            ));
        }
        self.count(1)?;
        self.stack.push(Frame {
            line,
            col,
            anchor,
            kind,
        });
        Ok(())
    }

    fn register(&mut self, anchor: usize, node: &Node) -> Result<(), String> {
        if anchor == 0 {
            return Ok(());
        }
        self.anchors.insert(
            anchor,
            Anchored {
                node: node.clone(),
                size: size_of(node),
                height: height_of(node),
            },
        );
        Ok(())
    }

    /// Places a finished node into its parent (or as the root). `plain` tells whether a
    /// scalar key was written unquoted, which is what makes `<<` a merge key.
    fn complete(&mut self, node: Node, plain: bool) -> Result<(), String> {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map(map) => match map.pending.take() {
                None => {
                    let Value::Scalar(scalar) = node.value else {
                        return Err(
                            "a list or mapping cannot be a mapping key; keys are plain strings"
                                .into(),
                        );
                    };
                    let key = Key {
                        text: scalar.text,
                        line: node.line,
                        col: node.col,
                    };
                    map.pending = Some(if plain && key.text == "<<" {
                        PendingKey::Merge
                    } else if let Some(&(first_line, first_col)) = map.seen.get(&key.text) {
                        PendingKey::Duplicate(Duplicate {
                            key,
                            first_line,
                            first_col,
                        })
                    } else {
                        map.seen.insert(key.text.clone(), (key.line, key.col));
                        PendingKey::Key(key)
                    });
                }
                Some(PendingKey::Key(key)) => {
                    let mut node = node;
                    // An empty value is reported by yaml-rust2 where the next token starts,
                    // often the following line; its key is where a reader looks for it.
                    if is_empty_scalar(&node) {
                        node.line = key.line;
                        node.col = key.col;
                    }
                    map.map.entries.push((key, node))
                }
                Some(PendingKey::Duplicate(duplicate)) => map.map.duplicates.push(duplicate),
                Some(PendingKey::Merge) => {
                    let at = map.map.entries.len();
                    map.merges.push((at, node));
                }
            },
        }
        Ok(())
    }
}

fn is_empty_scalar(node: &Node) -> bool {
    matches!(&node.value, Value::Scalar(s) if s.kind == ScalarKind::Null && s.text.is_empty())
}

/// Applies `<<` merge keys: explicit keys win, then earlier merge sources over later ones;
/// merged entries take the place of the `<<` line so file order still reads naturally.
fn finish_map(frame: MapFrame) -> Result<Map, YamlError> {
    if frame.merges.is_empty() {
        return Ok(frame.map);
    }
    let mut seen: std::collections::HashSet<String> = frame.seen.into_keys().collect();
    let mut merged_at: Vec<(usize, Vec<(Key, Node)>)> = Vec::new();
    for (at, source) in frame.merges {
        let sources: Vec<&Node> = match &source.value {
            Value::Map(_) => vec![&source],
            Value::Seq(items) => items.iter().collect(),
            Value::Scalar(_) => return Err(bad_merge(&source)),
        };
        let mut taken = Vec::new();
        for item in sources {
            let Value::Map(map) = &item.value else {
                return Err(bad_merge(item));
            };
            for (key, value) in &map.entries {
                if seen.insert(key.text.clone()) {
                    taken.push((key.clone(), value.clone()));
                }
            }
        }
        merged_at.push((at, taken));
    }
    let mut entries = Vec::new();
    let mut merged = merged_at.into_iter().peekable();
    for (index, entry) in frame.map.entries.into_iter().enumerate() {
        while let Some((_, taken)) = merged.next_if(|(at, _)| *at == index) {
            entries.extend(taken);
        }
        entries.push(entry);
    }
    for (_, taken) in merged {
        entries.extend(taken);
    }
    Ok(Map {
        entries,
        duplicates: frame.map.duplicates,
    })
}

fn bad_merge(source: &Node) -> YamlError {
    YamlError {
        line: source.line,
        col: source.col,
        message: format!(
            "a merge key (<<) takes a mapping or a list of mappings, not {}",
            source.describe()
        ),
    }
}

// Both walks recurse, which is fine: the builder never lets a tree grow deeper than MAX_DEPTH.
fn size_of(node: &Node) -> usize {
    match &node.value {
        Value::Scalar(_) => 1,
        Value::Seq(items) => items.iter().map(size_of).fold(1, usize::saturating_add),
        Value::Map(map) => map
            .entries
            .iter()
            .map(|(_, v)| size_of(v).saturating_add(1))
            .fold(1, usize::saturating_add),
    }
}

fn height_of(node: &Node) -> usize {
    match &node.value {
        Value::Scalar(_) => 0,
        Value::Seq(items) => 1 + items.iter().map(height_of).max().unwrap_or(0),
        Value::Map(map) => {
            1 + map
                .entries
                .iter()
                .map(|(_, v)| height_of(v))
                .max()
                .unwrap_or(0)
        }
    }
}

const CORE_TAG: &str = "tag:yaml.org,2002:";

fn tag_text(tag: &Tag) -> String {
    if tag.handle == CORE_TAG {
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

fn check_collection_tag(tag: Option<&Tag>, expected: &str) -> Result<(), String> {
    match tag {
        None => Ok(()),
        Some(tag) if tag.handle == CORE_TAG && tag.suffix == expected => Ok(()),
        Some(tag) => Err(format!("unsupported tag '{}'", tag_text(tag))),
    }
}

fn resolve_scalar(
    text: &str,
    style: TScalarStyle,
    tag: Option<&Tag>,
) -> Result<ScalarKind, String> {
    let Some(tag) = tag else {
        return Ok(if style == TScalarStyle::Plain {
            resolve_plain(text)
        } else {
            ScalarKind::Str
        });
    };
    if tag.handle != CORE_TAG {
        return Err(format!("unsupported tag '{}'", tag_text(tag)));
    }
    let resolved = resolve_plain(text);
    let ok = match tag.suffix.as_str() {
        "str" => return Ok(ScalarKind::Str),
        "int" => matches!(resolved, ScalarKind::Int(_)),
        "float" => {
            if let ScalarKind::Int(i) = resolved {
                return Ok(ScalarKind::Float(i as f64));
            }
            matches!(resolved, ScalarKind::Float(_))
        }
        "bool" => matches!(resolved, ScalarKind::Bool(_)),
        "null" => matches!(resolved, ScalarKind::Null),
        _ => return Err(format!("unsupported tag '{}'", tag_text(tag))),
    };
    if ok {
        Ok(resolved)
    } else {
        Err(format!("'{text}' is not a valid {}", tag_text(tag)))
    }
}

/// The YAML 1.2 core schema, as yaml-rust2 and most YAML libraries apply it.
fn resolve_plain(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" => return ScalarKind::Bool(true),
        "false" | "False" | "FALSE" => return ScalarKind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return ScalarKind::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return ScalarKind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float(f64::NAN),
        _ => {}
    }
    // from_str_radix would also take a sign ("0x-1"), which YAML does not.
    if let Some(hex) = text.strip_prefix("0x")
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return ScalarKind::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && oct.bytes().all(|b| (b'0'..=b'7').contains(&b))
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return ScalarKind::Int(i);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(i) => ScalarKind::Int(i),
            // Too large for i64: still a number, not a string.
            Err(_) => ScalarKind::Float(text.parse::<f64>().unwrap_or(f64::INFINITY)),
        };
    }
    // Rust's float parser also takes "inf", "nan" and "infinity", which YAML reads as
    // strings; restricting the alphabet first keeps those out.
    let float_chars = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if float_chars
        && text.bytes().any(|b| b.is_ascii_digit())
        && let Ok(f) = text.parse::<f64>()
    {
        return ScalarKind::Float(f);
    }
    ScalarKind::Str
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text).expect("parses").expect("has content")
    }

    fn map(node: &Node) -> &Map {
        node.as_map().expect("a mapping")
    }

    #[test]
    fn positions_are_one_based_for_keys_and_values() {
        let node = root("a: 1\nbb:\n  c: \"x\"\n");
        let m = map(&node);
        let (key, value) = m.get("a").unwrap();
        assert_eq!((key.line, key.col), (1, 1));
        assert_eq!((value.line, value.col), (1, 4));
        let (_, inner) = m.get("bb").unwrap();
        let (key, value) = map(inner).get("c").unwrap();
        assert_eq!((key.line, key.col), (3, 3));
        assert_eq!((value.line, value.col), (3, 6));
    }

    #[test]
    fn empty_values_point_at_their_key() {
        let node = root("a:\nb: 1\n");
        let (_, value) = map(&node).get("a").unwrap();
        assert!(value.is_null());
        assert_eq!((value.line, value.col), (1, 1));
    }

    #[test]
    fn keeps_mapping_order() {
        let node = root("z: 1\na: 2\nm: 3\n");
        let keys: Vec<_> = map(&node)
            .entries
            .iter()
            .map(|(k, _)| k.text.as_str())
            .collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }

    #[test]
    fn scalar_kinds_follow_style() {
        let node =
            root("a: \"1\"\nb: -1\nc: 1.5\nd: true\ne: ~\nf: text\ng: '-1'\nh: 1.10\ni: inf\n");
        let kind = |k: &str| map(&node).get(k).unwrap().1.as_scalar().unwrap().kind;
        assert_eq!(kind("a"), ScalarKind::Str);
        assert_eq!(kind("b"), ScalarKind::Int(-1));
        assert_eq!(kind("c"), ScalarKind::Float(1.5));
        assert_eq!(kind("d"), ScalarKind::Bool(true));
        assert_eq!(kind("e"), ScalarKind::Null);
        assert_eq!(kind("f"), ScalarKind::Str);
        assert_eq!(kind("g"), ScalarKind::Str);
        assert_eq!(kind("i"), ScalarKind::Str);
        assert_eq!(resolve_plain("0x1F"), ScalarKind::Int(31));
        assert_eq!(resolve_plain("0o17"), ScalarKind::Int(15));
        assert_eq!(resolve_plain("0x-1"), ScalarKind::Str);
        assert_eq!(resolve_plain("1e3"), ScalarKind::Float(1000.0));
        assert_eq!(resolve_plain("1-2"), ScalarKind::Str);
        assert_eq!(resolve_plain("-.inf"), ScalarKind::Float(f64::NEG_INFINITY));
        let h = map(&node).get("h").unwrap().1.as_scalar().unwrap();
        assert_eq!(h.text, "1.10");
    }

    #[test]
    fn tags() {
        let node = root("a: !!str 1\nb: !!int 2\n");
        assert_eq!(
            map(&node).get("a").unwrap().1.as_scalar().unwrap().kind,
            ScalarKind::Str
        );
        assert_eq!(
            map(&node).get("b").unwrap().1.as_scalar().unwrap().kind,
            ScalarKind::Int(2)
        );
        let err = parse("a: !!int x\n").unwrap_err();
        assert!(err.message.contains("not a valid !!int"), "{err:?}");
        let err = parse("a: !custom x\n").unwrap_err();
        assert!(err.message.contains("unsupported tag '!custom'"), "{err:?}");
    }

    #[test]
    fn duplicates_are_recorded_not_overwritten() {
        let node = root("a: 1\nb: 2\na: 3\n");
        let m = map(&node);
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.get("a").unwrap().1.as_scalar().unwrap().text, "1");
        assert_eq!(m.duplicates.len(), 1);
        let d = &m.duplicates[0];
        assert_eq!(
            (d.key.line, d.key.col, d.first_line, d.first_col),
            (3, 1, 1, 1)
        );
    }

    #[test]
    fn empty_documents() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n\n").unwrap(), None);
        assert_eq!(parse("---\n").unwrap(), None);
    }

    #[test]
    fn second_document_is_rejected() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("second YAML document"), "{err:?}");
    }

    #[test]
    fn malformed_reports_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn aliases_resolve_and_merge_keys_apply() {
        let node =
            root("base: &b {type: float, shape: [-1]}\nx: *b\ny:\n  <<: *b\n  type: int64\n");
        let m = map(&node);
        let x = map(m.get("x").unwrap().1);
        assert_eq!(x.get("type").unwrap().1.as_scalar().unwrap().text, "float");
        let y = map(m.get("y").unwrap().1);
        let keys: Vec<_> = y.entries.iter().map(|(k, _)| k.text.as_str()).collect();
        assert_eq!(keys, ["shape", "type"]);
        assert_eq!(y.get("type").unwrap().1.as_scalar().unwrap().text, "int64");
        assert!(y.duplicates.is_empty());
    }

    #[test]
    fn quoted_merge_key_is_an_ordinary_key() {
        let node = root("\"<<\": 1\n");
        assert!(map(&node).get("<<").is_some());
    }

    #[test]
    fn alias_explosion_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("more than"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflowing() {
        for text in [
            "[".repeat(100_000),
            "{a: ".repeat(100_000),
            (0..200)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect::<String>(),
            "- ".repeat(10_000),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(err.message.contains("deeper than 64 levels"), "{err:?}");
        }
        // Exactly at the limit is fine.
        let ok = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn complex_keys_are_rejected() {
        let err = parse("? [a, b]\n: 1\n").unwrap_err();
        assert!(err.message.contains("cannot be a mapping key"), "{err:?}");
    }
}
