//! "Did you mean …?" for misspelt keys, types and profiles.

/// The candidates closest to `input`, best first (several when they tie), or none when
/// nothing is close enough to be a likely typo. Comparison ignores case and treats `_` and
/// `-` alike, so `model_type` finds `model-type` and `Float` finds `float`.
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let needle = normalize(input);
    if needle.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(usize, &'a str)> = Vec::new();
    let mut extended: Vec<&'a str> = Vec::new();
    let mut truncated: Vec<&'a str> = Vec::new();
    for candidate in candidates {
        let hay = normalize(candidate);
        if hay == needle {
            return vec![candidate];
        }
        // "int" → int8/int16/…, "str" → string, "boolean" → bool: a truncated or extended
        // name is as likely a slip as a typo, and edit distance alone misses it.
        if needle.chars().count() >= 3 && hay.starts_with(&needle) {
            push_unique(&mut extended, candidate);
        } else if hay.chars().count() >= 3 && needle.starts_with(&hay) {
            push_unique(&mut truncated, candidate);
        }
        scored.push((osa_distance(&needle, &hay), candidate));
    }
    let threshold = (needle.chars().count() / 3).clamp(1, 3);
    let best = scored.iter().map(|(d, _)| *d).min();
    let mut out: Vec<&'a str> = Vec::new();
    if let Some(best) = best.filter(|&best| best <= threshold) {
        for (d, candidate) in &scored {
            if *d == best {
                push_unique(&mut out, candidate);
            }
        }
    }
    for candidate in extended {
        push_unique(&mut out, candidate);
    }
    // "boolean" → bool helps; "float64x" → float64 and float does not, so a name that
    // merely starts with a candidate only counts when nothing closer was found.
    if out.is_empty() {
        out = truncated;
    }
    out.truncate(4);
    out
}

/// ` did you mean 'x'?` / ` did you mean one of 'x', 'y'?`, or "" when there is nothing to say.
pub fn did_you_mean(suggestions: &[&str]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!("; did you mean '{one}'?"),
        many => format!(
            "; did you mean one of {}?",
            many.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn push_unique<'a>(list: &mut Vec<&'a str>, item: &'a str) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn normalize(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions, since
/// `flaot` is one slip, not two.
fn osa_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Keys and type names are short; bound the work for hostile input anyway.
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = v;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: &[&str] = &[
        "bool", "string", "float", "float16", "int8", "int16", "int32", "int64", "uint8",
    ];

    #[test]
    fn transposition_is_one_edit() {
        assert_eq!(osa_distance("flaot", "float"), 1);
        assert_eq!(suggest("flaot", TYPES.iter().copied()), ["float"]);
    }

    #[test]
    fn separators_and_case_are_ignored() {
        let keys = ["kind", "name", "model-type", "payload"];
        assert_eq!(suggest("model_type", keys), ["model-type"]);
        assert_eq!(suggest("Payload", keys), ["payload"]);
        assert_eq!(suggest("payloda", keys), ["payload"]);
    }

    #[test]
    fn prefixes_suggest_the_family() {
        assert_eq!(
            suggest("int", TYPES.iter().copied()),
            ["int8", "int16", "int32", "int64"]
        );
        assert_eq!(suggest("str", TYPES.iter().copied()), ["string"]);
        assert_eq!(suggest("boolean", TYPES.iter().copied()), ["bool"]);
        assert_eq!(
            suggest("float64x", ["float", "float16", "float64"]),
            ["float64"]
        );
    }

    #[test]
    fn far_names_get_nothing() {
        assert!(suggest("tensor", TYPES.iter().copied()).is_empty());
        assert!(suggest("", TYPES.iter().copied()).is_empty());
        assert!(suggest(&"x".repeat(1000), TYPES.iter().copied()).is_empty());
    }

    #[test]
    fn wording() {
        assert_eq!(did_you_mean(&[]), "");
        assert_eq!(did_you_mean(&["float"]), "; did you mean 'float'?");
        assert_eq!(did_you_mean(&["a", "b"]), "; did you mean one of 'a', 'b'?");
    }
}
