//! A walk over Python pickle opcodes that never executes anything: it only looks at the
//! strings, integers and global names a pickle spells out, to find the names a model file
//! reveals (scikit-learn's `feature_names_in_`, the class of a TorchScript module).
//!
//! Best effort by design: at an unknown opcode or a cut-off argument the walk just stops.
//! `STOP` does not end it, because joblib writes nested pickles (and raw array bytes) inside
//! one stream. The number of opcodes looked at is capped.

/// What the walk reports; opcodes that carry nothing of interest are `Other`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    Str(&'a [u8]),
    Int(i64),
    /// `GLOBAL module name`, or `STACK_GLOBAL` after two strings.
    Global(String, String),
    EmptyList,
    /// APPEND or APPENDS: a list is complete.
    Appended,
    /// MARK, memo PUT/GET/MEMOIZE and FRAME: bookkeeping, transparent to a value.
    Bookkeeping,
    Other,
}

/// Calls `visit` for each opcode until it returns false, the bytes end, an opcode is unknown,
/// or `limit` opcodes were seen.
pub(crate) fn walk<'a>(bytes: &'a [u8], limit: usize, mut visit: impl FnMut(Token<'a>) -> bool) {
    let mut pos = 0usize;
    let mut strings: [Option<&'a [u8]>; 2] = [None, None];
    for _ in 0..limit {
        let Some(&op) = bytes.get(pos) else { return };
        pos += 1;
        let take = |pos: &mut usize, n: usize| -> Option<&'a [u8]> {
            let end = pos.checked_add(n)?;
            let slice = bytes.get(*pos..end)?;
            *pos = end;
            Some(slice)
        };
        let le = |s: &[u8]| {
            s.iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };
        let line = |pos: &mut usize| -> Option<&'a [u8]> {
            let rest = bytes.get(*pos..)?;
            let end = rest.iter().take(4096).position(|&b| b == b'\n')?;
            *pos += end + 1;
            Some(&rest[..end])
        };
        let token = match op {
            // Strings with a 1-, 4- or 8-byte length.
            0x8c | b'U' | b'C' => {
                let Some(n) = take(&mut pos, 1) else { return };
                let Some(s) = take(&mut pos, n[0] as usize) else {
                    return;
                };
                Token::Str(s)
            }
            b'X' | b'T' | b'B' => {
                let Some(n) = take(&mut pos, 4) else { return };
                let Some(s) = take(&mut pos, le(n) as usize) else {
                    return;
                };
                Token::Str(s)
            }
            0x8d | 0x8e | 0x96 => {
                let Some(n) = take(&mut pos, 8) else { return };
                let Ok(n) = usize::try_from(le(n)) else {
                    return;
                };
                let Some(s) = take(&mut pos, n) else { return };
                Token::Str(s)
            }
            b'K' => match take(&mut pos, 1) {
                Some(b) => Token::Int(i64::from(b[0])),
                None => return,
            },
            b'M' => match take(&mut pos, 2) {
                Some(b) => Token::Int(le(b) as i64),
                None => return,
            },
            b'J' => match take(&mut pos, 4) {
                Some(b) => Token::Int(i64::from(le(b) as u32 as i32)),
                None => return,
            },
            // LONG1 / LONG4: little-endian two's complement of any length.
            0x8a | 0x8b => {
                let width = if op == 0x8a { 1 } else { 4 };
                let Some(n) = take(&mut pos, width) else {
                    return;
                };
                let Some(b) = take(&mut pos, le(n) as usize) else {
                    return;
                };
                if b.len() <= 8 && !b.is_empty() {
                    let shift = 64 - 8 * b.len() as u32;
                    Token::Int(((le(b) << shift) as i64) >> shift)
                } else {
                    Token::Other
                }
            }
            b'c' | b'i' => {
                let (Some(module), Some(name)) = (line(&mut pos), line(&mut pos)) else {
                    return;
                };
                Token::Global(
                    String::from_utf8_lossy(module).into_owned(),
                    String::from_utf8_lossy(name).into_owned(),
                )
            }
            0x93 => match strings {
                [Some(module), Some(name)] => Token::Global(
                    String::from_utf8_lossy(module).into_owned(),
                    String::from_utf8_lossy(name).into_owned(),
                ),
                _ => Token::Other,
            },
            // Text-line arguments: INT, LONG, FLOAT, STRING, UNICODE, PERSID, PUT, GET.
            b'I' | b'L' | b'F' | b'S' | b'V' | b'P' => {
                let Some(text) = line(&mut pos) else { return };
                match op {
                    b'I' | b'L' => std::str::from_utf8(text)
                        .ok()
                        .and_then(|t| t.trim_end_matches('L').parse().ok())
                        .map_or(Token::Other, Token::Int),
                    b'S' | b'V' => Token::Str(text),
                    _ => Token::Other,
                }
            }
            b'p' | b'g' => {
                if line(&mut pos).is_none() {
                    return;
                }
                Token::Bookkeeping
            }
            b'q' | b'h' => {
                if take(&mut pos, 1).is_none() {
                    return;
                }
                Token::Bookkeeping
            }
            b'r' | b'j' => {
                if take(&mut pos, 4).is_none() {
                    return;
                }
                Token::Bookkeeping
            }
            0x95 => {
                if take(&mut pos, 8).is_none() {
                    return;
                }
                Token::Bookkeeping
            }
            b'(' | 0x94 => Token::Bookkeeping,
            b']' => Token::EmptyList,
            b'a' | b'e' => Token::Appended,
            0x80 | 0x82 => {
                if take(&mut pos, 1).is_none() {
                    return;
                }
                Token::Other
            }
            0x83 => {
                if take(&mut pos, 2).is_none() {
                    return;
                }
                Token::Other
            }
            0x84 => {
                if take(&mut pos, 4).is_none() {
                    return;
                }
                Token::Other
            }
            b'G' => {
                if take(&mut pos, 8).is_none() {
                    return;
                }
                Token::Other
            }
            // No argument: STOP, POP, POP_MARK, DUP, NONE, TRUE/FALSE, empty containers,
            // BUILD, DICT, LIST, TUPLEs, SETITEM(S), REDUCE, NEWOBJ(_EX), ADDITEMS, FROZENSET,
            // OBJ, BINPERSID, buffers.
            b'.' | b'0' | b'1' | b'2' | b'N' | 0x88 | 0x89 | b'}' | b')' | 0x8f | b'b' | b'd'
            | b'l' | b't' | 0x85 | 0x86 | 0x87 | b's' | b'u' | b'R' | 0x81 | 0x92 | 0x90 | 0x91
            | b'o' | b'Q' | 0x97 | 0x98 => Token::Other,
            _ => return,
        };
        match token {
            Token::Str(s) => strings = [strings[1], Some(s)],
            Token::Bookkeeping => {}
            _ => strings = [None, None],
        }
        if !visit(token) {
            return;
        }
    }
}

/// The first global a pickle names (for `data.pkl` of a TorchScript archive: the root
/// module's class, `__torch__.Foo`).
pub(crate) fn first_global(bytes: &[u8]) -> Option<(String, String)> {
    let mut found = None;
    walk(bytes, 10_000, |token| match token {
        Token::Global(module, name) => {
            found = Some((module, name));
            false
        }
        _ => true,
    });
    found
}

/// The top-level packages of the globals a pickle names, in order of first appearance.
pub(crate) fn packages(bytes: &[u8], limit: usize) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    walk(bytes, limit, |token| {
        if let Token::Global(module, _) = token {
            let top = module.split('.').next().unwrap_or_default().to_string();
            if !top.is_empty() && !found.contains(&top) && found.len() < 64 {
                found.push(top);
            }
        }
        true
    });
    found
}

/// What a scikit-learn estimator's pickle says about its input: the column names it was
/// fitted with (`feature_names_in_`) and their number (`n_features_in_`); the first of each.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SklearnInput {
    pub feature_names: Vec<String>,
    pub n_features: Option<i64>,
}

pub(crate) fn sklearn_input(bytes: &[u8], limit: usize) -> SklearnInput {
    const MAX_NAMES: usize = 100_000;
    const PATIENCE: usize = 400;
    enum State {
        Looking,
        /// After `n_features_in_`: the next token should be its value.
        Count,
        /// After `feature_names_in_`: the array's object list is a few tokens ahead.
        Names(usize),
        InList(Vec<String>),
    }
    let mut out = SklearnInput::default();
    let mut state = State::Looking;
    walk(bytes, limit, |token| {
        state = match (std::mem::replace(&mut state, State::Looking), token) {
            (State::Looking, Token::Str(b"n_features_in_")) if out.n_features.is_none() => {
                State::Count
            }
            (State::Looking, Token::Str(b"feature_names_in_")) if out.feature_names.is_empty() => {
                State::Names(0)
            }
            (State::Count, Token::Int(n)) => {
                out.n_features = Some(n);
                State::Looking
            }
            (State::Count, Token::Bookkeeping) => State::Count,
            (State::Names(_), Token::EmptyList) => State::InList(Vec::new()),
            (State::Names(seen), _) if seen < PATIENCE => State::Names(seen + 1),
            (State::InList(mut names), Token::Str(s)) if names.len() < MAX_NAMES => {
                names.push(String::from_utf8_lossy(s).chars().take(1024).collect());
                State::InList(names)
            }
            (State::InList(names), Token::Bookkeeping) => State::InList(names),
            (State::InList(names), Token::Appended) => {
                out.feature_names = names;
                State::Looking
            }
            _ => State::Looking,
        };
        out.n_features.is_none() || out.feature_names.is_empty()
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pickle.dumps({"n_features_in_": 2, "feature_names_in_": ["a", "b"]}, protocol=4),
    /// with the list as a plain list rather than an array.
    #[test]
    fn finds_feature_names_and_count() {
        let bytes = b"\x80\x04\x95\x3b\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x0en_features_in_\x94K\x02\x8c\x11feature_names_in_\x94]\x94(\x8c\x01a\x94\x8c\x01b\x94eu.";
        let got = sklearn_input(bytes, 1000);
        assert_eq!(got.n_features, Some(2));
        assert_eq!(got.feature_names, vec!["a", "b"]);
    }

    #[test]
    fn globals_and_garbage() {
        let bytes = b"\x80\x02c__torch__\nFoo\nq\x00)\x81.";
        assert_eq!(
            first_global(bytes),
            Some(("__torch__".into(), "Foo".into()))
        );
        let stack = b"\x80\x04\x8c\x0esklearn.linear\x94\x8c\x01L\x94\x93\x94.";
        assert_eq!(packages(stack, 100), vec!["sklearn"]);
        // Cut-off arguments and unknown opcodes end the walk quietly.
        assert_eq!(first_global(b"c__torch__"), None);
        assert_eq!(first_global(b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff"), None);
        assert_eq!(first_global(b"\xff\xfe"), None);
    }
}
