//! §12.11 for GraphQL documents: an input object literal that repeats a field
//! (`publish(event: {type: "a", type: "b"})`) is refused. The parser keeps only one of the
//! values, so the document text is scanned before it is parsed: a light lexer that knows
//! strings, block strings and comments, and tells object literals (a `{` in a value
//! position) from selection sets.

use std::collections::HashSet;

#[derive(PartialEq)]
enum Frame {
    /// A selection set or anything else that is no value.
    Other,
    /// An input object literal and the field names seen in it.
    Object(HashSet<String>),
    /// A list value.
    List,
}

#[derive(PartialEq, Clone)]
enum Tok {
    Punct(char),
    Name(String),
    Other,
}

fn tokens(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    i += if b[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 3;
                out.push(Tok::Other);
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push(Tok::Other);
            }
            b'_' | b'A'..=b'Z' | b'a'..=b'z' => {
                let start = i;
                while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                out.push(Tok::Name(src[start..i].to_string()));
            }
            b'{' | b'}' | b'[' | b']' | b':' | b'=' | b'(' | b')' => {
                out.push(Tok::Punct(c as char));
                i += 1;
            }
            c if c.is_ascii_whitespace() || c == b',' => i += 1,
            _ => {
                out.push(Tok::Other);
                i += 1;
            }
        }
    }
    out
}

/// The first field name repeated inside one input object literal of `document`, if any.
pub fn repeated_field(document: &str) -> Option<String> {
    let toks = tokens(document);
    let mut stack: Vec<Frame> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|p| toks.get(p));
        let in_value =
            matches!(prev, Some(Tok::Punct(':' | '='))) || stack.last() == Some(&Frame::List);
        match t {
            Tok::Punct('{') => stack.push(if in_value {
                Frame::Object(HashSet::new())
            } else {
                Frame::Other
            }),
            Tok::Punct('[') => stack.push(if in_value { Frame::List } else { Frame::Other }),
            Tok::Punct('}' | ']') => {
                stack.pop();
            }
            Tok::Name(n) if toks.get(i + 1) == Some(&Tok::Punct(':')) => {
                if let Some(Frame::Object(seen)) = stack.last_mut() {
                    if !seen.insert(n.clone()) {
                        return Some(n.clone());
                    }
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::repeated_field;

    #[test]
    fn finds_repeats_in_object_literals_only() {
        let r = |s: &str| repeated_field(s);
        assert_eq!(
            r(r#"mutation { publish(event: {type: "a", type: "b"}) { seq } }"#).as_deref(),
            Some("type")
        );
        assert_eq!(
            r(r#"mutation { publish(event: {data: {x: 1 x: 2}, type: "a"}) { seq } }"#).as_deref(),
            Some("x")
        );
        assert_eq!(
            r(r#"{ events(filter: {type: ["a"]}) { seq seq } }"#),
            None,
            "selections may repeat"
        );
        assert_eq!(
            r(r#"{ a: events { seq } a: events { seq } }"#),
            None,
            "aliases are no object fields"
        );
        assert_eq!(r(r#"mutation { p(e: [{a: 1}, {a: 2}]) { s } }"#), None);
        assert_eq!(
            r(r#"mutation { p(e: [{a: 1 a: 2}]) { s } }"#).as_deref(),
            Some("a")
        );
        assert_eq!(
            r(r#"mutation { p(e: {s: "{a: 1, a: 2}", t: """x: {a:1 a:2}"""}) { s } }"#),
            None
        );
        assert_eq!(
            r("mutation($e: JSON = {a: 1, a: 2}) { p(e: $e) { s } }").as_deref(),
            Some("a")
        );
        assert_eq!(r("# {a: 1, a: 2}\n{ events { seq } }"), None);
        assert_eq!(
            r("{ x(a: {b: 1}, b: {b: 2}) { y } }"),
            None,
            "arguments are checked by the schema"
        );
    }
}
