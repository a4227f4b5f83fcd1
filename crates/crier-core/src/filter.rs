//! The filter language of §2, one implementation for every path.
//!
//! A [`Filter`] is parsed from query parameters ([`Filter::from_query`]) or a JSON object
//! ([`Filter::from_json`]); both refuse what they do not understand (unknown keys, bad
//! severity, empty patterns) rather than silently matching nothing. Matching works on a
//! [`Committed`] event's indexed fields and never touches its JSON.

use serde_json::Value;

use crate::event::{Committed, Severity};
use crate::validate::ValidationError;

/// A glob where `*` matches any run of characters (including none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    kind: PatternKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PatternKind {
    Any,
    Exact,
    Prefix(String),
    Suffix(String),
    /// Literal pieces between stars; `anchored_start`/`anchored_end` say whether the pattern
    /// begins/ends with a literal.
    General {
        parts: Vec<String>,
        anchored_start: bool,
        anchored_end: bool,
    },
}

impl Pattern {
    /// Compiles a pattern; an empty pattern is an error.
    pub fn new(text: &str) -> Result<Pattern, ValidationError> {
        if text.is_empty() {
            return Err(ValidationError::bad(
                "invalid_filter",
                "a filter pattern must not be empty",
            ));
        }
        if text.len() > 256 || text.chars().any(char::is_control) {
            return Err(ValidationError::bad(
                "invalid_filter",
                "a filter pattern has at most 256 characters and no control characters",
            ));
        }
        let stars = text.matches('*').count();
        let kind = if text.chars().all(|c| c == '*') {
            PatternKind::Any
        } else if stars == 0 {
            PatternKind::Exact
        } else if stars == 1 && text.ends_with('*') {
            PatternKind::Prefix(text[..text.len() - 1].to_string())
        } else if stars == 1 && text.starts_with('*') {
            PatternKind::Suffix(text[1..].to_string())
        } else {
            PatternKind::General {
                parts: text
                    .split('*')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
                anchored_start: !text.starts_with('*'),
                anchored_end: !text.ends_with('*'),
            }
        };
        Ok(Pattern {
            text: text.to_string(),
            kind,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// How the fan-out can find this pattern's readers without testing it: by the exact
    /// string, by a literal prefix, or not at all.
    pub fn index_key(&self) -> PatternKey<'_> {
        match &self.kind {
            PatternKind::Exact => PatternKey::Exact(&self.text),
            PatternKind::Prefix(p) => PatternKey::Prefix(p),
            _ => PatternKey::Scan,
        }
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        match &self.kind {
            PatternKind::Any => true,
            PatternKind::Exact => self.text == s,
            PatternKind::Prefix(p) => s.starts_with(p.as_str()),
            PatternKind::Suffix(p) => s.ends_with(p.as_str()),
            PatternKind::General {
                parts,
                anchored_start,
                anchored_end,
            } => {
                let mut rest = s;
                let last = parts.len() - 1;
                for (i, part) in parts.iter().enumerate() {
                    if i == 0 && *anchored_start {
                        match rest.strip_prefix(part.as_str()) {
                            Some(r) => rest = r,
                            None => return false,
                        }
                    } else if i == last && *anchored_end {
                        return rest.len() >= part.len() && rest.ends_with(part.as_str());
                    } else {
                        match rest.find(part.as_str()) {
                            Some(at) => rest = &rest[at + part.len()..],
                            None => return false,
                        }
                    }
                }
                !*anchored_end || rest.is_empty()
            }
        }
    }
}

impl Pattern {
    /// Whether some string matches both patterns. Exact for globs: a pattern without a star
    /// is one string; two patterns with stars share a string exactly when their literal
    /// beginnings (before the first star) agree as prefixes and their literal ends (after
    /// the last star) agree as suffixes, since the stars can absorb everything between.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        if !self.text.contains('*') {
            return other.matches(&self.text);
        }
        if !other.text.contains('*') {
            return self.matches(&other.text);
        }
        let ends = |t: &str| {
            let head = t.split('*').next().unwrap_or("").to_string();
            let tail = t.rsplit('*').next().unwrap_or("").to_string();
            (head, tail)
        };
        let (ha, ta) = ends(&self.text);
        let (hb, tb) = ends(&other.text);
        (ha.starts_with(&hb) || hb.starts_with(&ha)) && (ta.ends_with(&tb) || tb.ends_with(&ta))
    }
}

impl Pattern {
    /// Whether every string `other` matches, this one matches too. Sound: `other` written
    /// out (its stars as characters) matches this pattern only if this pattern's literal
    /// parts fall between `other`'s stars, so whatever those stars stand for, this
    /// pattern's own stars take it. It may answer false for exotic pairs that do nest; the
    /// callers then narrow more, never less.
    pub fn covers(&self, other: &Pattern) -> bool {
        self.matches(&other.text)
    }
}

/// The key under which a stored filter (a durable subscription's) keeps the type patterns
/// of the credential that created it (§12.5).
pub const NARROWED_TO: &str = "narrowed_to";

/// What an index can key a [`Pattern`] by (see [`Pattern::index_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKey<'a> {
    /// Matches exactly this string.
    Exact(&'a str),
    /// Matches every string that starts with this non-empty literal.
    Prefix(&'a str),
    /// Neither: the pattern must be tested.
    Scan,
}

/// A conjunction of the keys of §2. The default filter matches every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// `type` patterns (any may match).
    pub types: Vec<Pattern>,
    /// `category` patterns.
    pub categories: Vec<Pattern>,
    /// `source` patterns.
    pub sources: Vec<Pattern>,
    /// `subject` patterns.
    pub subjects: Vec<Pattern>,
    /// Minimum severity.
    pub severity: Option<Severity>,
    /// At least one of these tags.
    pub tags: Vec<String>,
    /// Type patterns imposed by the credential (`subscribe` claim), ANDed with `types`.
    pub allowed_types: Option<Vec<Pattern>>,
}

/// The query parameter names that belong to the filter language.
pub const QUERY_KEYS: [&str; 6] = ["type", "category", "source", "subject", "severity", "tag"];

fn any_match(pats: &[Pattern], value: &str) -> bool {
    pats.is_empty() || pats.iter().any(|p| p.matches(value))
}

fn opt_match(pats: &[Pattern], value: Option<&str>) -> bool {
    pats.is_empty() || value.is_some_and(|v| pats.iter().any(|p| p.matches(v)))
}

fn parse_severity(s: &str) -> Result<Severity, ValidationError> {
    Severity::parse(s).ok_or_else(|| {
        ValidationError::bad(
            "invalid_filter",
            format!("severity {s:?} is not one of debug, info, warning, error, critical"),
        )
    })
}

fn patterns<'a>(
    key: &str,
    items: impl Iterator<Item = &'a str>,
) -> Result<Vec<Pattern>, ValidationError> {
    items
        .map(|s| Pattern::new(s).map_err(|e| e.at(format!("filter key `{key}`"))))
        .collect()
}

fn check_tag(t: &str) -> Result<(), ValidationError> {
    if t.is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control) {
        return Err(ValidationError::bad(
            "invalid_filter",
            "a tag in a filter has 1 to 64 characters and no control characters",
        ));
    }
    Ok(())
}

impl Filter {
    /// Whether the event passes every key.
    pub fn matches(&self, e: &Committed) -> bool {
        any_match(&self.types, &e.kind)
            && self
                .allowed_types
                .as_ref()
                .is_none_or(|a| a.iter().any(|p| p.matches(&e.kind)))
            && self.severity.is_none_or(|s| e.severity >= s)
            && opt_match(&self.categories, e.category.as_deref())
            && any_match(&self.sources, &e.source)
            && opt_match(&self.subjects, e.subject.as_deref())
            && (self.tags.is_empty() || e.tags.iter().any(|t| self.tags.contains(t)))
    }

    /// Every pattern and tag of the filter, all keys together (what `max_filter_patterns`
    /// counts).
    pub fn pattern_count(&self) -> usize {
        self.types.len()
            + self.categories.len()
            + self.sources.len()
            + self.subjects.len()
            + self.tags.len()
    }

    /// The §12.2 bounds on a reader's filter: at most `max_patterns` patterns and tags, and
    /// at most `max_bytes` as JSON. Beyond them: `filter_too_large`.
    pub fn check_size(&self, max_patterns: usize, max_bytes: usize) -> Result<(), ValidationError> {
        let n = self.pattern_count();
        if n > max_patterns {
            return Err(ValidationError::bad(
                "filter_too_large",
                format!("a filter has at most {max_patterns} patterns and tags, all keys together; this one has {n} (limits.max_filter_patterns)"),
            ));
        }
        let bytes = self.to_json().to_string().len();
        if bytes > max_bytes {
            return Err(ValidationError::bad(
                "filter_too_large",
                format!("a filter is at most {max_bytes} bytes as JSON; this one is {bytes} (limits.max_filter_bytes)"),
            ));
        }
        Ok(())
    }

    /// Whether the filter matches every event.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Builds a filter from query parameters; keys outside [`QUERY_KEYS`] are ignored here
    /// (the caller decides which other parameters its path accepts). A key given twice adds
    /// to its list.
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Filter, ValidationError> {
        let mut f = Filter::default();
        for (k, v) in pairs {
            let items = || v.split(',');
            match k {
                "type" => f.types.extend(patterns(k, items())?),
                "category" => f.categories.extend(patterns(k, items())?),
                "source" => f.sources.extend(patterns(k, items())?),
                "subject" => f.subjects.extend(patterns(k, items())?),
                "severity" => f.severity = Some(parse_severity(v)?),
                "tag" | "tags" => {
                    for t in items() {
                        check_tag(t)?;
                        f.tags.push(t.to_string());
                    }
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// Builds a filter from its JSON form; unknown keys and wrong types are errors.
    /// List keys take an array of strings or a single string; `null` means absent.
    pub fn from_json(v: &Value) -> Result<Filter, ValidationError> {
        let obj = match v {
            Value::Null => return Ok(Filter::default()),
            Value::Object(o) => o,
            _ => {
                return Err(ValidationError::bad(
                    "invalid_filter",
                    "a filter is a JSON object",
                ))
            }
        };
        let mut f = Filter::default();
        for (k, v) in obj {
            let strings = || -> Result<Vec<&str>, ValidationError> {
                match v {
                    Value::Null => Ok(vec![]),
                    Value::String(s) => Ok(vec![s.as_str()]),
                    Value::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_str().ok_or_else(|| {
                                ValidationError::bad(
                                    "invalid_filter",
                                    format!("filter key `{k}` takes strings"),
                                )
                            })
                        })
                        .collect(),
                    _ => Err(ValidationError::bad(
                        "invalid_filter",
                        format!("filter key `{k}` takes a list of strings"),
                    )),
                }
            };
            match k.as_str() {
                "type" => f.types = patterns(k, strings()?.into_iter())?,
                "category" => f.categories = patterns(k, strings()?.into_iter())?,
                "source" => f.sources = patterns(k, strings()?.into_iter())?,
                "subject" => f.subjects = patterns(k, strings()?.into_iter())?,
                "severity" => match v {
                    Value::Null => {}
                    Value::String(s) => f.severity = Some(parse_severity(s)?),
                    _ => {
                        return Err(ValidationError::bad(
                            "invalid_filter",
                            "filter key `severity` takes a string",
                        ))
                    }
                },
                "tags" | "tag" => {
                    for t in strings()? {
                        check_tag(t)?;
                        f.tags.push(t.to_string());
                    }
                }
                other => {
                    return Err(ValidationError::bad(
                        "invalid_filter",
                        format!(
                            "unknown filter key `{other}`; use type, category, source, subject, severity, tags"
                        ),
                    ))
                }
            }
        }
        Ok(f)
    }

    /// Narrows this filter to `allowed` type patterns (a credential's `subscribe`), as a
    /// durable subscription keeps it. `None` when no event could pass both: a filter whose
    /// `type` patterns all lie outside `allowed`.
    pub fn narrowed(mut self, allowed: Option<&[Pattern]>) -> Option<Filter> {
        let Some(allowed) = allowed else {
            return Some(self);
        };
        if !self.types.is_empty()
            && !self
                .types
                .iter()
                .any(|t| allowed.iter().any(|a| a.overlaps(t)))
        {
            return None;
        }
        // Patterns that cannot match anything allowed are dropped: they only obscure.
        self.types.retain(|t| allowed.iter().any(|a| a.overlaps(t)));
        let merged: Vec<Pattern> = match self.allowed_types.take() {
            None => allowed.to_vec(),
            // Both narrowings hold: keep the narrower of every pair where one holds the
            // other. A pair that only partly overlaps is dropped, which may deliver less,
            // never more.
            Some(prev) => {
                let mut out: Vec<Pattern> = Vec::new();
                for p in &prev {
                    for a in allowed {
                        let keep = if p.covers(a) {
                            a
                        } else if a.covers(p) {
                            p
                        } else {
                            continue;
                        };
                        if !out.contains(keep) {
                            out.push(keep.clone());
                        }
                    }
                }
                out
            }
        };
        if merged.is_empty() {
            return None;
        }
        self.allowed_types = Some(merged);
        Some(self)
    }

    /// The stored form: [`Filter::to_json`] plus the credential's narrowing under
    /// [`NARROWED_TO`].
    pub fn to_stored_json(&self) -> Value {
        let mut v = self.to_json();
        if let (Some(a), Value::Object(m)) = (&self.allowed_types, &mut v) {
            m.insert(
                NARROWED_TO.into(),
                a.iter().map(|p| p.as_str()).collect::<Vec<_>>().into(),
            );
        }
        v
    }

    /// Reads the stored form written by [`Filter::to_stored_json`].
    pub fn from_stored_json(v: &Value) -> Result<Filter, ValidationError> {
        let mut v = v.clone();
        let narrowed = match &mut v {
            Value::Object(m) => m.remove(NARROWED_TO),
            _ => None,
        };
        let mut f = Filter::from_json(&v)?;
        if let Some(n) = narrowed {
            let list = Filter::from_json(&serde_json::json!({ "type": n }))?;
            f.allowed_types = Some(list.types);
        }
        Ok(f)
    }

    /// The JSON form of this filter (the inverse of [`Filter::from_json`]).
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        let list = |p: &[Pattern]| Value::from(p.iter().map(|x| x.as_str()).collect::<Vec<_>>());
        if !self.types.is_empty() {
            m.insert("type".into(), list(&self.types));
        }
        if !self.categories.is_empty() {
            m.insert("category".into(), list(&self.categories));
        }
        if !self.sources.is_empty() {
            m.insert("source".into(), list(&self.sources));
        }
        if !self.subjects.is_empty() {
            m.insert("subject".into(), list(&self.subjects));
        }
        if let Some(s) = self.severity {
            m.insert("severity".into(), s.as_str().into());
        }
        if !self.tags.is_empty() {
            m.insert("tags".into(), self.tags.clone().into());
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(kind: &str, sev: Severity, tags: &[&str]) -> Committed {
        Committed {
            seq: 1,
            tenant: "t".into(),
            id: "i".into(),
            time_us: 0,
            kind: kind.into(),
            source: "api".into(),
            category: Some("config".into()),
            severity: sev,
            subject: None,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            json: bytes::Bytes::new(),
            frames: Default::default(),
        }
    }

    #[test]
    fn globs() {
        let m = |p: &str, s: &str| Pattern::new(p).unwrap().matches(s);
        assert!(m("*", ""));
        assert!(m("site.*", "site.created"));
        assert!(!m("site.*", "sites.created"));
        assert!(m("*.deleted", "site.deleted"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "a-b-b-c"));
        assert!(!m("a*b*c", "a-b-b-cd"));
        assert!(m("*b*", "abc"));
        assert!(!m("*x*", "abc"));
        assert!(m("a**c", "ac"));
        assert!(!m("ab*ba", "aba"));
        assert!(Pattern::new("").is_err());
    }

    #[test]
    fn keys_are_anded() {
        let f = Filter::from_query([
            ("type", "site.*"),
            ("severity", "warning"),
            ("tag", "prod,x"),
        ])
        .unwrap();
        assert!(f.matches(&ev("site.created", Severity::Error, &["prod"])));
        assert!(!f.matches(&ev("site.created", Severity::Info, &["prod"])));
        assert!(!f.matches(&ev("site.created", Severity::Error, &["dev"])));
        assert!(!f.matches(&ev("user.created", Severity::Error, &["prod"])));
        let f = Filter::from_query([("subject", "*")]).unwrap();
        assert!(
            !f.matches(&ev("a", Severity::Info, &[])),
            "an absent subject matches no pattern"
        );
    }

    #[test]
    fn json_form_refuses_what_it_does_not_know() {
        assert!(Filter::from_json(&serde_json::json!({"typo": ["a"]})).is_err());
        assert!(Filter::from_json(&serde_json::json!({"severity": "loud"})).is_err());
        assert!(Filter::from_json(&serde_json::json!({"type": [""]})).is_err());
        assert!(Filter::from_json(&serde_json::json!({"type": [1]})).is_err());
        assert!(Filter::from_json(&serde_json::json!([])).is_err());
        let f = Filter::from_json(
            &serde_json::json!({"type": ["site.*"], "severity": "warning", "tags": ["prod"]}),
        )
        .unwrap();
        assert_eq!(Filter::from_json(&f.to_json()).unwrap(), f);
    }

    #[test]
    fn narrowing_is_stored_and_read_back() {
        let pats = |xs: &[&str]| {
            xs.iter()
                .map(|x| Pattern::new(x).unwrap())
                .collect::<Vec<_>>()
        };
        let allowed = pats(&["public.*"]);
        let f = Filter::default().narrowed(Some(&allowed)).unwrap();
        let back = Filter::from_stored_json(&f.to_stored_json()).unwrap();
        assert_eq!(back, f);
        assert!(back.matches(&ev("public.a", Severity::Info, &[])));
        assert!(!back.matches(&ev("secret.a", Severity::Info, &[])));
        let outside = Filter::from_json(&serde_json::json!({"type": ["secret.*"]})).unwrap();
        assert!(outside.narrowed(Some(&allowed)).is_none());
        let some = Filter::from_json(&serde_json::json!({"type": ["secret.*", "*.a"]})).unwrap();
        let n = some.narrowed(Some(&allowed)).unwrap();
        assert!(n.matches(&ev("public.a", Severity::Info, &[])));
        assert!(!n.matches(&ev("secret.a", Severity::Info, &[])));
        assert!(
            Filter::from_json(&f.to_stored_json()).is_err(),
            "clients cannot send it"
        );
        let again = f.clone().narrowed(Some(&pats(&["*"]))).unwrap();
        assert_eq!(
            again.allowed_types,
            Some(allowed.clone()),
            "narrowing never widens"
        );
        let twice = f.narrowed(Some(&pats(&["public.a*", "other"]))).unwrap();
        assert_eq!(twice.allowed_types, Some(pats(&["public.a*"])));
    }

    fn words() -> Vec<String> {
        let alphabet = ['a', 'b', '.'];
        let mut words = vec![String::new()];
        for _ in 0..6 {
            let next: Vec<String> = words
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .filter(|w| w.len() <= 6)
                .collect();
            words.extend(next);
            words.sort();
            words.dedup();
        }
        words
    }

    fn naive_overlap(a: &str, b: &str) -> bool {
        // Brute force over short strings of the alphabet.
        words().iter().any(|w| naive(a, w) && naive(b, w))
    }

    fn naive(p: &str, s: &str) -> bool {
        // Reference implementation by recursion.
        fn go(p: &[u8], s: &[u8]) -> bool {
            match p.first() {
                None => s.is_empty(),
                Some(b'*') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
                Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
            }
        }
        go(p.as_bytes(), s.as_bytes())
    }

    proptest! {
        #[test]
        fn glob_agrees_with_reference(p in "[ab.*]{1,8}", s in "[ab.]{0,10}") {
            prop_assert_eq!(Pattern::new(&p).unwrap().matches(&s), naive(&p, &s));
        }

        #[test]
        fn overlap_agrees_with_brute_force(a in "[ab.*]{1,3}", b in "[ab.*]{1,3}") {
            let (pa, pb) = (Pattern::new(&a).unwrap(), Pattern::new(&b).unwrap());
            prop_assert_eq!(pa.overlaps(&pb), naive_overlap(&a, &b));
        }

        #[test]
        fn covers_is_sound(a in "[ab.*]{1,3}", b in "[ab.*]{1,3}") {
            let (pa, pb) = (Pattern::new(&a).unwrap(), Pattern::new(&b).unwrap());
            if pa.covers(&pb) {
                for w in words() {
                    prop_assert!(!naive(&b, &w) || naive(&a, &w), "{} covers {} but not {:?}", a, b, w);
                }
            }
        }
    }
}
