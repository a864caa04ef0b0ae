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

    /// One step from the document's root towards the value being walked.
    enum Step {
        Key(String),
        Index(usize),
    }
    /// The walk keeps the steps to where it is and writes a path only for the key it finds
    /// repeated (most documents have none; it used to format one for every key and element).
    #[derive(Clone, Copy)]
    struct Walk<'a> {
        steps: &'a RefCell<Vec<Step>>,
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
            for i in 0.. {
                self.steps.borrow_mut().push(Step::Index(i));
                let more = seq.next_element_seed(self)?.is_some();
                self.steps.borrow_mut().pop();
                if !more {
                    break;
                }
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if seen.contains(&key) {
                    *self.found.borrow_mut() = Some(path_to(&self.steps.borrow(), &key));
                    return Err(A::Error::custom("duplicate key"));
                }
                self.steps.borrow_mut().push(Step::Key(key));
                map.next_value_seed(self)?;
                if let Some(Step::Key(key)) = self.steps.borrow_mut().pop() {
                    seen.insert(key);
                }
            }
            Ok(())
        }
    }
    /// `confidence`, `context.pod_name`, `services[1].x`: the steps, then the repeated key.
    fn path_to(steps: &[Step], key: &str) -> String {
        // An empty key still needs a visible name in the path.
        let name = |k: &str| if k.is_empty() { "\"\"".to_owned() } else { shorten(k) };
        let mut path = String::new();
        for step in steps {
            match step {
                Step::Key(k) if path.is_empty() => path.push_str(&name(k)),
                Step::Key(k) => path.push_str(&format!(".{}", name(k))),
                Step::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&name(key));
        path
    }

    let (steps, found) = (RefCell::new(Vec::new()), RefCell::new(None));
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let _ = Walk {
        steps: &steps,
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
mod tests;
