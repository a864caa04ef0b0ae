//! The incident event (input, schema `schemas/incident.v1.json`): parsing and validation.
//!
//! Parsing is deliberately hand-rolled over `serde_json::Value` rather than derived, so every
//! rejection names the offending field (`confidence: must be between 0.0 and 1.0, got 1.5`), and
//! so limits on sizes are enforced before anything event-derived travels further. Nothing parsed
//! here ever reaches a shell; names used in Kubernetes calls are validated again when a runbook
//! template is rendered.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Largest incident accepted, in bytes. Bigger payloads are rejected before parsing.
pub const MAX_INCIDENT_BYTES: usize = 256 * 1024;
/// Longest incident id (docs/design.md#incident-event).
pub const MAX_ID_CHARS: usize = 128;
/// Longest root cause, symptom, service name or context string.
pub const MAX_TEXT_CHARS: usize = 1024;
/// Most services, symptoms or context entries in one incident.
pub const MAX_ITEMS: usize = 64;

/// A scalar value of `incident.context`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ContextValue {
    /// A string.
    Str(String),
    /// A JSON number, kept as written.
    Num(serde_json::Number),
    /// A boolean.
    Bool(bool),
}

impl fmt::Display for ContextValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextValue::Str(s) => f.write_str(s),
            ContextValue::Num(n) => write!(f, "{n}"),
            ContextValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A validated incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Idempotency key.
    pub id: String,
    /// Root cause named by the RCA pipeline, e.g. `CrashLoopBackOff`.
    pub root_cause: String,
    /// RCA confidence, 0.0..=1.0.
    pub confidence: f64,
    /// Affected services; the first is the primary service. Never empty.
    pub services: Vec<String>,
    /// Observed symptoms, used for matching when the root cause matches no runbook.
    pub symptoms: Vec<String>,
    /// Values for runbook templates (`pod_name`, `namespace`, ...).
    pub context: BTreeMap<String, ContextValue>,
    /// When the RCA pipeline detected it; drives the freshness guard.
    pub detected_at: Option<DateTime<Utc>>,
}

impl Incident {
    /// The primary service (first of `services`).
    pub fn service(&self) -> &str {
        // `parse` guarantees at least one service.
        self.services.first().map(String::as_str).unwrap_or("")
    }
}

/// Why an incident was rejected: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Rejection {
    /// JSON path of the offending field (`confidence`, `context.pod_name`, `services[1]`), or
    /// `$` for the payload as a whole.
    pub field: String,
    /// What is wrong, with the offending value where it is short enough to show.
    pub message: String,
}

impl Rejection {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What could be read from a rejected payload, so its outcome can still name the incident.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Partial {
    /// The `id`, when it is a valid id.
    pub id: Option<String>,
    /// The primary service, when readable.
    pub service: Option<String>,
    /// The root cause, when readable.
    pub root_cause: Option<String>,
}

/// Parse and validate an incident from raw bytes (a Kafka message value or a JSONL line).
pub fn parse(bytes: &[u8]) -> Result<Incident, (Rejection, Partial)> {
    if bytes.len() > MAX_INCIDENT_BYTES {
        return Err((
            Rejection::new(
                "$",
                format!(
                    "payload of {} bytes exceeds the {MAX_INCIDENT_BYTES}-byte limit",
                    bytes.len()
                ),
            ),
            Partial::default(),
        ));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| (Rejection::new("$", format!("not valid JSON: {e}")), Partial::default()))?;
    let Value::Object(obj) = value else {
        return Err((
            Rejection::new("$", format!("must be a JSON object, got {}", kind(&value))),
            Partial::default(),
        ));
    };
    let mut partial = peek(&obj);
    if let Some(path) = duplicate_key(bytes) {
        if path == "id" {
            // Which id is meant is exactly what is ambiguous: name none.
            partial.id = None;
        }
        return Err((
            Rejection::new(
                path,
                "appears more than once in its object (JSON parsers disagree on which value wins, so the \
                 incident is ambiguous)",
            ),
            partial,
        ));
    }
    from_object(&obj).map_err(|r| (r, partial))
}

/// The path (`confidence`, `context.pod_name`, `services[1].x`) of the first key an object of
/// this (valid JSON) document repeats.
///
/// JSON leaves repeated keys undefined: serde_json keeps the last value, many parsers the first.
/// `{"confidence":0.1,"confidence":0.95}` or two `id`s would mean one thing to the pipeline that
/// produced or screened the incident and another to this worker, so such an incident is
/// rejected rather than acted on.
fn duplicate_key(bytes: &[u8]) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    struct Walk<'a> {
        path: String,
        found: &'a RefCell<Option<String>>,
    }
    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(Walk {
                    path: format!("{}[{i}]", self.path),
                    found: self.found,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                // An empty key still needs a visible name in the path.
                let name = if key.is_empty() {
                    "\"\"".to_string()
                } else {
                    shorten(&key)
                };
                let path = if self.path.is_empty() {
                    name
                } else {
                    format!("{}.{name}", self.path)
                };
                if !seen.insert(key) {
                    *self.found.borrow_mut() = Some(path);
                    return Err(A::Error::custom("duplicate key"));
                }
                map.next_value_seed(Walk {
                    path,
                    found: self.found,
                })?;
            }
            Ok(())
        }
    }

    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let _ = Walk {
        path: String::new(),
        found: &found,
    }
    .deserialize(&mut de);
    found.into_inner()
}

fn peek(obj: &Map<String, Value>) -> Partial {
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .filter(|s| valid_text(s, MAX_TEXT_CHARS))
            .map(str::to_owned)
    };
    Partial {
        id: obj
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| valid_text(s, MAX_ID_CHARS))
            .map(str::to_owned),
        service: obj
            .get("services")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .filter(|s| valid_text(s, MAX_TEXT_CHARS))
            .map(str::to_owned)
            .or_else(|| text("service")),
        root_cause: text("root_cause"),
    }
}

fn from_object(obj: &Map<String, Value>) -> Result<Incident, Rejection> {
    let id = required_text(obj, "id", MAX_ID_CHARS)?;
    let root_cause = required_text(obj, "root_cause", MAX_TEXT_CHARS)?;
    let confidence = match obj.get("confidence") {
        None | Some(Value::Null) => return Err(Rejection::new("confidence", "is required")),
        Some(Value::Number(n)) => {
            let c = n
                .as_f64()
                .filter(|c| c.is_finite())
                .ok_or_else(|| Rejection::new("confidence", "must be a finite number"))?;
            if !(0.0..=1.0).contains(&c) {
                return Err(Rejection::new(
                    "confidence",
                    format!("must be between 0.0 and 1.0, got {n}"),
                ));
            }
            c
        }
        Some(v) => {
            return Err(Rejection::new(
                "confidence",
                format!("must be a number, got {}", kind(v)),
            ))
        }
    };
    let services = match (obj.get("services"), obj.get("service")) {
        (Some(v @ Value::Array(_)), single) => {
            let list = text_list(v, "services")?;
            if list.is_empty() {
                return Err(Rejection::new("services", "must list at least one service"));
            }
            if let Some(s) = single.filter(|s| !s.is_null()) {
                let s = text_value(s, "service", MAX_TEXT_CHARS)?;
                if s != list[0] {
                    return Err(Rejection::new(
                        "service",
                        format!("{s:?} disagrees with services[0] {:?}", list[0]),
                    ));
                }
            }
            list
        }
        (Some(v), _) if !v.is_null() => {
            return Err(Rejection::new(
                "services",
                format!("must be an array of strings, got {}", kind(v)),
            ))
        }
        (_, Some(s)) if !s.is_null() => vec![text_value(s, "service", MAX_TEXT_CHARS)?],
        _ => return Err(Rejection::new("services", "is required (or give a single `service`)")),
    };
    let symptoms = match obj.get("symptoms") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => text_list(v, "symptoms")?,
    };
    let context = match obj.get("context") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => {
            if m.len() > MAX_ITEMS {
                return Err(Rejection::new(
                    "context",
                    format!("has {} entries, at most {MAX_ITEMS} allowed", m.len()),
                ));
            }
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let field = format!("context.{}", shorten(k));
                if !valid_text(k, 128) {
                    return Err(Rejection::new(field, "key must be 1..128 printable characters"));
                }
                let cv = match v {
                    Value::String(s) => {
                        let n = s.chars().count();
                        if n > MAX_TEXT_CHARS {
                            return Err(Rejection::new(
                                field,
                                format!("must be at most {MAX_TEXT_CHARS} characters, got {n}"),
                            ));
                        }
                        if s.chars().any(char::is_control) {
                            return Err(Rejection::new(field, "must not contain control characters"));
                        }
                        ContextValue::Str(s.clone())
                    }
                    Value::Number(n) => {
                        if n.as_f64().is_none_or(|f| !f.is_finite()) {
                            return Err(Rejection::new(field, "must be a finite number"));
                        }
                        ContextValue::Num(n.clone())
                    }
                    Value::Bool(b) => ContextValue::Bool(*b),
                    other => {
                        return Err(Rejection::new(
                            field,
                            format!("must be a string, number or boolean, got {}", kind(other)),
                        ))
                    }
                };
                out.insert(k.clone(), cv);
            }
            out
        }
        Some(v) => return Err(Rejection::new("context", format!("must be an object, got {}", kind(v)))),
    };
    let detected_at = match obj.get("detected_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| {
                    Rejection::new(
                        "detected_at",
                        format!("must be an RFC 3339 time, got {:?} ({e})", shorten(s)),
                    )
                })?
                .with_timezone(&Utc),
        ),
        Some(v) => {
            return Err(Rejection::new(
                "detected_at",
                format!("must be an RFC 3339 string, got {}", kind(v)),
            ))
        }
    };
    Ok(Incident {
        id,
        root_cause,
        confidence,
        services,
        symptoms,
        context,
        detected_at,
    })
}

fn required_text(obj: &Map<String, Value>, field: &str, max: usize) -> Result<String, Rejection> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(Rejection::new(field, "is required")),
        Some(v) => text_value(v, field, max),
    }
}

fn text_value(v: &Value, field: &str, max: usize) -> Result<String, Rejection> {
    let Value::String(s) = v else {
        return Err(Rejection::new(field, format!("must be a string, got {}", kind(v))));
    };
    if !valid_text(s, max) {
        let n = s.chars().count();
        let why = if n == 0 {
            "must not be empty".to_string()
        } else if n > max {
            format!("must be at most {max} characters, got {n}")
        } else {
            "must not contain control characters".to_string()
        };
        return Err(Rejection::new(field, why));
    }
    Ok(s.clone())
}

fn text_list(v: &Value, field: &str) -> Result<Vec<String>, Rejection> {
    let Value::Array(items) = v else {
        return Err(Rejection::new(
            field,
            format!("must be an array of strings, got {}", kind(v)),
        ));
    };
    if items.len() > MAX_ITEMS {
        return Err(Rejection::new(
            field,
            format!("has {} items, at most {MAX_ITEMS} allowed", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| text_value(item, &format!("{field}[{i}]"), MAX_TEXT_CHARS))
        .collect()
}

/// Non-empty, at most `max` characters, no control characters (they would corrupt logs and keys).
fn valid_text(s: &str, max: usize) -> bool {
    !s.is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// At most 64 characters of `s`, for error messages that quote input.
pub fn shorten(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(64).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(json: &str) -> Rejection {
        parse(json.as_bytes()).expect_err("should be rejected").0
    }

    #[test]
    fn seed_incident_with_single_service_parses() {
        let i = parse(
            br#"{"id":"INC001","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"api-server",
            "context":{"pod_name":"api-server-abc123","namespace":"production"}}"#,
        )
        .unwrap();
        assert_eq!(i.services, vec!["api-server"]);
        assert_eq!(i.service(), "api-server");
        assert_eq!(i.context["pod_name"], ContextValue::Str("api-server-abc123".into()));
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            (r#"{"root_cause":"x","confidence":1,"service":"a"}"#, "id"),
            (r#"{"id":"","root_cause":"x","confidence":1,"service":"a"}"#, "id"),
            (r#"{"id":5,"root_cause":"x","confidence":1,"service":"a"}"#, "id"),
            (r#"{"id":"a","confidence":1,"service":"a"}"#, "root_cause"),
            (
                r#"{"id":"a","root_cause":"x","confidence":1.5,"service":"a"}"#,
                "confidence",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":"high","service":"a"}"#,
                "confidence",
            ),
            (r#"{"id":"a","root_cause":"x","confidence":0.5}"#, "services"),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"services":[]}"#,
                "services",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"services":["a",3]}"#,
                "services[1]",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"n":null}}"#,
                "context.n",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":[]}"#,
                "context",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","detected_at":"yesterday"}"#,
                "detected_at",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"services":["a"],"service":"b"}"#,
                "service",
            ),
            (r#"[1,2]"#, "$"),
            (r#"{"id":"a""#, "$"),
        ];
        for (json, field) in cases {
            assert_eq!(rejected(json).field, field, "{json}");
        }
    }

    #[test]
    fn oversized_payload_is_rejected_before_parsing() {
        let big = vec![b' '; MAX_INCIDENT_BYTES + 1];
        assert_eq!(parse(&big).unwrap_err().0.field, "$");
    }

    /// Every size limit of the incident contract (schemas/incident.v1.json) at its edge and one
    /// past it, with the numbers written out: a change to a limit is a change to the contract.
    #[test]
    fn every_limit_holds_at_its_edge_and_one_past_it() {
        let with = |extra: &str| format!(r#"{{"id":"a","root_cause":"x","confidence":0.5,"service":"a"{extra}}}"#);
        // The whole payload: 256 KiB accepted (padded with whitespace), one byte more rejected.
        let base = with("");
        let mut padded = base.clone().into_bytes();
        padded.resize(262_144, b' ');
        assert!(parse(&padded).is_ok(), "262144 bytes are accepted");
        padded.push(b' ');
        let (r, _) = parse(&padded).unwrap_err();
        assert_eq!(r.field, "$");
        assert_eq!(r.message, "payload of 262145 bytes exceeds the 262144-byte limit");
        // id: 128 characters.
        let id = |n: usize| {
            format!(
                r#"{{"id":"{}","root_cause":"x","confidence":0.5,"service":"a"}}"#,
                "é".repeat(n)
            )
        };
        assert!(parse(id(128).as_bytes()).is_ok());
        assert_eq!(rejected(&id(129)).field, "id");
        // Free text (root cause, service, context values): 1024 characters.
        let rc = |n: usize| {
            format!(
                r#"{{"id":"a","root_cause":"{}","confidence":0.5,"service":"a"}}"#,
                "é".repeat(n)
            )
        };
        assert!(parse(rc(1024).as_bytes()).is_ok());
        assert_eq!(rejected(&rc(1025)).field, "root_cause");
        let ctx_value = |n: usize| with(&format!(r#","context":{{"k":"{}"}}"#, "é".repeat(n)));
        assert!(parse(ctx_value(1024).as_bytes()).is_ok());
        let r = rejected(&ctx_value(1025));
        assert_eq!(
            (r.field.as_str(), r.message.as_str()),
            ("context.k", "must be at most 1024 characters, got 1025")
        );
        // Context keys: 128 characters.
        let ctx_key = |n: usize| with(&format!(r#","context":{{"{}":"v"}}"#, "k".repeat(n)));
        assert!(parse(ctx_key(128).as_bytes()).is_ok());
        assert!(rejected(&ctx_key(129)).field.starts_with("context.kkk"));
        // Lists and maps: 64 entries.
        let entries = |n: usize| (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect::<Vec<_>>().join(",");
        assert_eq!(
            parse(with(&format!(r#","context":{{{}}}"#, entries(64))).as_bytes())
                .unwrap()
                .context
                .len(),
            64
        );
        let r = rejected(&with(&format!(r#","context":{{{}}}"#, entries(65))));
        assert_eq!(
            (r.field.as_str(), r.message.as_str()),
            ("context", "has 65 entries, at most 64 allowed")
        );
        let items = |n: usize| (0..n).map(|i| format!(r#""s{i}""#)).collect::<Vec<_>>().join(",");
        assert_eq!(
            parse(with(&format!(r#","symptoms":[{}]"#, items(64))).as_bytes())
                .unwrap()
                .symptoms
                .len(),
            64
        );
        let r = rejected(&with(&format!(r#","symptoms":[{}]"#, items(65))));
        assert_eq!(
            (r.field.as_str(), r.message.as_str()),
            ("symptoms", "has 65 items, at most 64 allowed")
        );
        let services = |n: usize| {
            format!(
                r#"{{"id":"a","root_cause":"x","confidence":0.5,"services":[{}]}}"#,
                items(n)
            )
        };
        assert_eq!(parse(services(64).as_bytes()).unwrap().services.len(), 64);
        assert_eq!(rejected(&services(65)).field, "services");
    }

    /// Each rejection names the field and says what is wrong, word for word.
    #[test]
    fn rejections_say_what_is_wrong_word_for_word() {
        let cases = [
            (
                r#"{"id":"","root_cause":"x","confidence":0.5,"service":"a"}"#,
                "id",
                "must not be empty",
            ),
            (
                r#"{"id":"a\u0001","root_cause":"x","confidence":0.5,"service":"a"}"#,
                "id",
                "must not contain control characters",
            ),
            (
                r#"{"id":7,"root_cause":"x","confidence":0.5,"service":"a"}"#,
                "id",
                "must be a string, got number",
            ),
            (
                r#"{"root_cause":"x","confidence":0.5,"service":"a"}"#,
                "id",
                "is required",
            ),
            (
                r#"{"id":"a","root_cause":null,"confidence":0.5,"service":"a"}"#,
                "root_cause",
                "is required",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"services":"a"}"#,
                "services",
                "must be an array of strings, got string",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"services":[]}"#,
                "services",
                "must list at least one service",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"services":["a"],"service":"b"}"#,
                "service",
                r#""b" disagrees with services[0] "a""#,
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"services":["a",true]}"#,
                "services[1]",
                "must be a string, got boolean",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"k":{}}}"#,
                "context.k",
                "must be a string, number or boolean, got object",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"k":[1]}}"#,
                "context.k",
                "must be a string, number or boolean, got array",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"k":null}}"#,
                "context.k",
                "must be a string, number or boolean, got null",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":[]}"#,
                "context",
                "must be an object, got array",
            ),
        ];
        for (json, field, message) in cases {
            let r = rejected(json);
            assert_eq!((r.field.as_str(), r.message.as_str()), (field, message), "{json}");
        }
        // A services list, or a single service, agreeing with its first entry.
        let i = parse(br#"{"id":"a","root_cause":"x","confidence":0.5,"services":["a","b"],"service":"a"}"#).unwrap();
        assert_eq!((i.service(), i.services.len()), ("a", 2));
        // Context values keep their JSON text.
        let i = parse(br#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"n":3,"f":0.25,"b":false,"s":"v"}}"#).unwrap();
        let shown: Vec<String> = i.context.values().map(ToString::to_string).collect();
        assert_eq!(shown, ["false", "0.25", "3", "v"]);
    }

    /// What a rejected incident still tells (for the outcome and the dead-letter headers): its id
    /// and service when they are themselves valid, never an invalid one.
    #[test]
    fn a_rejection_keeps_only_valid_identity() {
        let partial = |json: &str| parse(json.as_bytes()).unwrap_err().1;
        let p = partial(r#"{"id":"INC1","root_cause":"OOM","confidence":2,"services":["api","web"],"service":"x"}"#);
        assert_eq!(
            (p.id.as_deref(), p.service.as_deref(), p.root_cause.as_deref()),
            (Some("INC1"), Some("api"), Some("OOM"))
        );
        let p = partial(r#"{"id":"INC1","root_cause":"OOM","confidence":2,"service":"web"}"#);
        assert_eq!(p.service.as_deref(), Some("web"));
        let long = "x".repeat(129);
        let p = partial(&format!(
            r#"{{"id":"{long}","root_cause":"","confidence":2,"services":[""],"service":"a\u0002"}}"#
        ));
        assert_eq!((p.id, p.service, p.root_cause), (None, None, None));
        assert_eq!(shorten(&"s".repeat(64)), "s".repeat(64));
        assert_eq!(shorten(&"s".repeat(65)), format!("{}…", "s".repeat(64)));
    }

    /// `null` means absent, for every optional field: `services: null` falls back to `service`,
    /// and with neither the incident is rejected naming `services`.
    #[test]
    fn null_means_absent() {
        let i = parse(br#"{"id":"a","root_cause":"x","confidence":0.5,"services":null,"service":"api","symptoms":null,"context":null}"#).unwrap();
        assert_eq!(i.services, vec!["api".to_string()]);
        assert!(i.symptoms.is_empty() && i.context.is_empty());
        for json in [
            r#"{"id":"a","root_cause":"x","confidence":0.5,"services":null}"#,
            r#"{"id":"a","root_cause":"x","confidence":0.5,"services":null,"service":null}"#,
            r#"{"id":"a","root_cause":"x","confidence":0.5}"#,
        ] {
            let r = rejected(json);
            assert_eq!(
                (r.field.as_str(), r.message.as_str()),
                ("services", "is required (or give a single `service`)"),
                "{json}"
            );
        }
        // An explicit list wins over a null single service.
        let i = parse(br#"{"id":"a","root_cause":"x","confidence":0.5,"services":["web"],"service":null}"#).unwrap();
        assert_eq!(i.services, vec!["web".to_string()]);
    }

    #[test]
    fn partial_keeps_the_id_of_a_rejected_incident() {
        let (_, p) = parse(br#"{"id":"INC9","root_cause":"x","confidence":7,"services":["svc"]}"#).unwrap_err();
        assert_eq!(p.id.as_deref(), Some("INC9"));
        assert_eq!(p.service.as_deref(), Some("svc"));
    }

    #[test]
    fn repeated_keys_are_rejected_with_their_path() {
        // Last-wins would act on 0.95; a first-wins reader upstream saw 0.1.
        let cases = [
            (
                r#"{"id":"a","root_cause":"x","confidence":0.1,"confidence":0.95,"service":"a"}"#,
                "confidence",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.9,"service":"a","context":{"pod_name":"p","pod_name":"q"}}"#,
                "context.pod_name",
            ),
            (
                r#"{"id":"a","root_cause":"x","confidence":0.9,"services":["a"],"extra":[{"k":1},{"k":1,"k":2}]}"#,
                "extra[1].k",
            ),
            // Found by `cargo fuzz` (fuzz/fuzz_targets/incident_parse.rs): an empty key repeated.
            (r#"{"kd":"Iffk","":0.95,"skd":"Iffk","":0.95,"ervice":"er"}"#, r#""""#),
            (r#"{"id":"a","context":{"":1,"":2}}"#, r#"context."""#),
        ];
        for (json, field) in cases {
            let r = rejected(json);
            assert_eq!(r.field, field, "{json}");
            assert!(r.message.contains("more than once"), "{r}");
        }
        let (r, p) = parse(br#"{"id":"a","id":"b","root_cause":"x","confidence":0.9,"service":"s"}"#).unwrap_err();
        assert_eq!(r.field, "id");
        assert_eq!(p.id, None, "an ambiguous id names no incident");
        // The same key in different objects is not a repetition.
        parse(br#"{"id":"a","root_cause":"x","confidence":0.9,"service":"s","context":{"id":"b"}}"#).unwrap();
    }

    #[test]
    fn too_long_id_is_rejected() {
        let json = format!(
            r#"{{"id":"{}","root_cause":"x","confidence":0.5,"service":"a"}}"#,
            "x".repeat(129)
        );
        let r = rejected(&json);
        assert_eq!(r.field, "id");
        assert!(r.message.contains("at most 128"), "{r}");
    }

    #[test]
    fn context_strings_say_what_is_wrong_with_them() {
        let r =
            rejected(r#"{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{"pod_name":"p\u0007"}}"#);
        assert_eq!(r.field, "context.pod_name");
        assert!(r.message.contains("control characters"), "{r}");
        let long = format!(
            r#"{{"id":"a","root_cause":"x","confidence":0.5,"service":"a","context":{{"k":"{}"}}}}"#,
            "y".repeat(MAX_TEXT_CHARS + 1)
        );
        let r = rejected(&long);
        assert_eq!(r.field, "context.k");
        assert!(r.message.contains(&format!("got {}", MAX_TEXT_CHARS + 1)), "{r}");
    }
}
