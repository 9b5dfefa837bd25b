//! Model names: they become OCI repository path components, so they follow that grammar.

/// The longest model name, in characters. A name is a folder of the store and part of every
/// reference to its images (`host:port/prefix/name:version`), which Docker's clients cap at
/// 255 characters: this leaves room for the registry's part.
pub const MAX_MODEL_NAME: usize = 128;

/// Checks `[a-z0-9]+([._-][a-z0-9]+)*`, at most [`MAX_MODEL_NAME`] characters. The error says
/// what is wrong and suggests the normalised form.
pub fn validate_model_name(name: &str) -> Result<(), String> {
    let length = name.chars().count();
    if length > MAX_MODEL_NAME {
        let start: String = name.chars().take(40).collect();
        return Err(format!(
            "'{start}…' is not a valid model name (it has {length} characters): use at most {MAX_MODEL_NAME}"
        ));
    }
    if is_valid(name) {
        return Ok(());
    }
    let why = if name.is_empty() {
        "it is empty".to_string()
    } else if let Some(c) = name.chars().find(|c| c.is_ascii_uppercase()) {
        format!("it has the uppercase letter '{c}'")
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || is_separator(*c)))
    {
        format!("it has the character {c:?}")
    } else {
        "a '.', '_' or '-' must sit between two letters or digits".to_string()
    };
    let normalized = normalize_model_name(name);
    Err(format!(
        "'{name}' is not a valid model name ({why}): use lowercase letters and digits, \
         separated by single '.', '_' or '-', e.g. '{normalized}'"
    ))
}

/// Turns any text (typically a folder name) into a valid model name: lowercase, every other
/// character replaced by '-', runs of separators collapsed to their first, and none at either
/// end, cut to [`MAX_MODEL_NAME`]. Text with no letters or digits at all becomes "model".
pub fn normalize_model_name(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_separator: Option<char> = None;
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if let Some(sep) = pending_separator.take()
                && !out.is_empty()
            {
                out.push(sep);
            }
            out.push(c);
        } else if pending_separator.is_none() {
            pending_separator = Some(if is_separator(c) { c } else { '-' });
        }
    }
    // Only ASCII is pushed, so a byte length is a character count.
    out.truncate(MAX_MODEL_NAME);
    while out.ends_with(is_separator) {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("model");
    }
    out
}

fn is_separator(c: char) -> bool {
    matches!(c, '.' | '_' | '-')
}

fn is_valid(name: &str) -> bool {
    let mut previous_was_separator = true; // so that a leading separator fails
    for c in name.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            previous_was_separator = false;
        } else if is_separator(c) && !previous_was_separator {
            previous_was_separator = true;
        } else {
            return false;
        }
    }
    !name.is_empty() && !previous_was_separator
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in ["example_tokenizer_model", "a", "m1.v2-x_y", "0"] {
            assert_eq!(validate_model_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn invalid_names_say_why() {
        for (name, why) in [
            ("", "empty"),
            ("Model", "uppercase letter 'M'"),
            ("my model", "character ' '"),
            ("a__b", "between two"),
            ("-a", "between two"),
            ("a.", "between two"),
            ("é", "character 'é'"),
        ] {
            let err = validate_model_name(name).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
        assert!(
            validate_model_name("My Model")
                .unwrap_err()
                .contains("e.g. 'my-model'")
        );
    }

    #[test]
    fn names_fit_a_reference() {
        assert_eq!(validate_model_name(&"a".repeat(MAX_MODEL_NAME)), Ok(()));
        for length in [MAX_MODEL_NAME + 1, 251, 255, 300] {
            let err = validate_model_name(&"a".repeat(length)).unwrap_err();
            assert!(
                err.contains(&format!("it has {length} characters")) && err.contains("at most 128"),
                "{err}"
            );
        }
        let long_folder = format!("{}-x", "b".repeat(MAX_MODEL_NAME - 1));
        let normalized = normalize_model_name(&long_folder);
        assert_eq!(normalized, "b".repeat(MAX_MODEL_NAME - 1));
        assert_eq!(validate_model_name(&normalized), Ok(()));
    }

    #[test]
    fn normalisation() {
        for (input, expected) in [
            ("My Model (v2)", "my-model-v2"),
            ("example_tokenizer_model", "example_tokenizer_model"),
            ("__a..b--", "a.b"),
            ("a -_b", "a-b"),
            ("Ünïcode", "n-code"),
            ("!!!", "model"),
            ("", "model"),
        ] {
            let normalized = normalize_model_name(input);
            assert_eq!(normalized, expected, "{input}");
            assert_eq!(validate_model_name(&normalized), Ok(()));
        }
    }
}
