//! The fast path for the shape almost every event has: one flat JSON object whose strings
//! need no unescaping, read in a single pass without serde.
//!
//! It never decides that a record is bad. Anything it is not sure of — an escape, a nested
//! value, a duplicate field, a byte out of place — makes it answer `None`, and
//! [`super::Fields::from_json`] reads the text with serde_json instead, which either accepts
//! it or explains what is wrong. So the fast path can only ever agree with serde_json; the
//! property test below checks that on random, often broken, objects.
//!
//! ```text
//! {"id": "t1", "customer": "Ali", "amount": 12.5, "note": true}
//!   -> id Text("t1"), customer Text("Ali"), amount Number("12.5"); `note` skipped
//! {"customer": "A\u00efcha", ...}  -> None (an escape: serde_json unescapes it)
//! ```

use std::borrow::Cow;

use super::{Field, Fields};

/// The event fields of `text` if it is a flat JSON object that needs no unescaping;
/// `None` for anything else, valid or not.
pub(super) fn read(text: &str) -> Option<Fields<'_>> {
    let b = text.as_bytes();
    let mut fields = Fields::default();
    let mut seen = 0u8;
    let mut i = skip_space(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_space(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let (key, after) = string(text, i)?;
            i = skip_space(b, after);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_space(b, i + 1);
            let (value, after) = value(text, i)?;
            let slot = match key {
                "id" => Some((1, &mut fields.id)),
                "customer" => Some((2, &mut fields.customer)),
                "amount" => Some((4, &mut fields.amount)),
                "op" => Some((8, &mut fields.op)),
                "ts" => Some((16, &mut fields.ts)),
                "category" => Some((32, &mut fields.category)),
                _ => None,
            };
            if let Some((bit, slot)) = slot {
                // serde_json refuses a repeated field; let it say so.
                if seen & bit != 0 {
                    return None;
                }
                seen |= bit;
                *slot = value;
            }
            i = skip_space(b, after);
            match b.get(i) {
                Some(b',') => i = skip_space(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_space(b, i) == b.len()).then_some(fields)
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
fn skip_space(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A string starting at `i` that needs no unescaping, and the index after its closing quote.
fn string(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    // Strings in events are short: a plain loop beats a vectorised search's set-up.
    let mut end = start;
    loop {
        match *b.get(end)? {
            b'"' => break,
            // An escape, or a control character JSON does not allow unescaped.
            b'\\' | 0..=0x1f => return None,
            _ => end += 1,
        }
    }
    // Both ends are ASCII quotes in valid UTF-8 text, so this slice is on char boundaries.
    Some((&text[start..end], end + 1))
}

/// The value starting at `i` as a [`Field`], and the index after it; `None` for nested
/// values and anything that is not a valid JSON value.
fn value(text: &str, i: usize) -> Option<(Field<'_>, usize)> {
    let b = text.as_bytes();
    match b.get(i)? {
        b'"' => string(text, i).map(|(s, end)| (Field::Text(Cow::Borrowed(s)), end)),
        b'-' | b'0'..=b'9' => {
            let end = number(b, i)?;
            Some((Field::Number(&text[i..end]), end))
        }
        b'n' => b[i..].starts_with(b"null").then_some((Field::Absent, i + 4)),
        b't' => b[i..].starts_with(b"true").then(|| (Field::Other(&text[i..i + 4]), i + 4)),
        b'f' => b[i..].starts_with(b"false").then(|| (Field::Other(&text[i..i + 5]), i + 5)),
        _ => None,
    }
}

/// The end of a JSON number starting at `i`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::super::{Fields, JsonFields};
    use super::*;

    /// What serde_json makes of `text` (the slow path, without the fast one).
    fn by_serde(text: &str) -> Option<Fields<'_>> {
        let raw: JsonFields<'_> = serde_json::from_str(text).ok()?;
        Some(Fields {
            id: Field::from_json(raw.id).ok()?,
            customer: Field::from_json(raw.customer).ok()?,
            amount: Field::from_json(raw.amount).ok()?,
            op: Field::from_json(raw.op).ok()?,
            ts: Field::from_json(raw.ts).ok()?,
            category: Field::from_json(raw.category).ok()?,
        })
    }

    fn same(a: &Fields<'_>, b: &Fields<'_>) -> bool {
        (&a.id, &a.customer, &a.amount, &a.op, &a.ts, &a.category)
            == (&b.id, &b.customer, &b.amount, &b.op, &b.ts, &b.category)
    }

    #[test]
    fn reads_the_common_shape_and_leaves_the_rest_to_serde() {
        let fields = read(r#" {"id": "t1", "customer":"Ali" , "amount": -12.5e+1, "x": [1], "ts": null}"#);
        assert!(fields.is_none(), "a nested value goes to serde");
        let fields = read(r#" {"id": "t1", "customer":"Ali" , "amount": -12.5e+1, "x": true, "ts": null} "#).unwrap();
        assert_eq!(fields.id, Field::Text(Cow::Borrowed("t1")));
        assert_eq!(fields.customer, Field::Text(Cow::Borrowed("Ali")));
        assert_eq!(fields.amount, Field::Number("-12.5e+1"));
        assert_eq!(fields.ts, Field::Absent);
        for unsure in [
            r#"{"customer":"A\u00efcha"}"#,
            r#"{"id":"a","id":"b"}"#,
            r#"{"amount":01}"#,
            r#"{"amount":1.}"#,
            r#"{"amount":1,}"#,
            r#"{"amount":1} x"#,
            "{\"customer\":\"tab\there\"}",
            r#"{"amount":nul}"#,
            "{\u{a0}}",
        ] {
            assert!(read(unsure).is_none(), "{unsure}");
        }
        assert!(read("{}").is_some());
    }

    /// Pieces of JSON, mostly well formed, to build objects from.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just(" ".to_string()),
            Just("\t".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("[1,{}]".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("fals".to_string()),
            prop::sample::select(vec![
                "\"id\"",
                "\"customer\"",
                "\"amount\"",
                "\"op\"",
                "\"ts\"",
                "\"category\"",
                "\"x\""
            ])
            .prop_map(str::to_string),
            "-?[0-9]{0,3}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,2})?",
            "\"[a-zé\\\\\"\u{1}\u{7f} ]{0,6}\"",
        ]
    }

    /// Mostly valid objects: `{ key: value, ... }` with pieces that may break them.
    fn object() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec!["id", "customer", "amount", "op", "ts", "category", "other"]);
        let value = prop_oneof![
            "\"[a-z0-9:\\-é]{0,8}\"",
            "-?(0|[1-9][0-9]{0,4})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
            Just("null".to_string()),
            Just("false".to_string()),
            Just("{\"a\":1}".to_string()),
        ];
        let member = (key, " ?", value).prop_map(|(k, s, v)| format!("\"{k}\":{s}{v}"));
        (prop::collection::vec(member, 0..7), prop::collection::vec((0..80usize, piece()), 0..2)).prop_map(
            |(members, breaks)| {
                let mut text = format!("{{{}}}", members.join(", "));
                for (at, piece) in breaks {
                    let mut at = at.min(text.len());
                    while !text.is_char_boundary(at) {
                        at -= 1;
                    }
                    text.insert_str(at, &piece);
                }
                text
            },
        )
    }

    /// Whatever the fast path reads, serde_json reads the same; and the cases are not all
    /// one-sided (most objects take the fast path, many broken ones do not).
    #[test]
    fn agrees_with_serde() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut fast_reads, mut left_to_serde) = (0, 0);
        let whole = object().boxed();
        let fragments = prop::collection::vec(piece(), 0..12).prop_map(|p| p.concat()).boxed();
        for strategy in [whole, fragments] {
            for _ in 0..4000 {
                let text = strategy.new_tree(&mut runner).expect("a case").current();
                match read(&text) {
                    Some(fast) => {
                        fast_reads += 1;
                        let slow = by_serde(&text);
                        assert!(slow.as_ref().is_some_and(|slow| same(&fast, slow)), "{text}: {fast:?} vs {slow:?}");
                    }
                    None => left_to_serde += 1,
                }
            }
        }
        assert!(fast_reads > 1000 && left_to_serde > 1000, "{fast_reads} fast, {left_to_serde} to serde");
    }
}
