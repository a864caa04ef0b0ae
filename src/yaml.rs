//! A YAML document as a tree that remembers where each of its nodes came from.
//!
//! The runbook loader (`runbook/load/`) and the config loader (`config/load.rs`) walk a document by
//! hand so that every problem of a file is reported at once, and each problem names
//! `file:line:column` like a compiler: this is the tree they walk. Mapping entries and list items
//! carry the position of their key and value, so a problem found anywhere below can be placed.
//!
//! Parsing is serde-saphyr's (pure Rust, `#![forbid(unsafe_code)]`, panic-free on hostile input),
//! set up to accept exactly what the project accepted before (serde_yaml 0.9's rules: YAML 1.2
//! booleans only, `<<` an ordinary key, `0755` and `1_000` plain strings, a duplicate key an
//! error) and to refuse resource-amplifying input with an error: more than [`MAX_BYTES`], nesting
//! deeper than [`MAX_DEPTH`], aliases replaying more than [`MAX_ALIAS_EVENTS`] events (an alias
//! bomb), and more nodes or events than serde-saphyr's default budget allows.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_saphyr::{DuplicateKeyPolicy, MergeKeyPolicy, Spanned};
use std::fmt;
use std::ops::Deref;

/// Deepest nesting of lists and mappings accepted: a runbook needs about 6, a config 3.
pub const MAX_DEPTH: usize = 64;

/// Largest document accepted, in bytes: a 2,000-line catalogue is about 80 KB.
pub const MAX_BYTES: usize = 8 << 20;

/// Most events (scalars, list and mapping starts and ends) all aliases of a document may replay.
pub const MAX_ALIAS_EVENTS: usize = 10_000;

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: u64,
    /// Column (in characters), from 1.
    pub column: u64,
}

impl Pos {
    /// `None` for serde-saphyr's "unknown" location (line 0).
    fn from_location(l: serde_saphyr::Location) -> Option<Self> {
        (l.line() > 0).then(|| Self {
            line: l.line(),
            column: l.column(),
        })
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A YAML number, kept as written: unsigned, negative or floating point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A non-negative integer.
    U(u64),
    /// A negative integer.
    I(i64),
    /// Anything else (`1.5`, `.inf`, an integer too large for 64 bits).
    F(f64),
}

impl fmt::Display for Number {
    /// As serde_yaml showed numbers: `3`, `-1`, `1.5`, `3.0`, `.inf`, `.nan`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Number::U(n) => write!(f, "{n}"),
            Number::I(n) => write!(f, "{n}"),
            Number::F(x) if x.is_nan() => f.write_str(".nan"),
            Number::F(x) if x.is_infinite() => f.write_str(if x > 0.0 { ".inf" } else { "-.inf" }),
            Number::F(x) => write!(f, "{x:?}"),
        }
    }
}

/// One YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(String),
    /// A list.
    Sequence(Sequence),
    /// A mapping, in source order.
    Mapping(Mapping),
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any number as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(Number::U(n)) => Some(*n as f64),
            Value::Number(Number::I(n)) => Some(*n as f64),
            Value::Number(Number::F(x)) => Some(*x),
            _ => None,
        }
    }

    /// A non-negative integer (a float, even `3.0`, is not one).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(Number::U(n)) => Some(*n),
            _ => None,
        }
    }

    /// An integer that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(Number::U(n)) => i64::try_from(*n).ok(),
            Value::Number(Number::I(n)) => Some(*n),
            _ => None,
        }
    }

    /// `null`?
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// A list, with the position of each item.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sequence {
    items: Vec<Value>,
    at: Vec<Option<Pos>>,
}

impl Sequence {
    /// Where item `i` starts.
    pub fn pos(&self, i: usize) -> Option<Pos> {
        self.at.get(i).copied().flatten()
    }
}

impl Deref for Sequence {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        &self.items
    }
}

/// One `key: value` entry of a mapping, with where its key and its value start.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key (almost always a string).
    pub key: Value,
    /// The value.
    pub value: Value,
    /// Where the key starts.
    pub key_at: Option<Pos>,
    /// Where the value starts (for an empty value: where it would be).
    pub value_at: Option<Pos>,
}

/// A mapping, in source order (keys are unique: a duplicate is a parse error).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapping {
    entries: Vec<Entry>,
}

impl Mapping {
    /// The entry whose key is the string `key`.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key.as_str() == Some(key))
    }

    /// The value under the string `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entry(key).map(|e| &e.value)
    }

    /// Is there a value under the string `key`?
    pub fn contains_key(&self, key: &str) -> bool {
        self.entry(key).is_some()
    }

    /// Every key, in source order.
    pub fn keys(&self) -> impl Iterator<Item = &Value> {
        self.entries.iter().map(|e| &e.key)
    }

    /// Every entry, in source order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// No entries?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<'a> IntoIterator for &'a Mapping {
    type Item = (&'a Value, &'a Value);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, Entry>, fn(&'a Entry) -> (&'a Value, &'a Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|e| (&e.key, &e.value))
    }
}

/// A document that is not YAML (or exceeds a limit), with where the parser stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where, when the parser knows.
    pub pos: Option<Pos>,
    /// The parser's message, on one line.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Stack of the parser's thread. The deserializer recurses once per nesting level, deeply enough
/// in a debug build that [`MAX_DEPTH`] levels overflow a 2 MiB thread (a test thread, a tokio
/// worker): on its own thread, the caller's stack never matters.
const PARSER_STACK: usize = 64 << 20;

/// Parse one YAML document (empty text, or only comments, is `null`).
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let failed = |message: String| ParseError { pos: None, message };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("yaml-parse".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(s, || parse_here(text))
            .map_err(|e| failed(format!("cannot start the YAML parser: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(failed("the YAML parser failed".into())))
    })
}

fn parse_here(text: &str) -> Result<Value, ParseError> {
    if text.len() > MAX_BYTES {
        return Err(ParseError {
            pos: None,
            message: format!(
                "the document is {} bytes, more than the {MAX_BYTES} accepted",
                text.len()
            ),
        });
    }
    let mut options = serde_saphyr::Options::default();
    // serde_yaml 0.9's rules, so that every input accepted before means the same now.
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.merge_keys = MergeKeyPolicy::AsOrdinary;
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    options.budget = Some(budget);
    // An alias bomb stops after this many replayed events (a few KB of YAML), not after the
    // default million: a runbook or config file repeats a small block, if anything.
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
        let pos = e.location().and_then(Pos::from_location);
        // The message only: the position is reported separately, and the snippet spans lines.
        let message = e.without_snippet().to_string();
        let mut message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        // The position is reported as `file:line:column`; said again at the end, it is noise.
        if let Some(p) = pos {
            let suffix = format!(" at line {}, column {}", p.line, p.column);
            if message.ends_with(&suffix) {
                message.truncate(message.len() - suffix.len());
            }
        }
        ParseError { pos, message }
    })?;
    let mut docs = docs.into_iter();
    let first = docs.next().unwrap_or(Value::Null);
    if docs.next().is_some() {
        return Err(ParseError {
            pos: None,
            message: "more than one YAML document (expected exactly one)".into(),
        });
    }
    Ok(first)
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(if n < 0 { Number::I(n) } else { Number::U(n as u64) }))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(Number::U(n)))
    }
    fn visit_i128<E>(self, n: i128) -> Result<Value, E> {
        Ok(Value::Number(match (u64::try_from(n), i64::try_from(n)) {
            (Ok(u), _) => Number::U(u),
            (_, Ok(i)) => Number::I(i),
            _ => Number::F(n as f64),
        }))
    }
    fn visit_u128<E>(self, n: u128) -> Result<Value, E> {
        Ok(Value::Number(u64::try_from(n).map_or(Number::F(n as f64), Number::U)))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Value, E> {
        Ok(Value::Number(Number::F(x)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Value, E> {
        String::from_utf8(b.to_vec())
            .map(Value::String)
            .map_err(|_| E::custom("binary data that is not UTF-8"))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Sequence::default();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            out.at.push(Pos::from_location(item.referenced));
            out.items.push(item.value);
        }
        Ok(Value::Sequence(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Mapping::default();
        while let Some(key) = map.next_key::<Spanned<Value>>()? {
            let value = map.next_value::<Spanned<Value>>()?;
            out.entries.push(Entry {
                key: key.value,
                value: value.value,
                key_at: Pos::from_location(key.referenced),
                value_at: Pos::from_location(value.referenced),
            });
        }
        Ok(Value::Mapping(out))
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(Number::U(n)) => s.serialize_u64(*n),
            Value::Number(Number::I(n)) => s.serialize_i64(*n),
            Value::Number(Number::F(x)) => s.serialize_f64(*x),
            Value::String(x) => s.serialize_str(x),
            Value::Sequence(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Mapping(m) => {
                let mut map = s.serialize_map(Some(m.entries.len()))?;
                for e in &m.entries {
                    map.serialize_entry(&e.key, &e.value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_line_and_column() {
        let v = parse("a:\n  b: [1, two]\n  c: {d: x}\n").unwrap();
        let Value::Mapping(top) = &v else { panic!("{v:?}") };
        let a = top.entry("a").unwrap();
        assert_eq!(a.key_at, Some(Pos { line: 1, column: 1 }));
        let Value::Mapping(inner) = &a.value else { panic!() };
        let b = inner.entry("b").unwrap();
        assert_eq!(b.key_at, Some(Pos { line: 2, column: 3 }));
        assert_eq!(b.value_at, Some(Pos { line: 2, column: 6 }));
        let Value::Sequence(items) = &b.value else { panic!() };
        assert_eq!(items.pos(1), Some(Pos { line: 2, column: 10 }));
        assert_eq!(items[1], Value::String("two".into()));
        let Value::Mapping(c) = &inner.get("c").unwrap() else {
            panic!()
        };
        assert_eq!(c.entry("d").unwrap().value_at, Some(Pos { line: 3, column: 10 }));
    }

    /// The scalar rules serde_yaml 0.9 had, so a file means what it meant before the swap.
    #[test]
    fn scalars_resolve_as_before() {
        let v = parse("[yes, no, on, true, 0755, 1_000, 3, -1, 1.5, 3.0, ~, null, '', 18446744073709551616]").unwrap();
        let Value::Sequence(s) = v else { panic!() };
        let want = [
            Value::String("yes".into()),
            Value::String("no".into()),
            Value::String("on".into()),
            Value::Bool(true),
            Value::String("0755".into()),
            Value::String("1_000".into()),
            Value::Number(Number::U(3)),
            Value::Number(Number::I(-1)),
            Value::Number(Number::F(1.5)),
            Value::Number(Number::F(3.0)),
            Value::Null,
            Value::Null,
            Value::String(String::new()),
        ];
        assert_eq!(&s[..want.len()], &want);
        assert!(
            matches!(s[want.len()], Value::Number(Number::F(_))),
            "{:?}",
            s[want.len()]
        );
        assert_eq!(parse("").unwrap(), Value::Null);
        assert_eq!(parse("# only a comment\n").unwrap(), Value::Null);
        let Value::Mapping(m) = parse("<<: {a: 1}\n").unwrap() else {
            panic!()
        };
        assert!(m.contains_key("<<"), "a merge key stays an ordinary key");
        assert_eq!(Number::F(3.0).to_string(), "3.0");
        assert_eq!(Number::F(f64::INFINITY).to_string(), ".inf");
    }

    #[test]
    fn hostile_documents_are_errors() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let block_deep: String = (0..10_000).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        let huge = format!("a: [{}]", "1,".repeat(MAX_BYTES / 2));
        let bomb = include_str!("../tests/data/hostile/runbooks/09-alias-bomb.yaml");
        for (what, text) in [
            ("flow nesting", deep.as_str()),
            ("block nesting", block_deep.as_str()),
            ("alias bomb", bomb),
            ("a huge document", huge.as_str()),
            ("duplicate key", "a: 1\na: 2\n"),
            ("unclosed list", "a: [1, 2\n"),
            ("two documents", "a: 1\n---\nb: 2\n"),
        ] {
            let started = std::time::Instant::now();
            let e = parse(text).expect_err(what);
            assert!(!e.message.is_empty() && !e.message.contains('\n'), "{what}: {e:?}");
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "{what}: slow");
        }
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.is_some(), "a syntax error says where: {e:?}");
    }
}
