//! The text-format counterpart of `wire.rs`: streams a protobuf text file (`saved_model.pbtxt`)
//! and writes out only the fields a (minimal) schema declares, for prost-reflect to parse.
//!
//! prost-reflect rejects fields its schema does not know and has no nesting limit, and the
//! graph in a `.pbtxt` can be large; so the file is walked once, dropping undeclared fields
//! (graph_def, collection_def, Any payloads...) as they stream by, bounding the nesting, and
//! keeping the output under a budget.

use super::wire::{MAX_DEPTH, MAX_KEPT};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use std::io::{self, BufRead, BufReader, Read};

#[derive(Debug)]
pub(crate) enum TextError {
    Io(io::Error),
    /// Not valid text format; the text says where and why.
    Malformed(String),
}

impl From<io::Error> for TextError {
    fn from(e: io::Error) -> Self {
        TextError::Io(e)
    }
}

/// Returns the text of `reader`'s message restricted to the fields `schema` declares.
pub(crate) fn prune_text<R: Read>(
    reader: R,
    schema: &MessageDescriptor,
) -> Result<String, TextError> {
    let mut walker = Walker {
        reader: BufReader::with_capacity(64 << 10, reader),
        line: 1,
        out: Vec::new(),
    };
    walker.message(Some(schema), None, 0)?;
    String::from_utf8(walker.out)
        .map_err(|_| TextError::Malformed("the file is not valid UTF-8".into()))
}

struct Walker<R> {
    reader: BufReader<R>,
    line: u64,
    out: Vec<u8>,
}

impl<R: Read> Walker<R> {
    /// Reads fields until `close` (or the end of the file for the top level). `schema` is
    /// `None` inside a field that is being dropped: its contents are checked, not kept.
    fn message(
        &mut self,
        schema: Option<&MessageDescriptor>,
        close: Option<u8>,
        depth: usize,
    ) -> Result<(), TextError> {
        if depth > MAX_DEPTH {
            return Err(self.malformed(format!("messages nested more than {MAX_DEPTH} deep")));
        }
        loop {
            self.skip_blank()?;
            let name = match self.peek()? {
                None if close.is_none() => return Ok(()),
                None => {
                    return Err(self.malformed("unexpected end of file inside a message".into()));
                }
                Some(c) if Some(c) == close => {
                    self.bump()?;
                    return Ok(());
                }
                Some(b'[') => {
                    // Extensions and expanded Any payloads: never part of what is read.
                    self.bracketed_name()?;
                    None
                }
                Some(c) if c.is_ascii_alphabetic() || c == b'_' => Some(self.identifier()?),
                Some(c) => {
                    return Err(self.malformed(format!("expected a field name, found {}", show(c))));
                }
            };
            let field = match (schema, &name) {
                (Some(schema), Some(name)) => find_field(schema, name),
                _ => None,
            };
            self.skip_blank()?;
            if self.peek()? == Some(b':') {
                self.bump()?;
                self.skip_blank()?;
            }
            if self.peek()? == Some(b'[') {
                self.bump()?;
                self.list(field.as_ref(), depth)?;
            } else {
                self.value(field.as_ref(), depth)?;
            }
            self.skip_blank()?;
            if matches!(self.peek()?, Some(b',' | b';')) {
                self.bump()?;
            }
        }
    }

    /// `[v, v, ...]`: written out as one field per element, which every parser accepts.
    fn list(&mut self, field: Option<&FieldDescriptor>, depth: usize) -> Result<(), TextError> {
        loop {
            self.skip_blank()?;
            if self.peek()? == Some(b']') {
                self.bump()?;
                return Ok(());
            }
            self.value(field, depth)?;
            self.skip_blank()?;
            match self.peek()? {
                Some(b',') => {
                    self.bump()?;
                }
                Some(b']') => {}
                Some(c) => {
                    return Err(self.malformed(format!("expected ',' or ']', found {}", show(c))));
                }
                None => return Err(self.malformed("unexpected end of file inside a list".into())),
            }
        }
    }

    fn value(&mut self, field: Option<&FieldDescriptor>, depth: usize) -> Result<(), TextError> {
        match self.peek()? {
            Some(open @ (b'{' | b'<')) => {
                self.bump()?;
                let close = if open == b'{' { b'}' } else { b'>' };
                match field.map(|f| (f, f.kind())) {
                    Some((field, Kind::Message(inner))) => {
                        self.emit(field.name().as_bytes())?;
                        self.emit(b" {\n")?;
                        self.message(Some(&inner), Some(close), depth + 1)?;
                        self.emit(b"}\n")
                    }
                    Some((field, _)) => Err(self.malformed(format!(
                        "field '{}' takes a single value, not a message",
                        field.name()
                    ))),
                    None => self.message(None, Some(close), depth + 1),
                }
            }
            Some(_) => {
                if let Some(field) = field {
                    if matches!(field.kind(), Kind::Message(_)) {
                        return Err(self.malformed(format!(
                            "field '{}' is a message and needs '{{'",
                            field.name()
                        )));
                    }
                    self.emit(field.name().as_bytes())?;
                    self.emit(b": ")?;
                }
                self.scalar(field.is_some())?;
                if field.is_some() {
                    self.emit(b"\n")?;
                }
                Ok(())
            }
            None => Err(self.malformed("unexpected end of file where a value was expected".into())),
        }
    }

    /// A number, an identifier (enum value, true, inf...) or adjacent quoted strings.
    fn scalar(&mut self, keep: bool) -> Result<(), TextError> {
        match self.peek()? {
            Some(b'"' | b'\'') => {
                while let Some(quote @ (b'"' | b'\'')) = self.peek()? {
                    self.quoted(quote, keep)?;
                    if keep {
                        self.emit(b" ")?;
                    }
                    self.skip_blank()?;
                }
                Ok(())
            }
            Some(b'-') => {
                self.bump()?;
                if keep {
                    self.emit(b"-")?;
                }
                self.skip_blank()?;
                self.word(keep)
            }
            _ => self.word(keep),
        }
    }

    fn word(&mut self, keep: bool) -> Result<(), TextError> {
        let mut length = 0;
        while let Some(c) = self.peek()? {
            if !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'+' | b'-')) {
                break;
            }
            self.bump()?;
            if keep {
                self.emit(&[c])?;
            }
            length += 1;
        }
        if length == 0 {
            let found = self.peek()?.map_or("the end of the file".to_string(), show);
            return Err(self.malformed(format!("expected a value, found {found}")));
        }
        Ok(())
    }

    fn quoted(&mut self, quote: u8, keep: bool) -> Result<(), TextError> {
        self.bump()?;
        if keep {
            self.emit(&[quote])?;
        }
        loop {
            let Some(c) = self.bump()? else {
                return Err(self.malformed("unexpected end of file inside a string".into()));
            };
            if c == b'\n' {
                return Err(self.malformed("a string runs past the end of its line".into()));
            }
            if keep {
                self.emit(&[c])?;
            }
            if c == quote {
                return Ok(());
            }
            if c == b'\\' {
                let Some(escaped) = self.bump()? else {
                    return Err(self.malformed("unexpected end of file inside a string".into()));
                };
                if keep {
                    self.emit(&[escaped])?;
                }
            }
        }
    }

    fn identifier(&mut self) -> Result<String, TextError> {
        let mut name = String::new();
        while let Some(c) = self.peek()? {
            if !(c.is_ascii_alphanumeric() || c == b'_') {
                break;
            }
            if name.len() >= 1024 {
                return Err(self.malformed("a field name is longer than 1024 characters".into()));
            }
            self.bump()?;
            name.push(char::from(c));
        }
        Ok(name)
    }

    fn bracketed_name(&mut self) -> Result<(), TextError> {
        self.bump()?;
        for _ in 0..4096 {
            match self.bump()? {
                Some(b']') => return Ok(()),
                Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/') => {}
                Some(c) if c.is_ascii_whitespace() => {
                    if c == b'\n' {
                        self.line += 1;
                    }
                }
                Some(c) => {
                    return Err(self.malformed(format!(
                        "unexpected {} in an extension or type name",
                        show(c)
                    )));
                }
                None => return Err(self.malformed("unexpected end of file in a '[' name".into())),
            }
        }
        Err(self.malformed("a '[' name is longer than 4096 characters".into()))
    }

    fn skip_blank(&mut self) -> Result<(), TextError> {
        while let Some(c) = self.peek()? {
            if c == b'#' {
                while let Some(c) = self.bump()? {
                    if c == b'\n' {
                        self.line += 1;
                        break;
                    }
                }
            } else if c.is_ascii_whitespace() {
                self.bump()?;
                if c == b'\n' {
                    self.line += 1;
                }
            } else {
                break;
            }
        }
        Ok(())
    }

    fn peek(&mut self) -> Result<Option<u8>, TextError> {
        Ok(self.reader.fill_buf()?.first().copied())
    }

    fn bump(&mut self) -> Result<Option<u8>, TextError> {
        let c = self.peek()?;
        if c.is_some() {
            self.reader.consume(1);
        }
        Ok(c)
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), TextError> {
        if self.out.len() + bytes.len() > MAX_KEPT {
            return Err(self.malformed(format!(
                "more than {} MiB of metadata to read; this is not a model file of the \
                 expected kind",
                MAX_KEPT >> 20
            )));
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn malformed(&self, reason: String) -> TextError {
        TextError::Malformed(format!("line {}: {reason}", self.line))
    }
}

/// Groups (proto2) would also answer to their type's name; no schema read here has one.
fn find_field(schema: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    schema.get_field_by_name(name).filter(|f| !f.is_group())
}

fn show(c: u8) -> String {
    if c.is_ascii_graphic() {
        format!("'{}'", char::from(c))
    } else {
        format!("byte 0x{c:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prune(text: &str) -> Result<String, TextError> {
        prune_text(
            text.as_bytes(),
            &super::super::proto::message("tensorflow.SavedModel"),
        )
    }

    #[test]
    fn drops_undeclared_fields_whatever_their_shape() {
        let text = r#"
            saved_model_schema_version: 1
            meta_graphs {
              meta_info_def {
                stripped_op_list { op { name: "Add" attr < name: "T" > } }
                any_info { [type.googleapis.com/foo.Bar] { x: 1 } }
                tags: ["serve", 'gpu']
                tensorflow_version: "1." "15"  # concatenated
              }
              graph_def { node { name: "x" attr { key: "value" value { f: -1.5e+3 list { i: [1, 2] } } } } }
              collection_def: < key: "c" value: < bytes_list < value: "\"}\\" > > >
            }
        "#;
        let kept = prune(text).unwrap();
        assert!(!kept.contains("graph_def"), "{kept}");
        assert!(!kept.contains("stripped_op_list"), "{kept}");
        assert!(kept.contains("tags: \"serve\""), "{kept}");
        assert!(kept.contains("tags: 'gpu'"), "{kept}");
        assert!(kept.contains("tensorflow_version: \"1.\" \"15\""), "{kept}");
    }

    #[test]
    fn unterminated_and_deep_input_are_errors() {
        assert!(prune("meta_graphs { meta_info_def { tags: \"x").is_err());
        assert!(prune("meta_graphs { ").is_err());
        let deep = "graph_def { ".repeat(10_000);
        assert!(matches!(prune(&deep), Err(TextError::Malformed(m)) if m.contains("nested")));
        assert!(prune("meta_graphs: 5").is_err());
        assert!(prune("saved_model_schema_version { }").is_err());
    }
}
