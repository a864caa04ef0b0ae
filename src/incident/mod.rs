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
    let (value, repeated) =
        read_document(bytes).map_err(|e| (Rejection::new("$", format!("not valid JSON: {e}")), Partial::default()))?;
    let Value::Object(obj) = value else {
        return Err((
            Rejection::new("$", format!("must be a JSON object, got {}", kind(&value))),
            Partial::default(),
        ));
    };
    if let Some(path) = repeated {
        let mut partial = peek(&obj);
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
    // What could be read is only needed when the incident is rejected.
    from_object(&obj).map_err(|r| (r, peek(&obj)))
}

/// The document as a `Value` (what `serde_json::from_slice` gives: a repeated key keeps its
/// last value), and the path (`confidence`, `context.pod_name`, `services[1].x`) of the first
/// key an object repeats, in document order. One pass: the repetition is noticed while the
/// objects are built.
///
/// JSON leaves repeated keys undefined: serde_json keeps the last value, many parsers the first.
/// `{"confidence":0.1,"confidence":0.95}` or two `id`s would mean one thing to the pipeline that
/// produced or screened the incident and another to this worker, so such an incident is
/// rejected rather than acted on.
fn read_document(bytes: &[u8]) -> Result<(Value, Option<String>), serde_json::Error> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    /// One step from the document's root towards the repeated key.
    enum Step {
        Key(String),
        Index(usize),
    }
    /// The first repetition: the steps from it back to the root (innermost first). Each
    /// ancestor adds its own step when the child in which the repetition was found returns.
    #[derive(Default)]
    struct Repeated {
        found: bool,
        steps: Vec<Step>,
    }
    #[derive(Clone, Copy)]
    struct Build<'a>(&'a RefCell<Repeated>);
    impl Build<'_> {
        fn found(self) -> bool {
            self.0.borrow().found
        }
        /// After a child value: if the repetition was found inside it, record the way to it.
        fn after_child(self, before: bool, step: impl FnOnce() -> Step) {
            if !before && self.found() {
                self.0.borrow_mut().steps.push(step());
            }
        }
    }
    impl<'de> DeserializeSeed<'de> for Build<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Build<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
            Ok(Value::Bool(b))
        }
        fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
            Ok(Value::Number(n.into()))
        }
        fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
            Ok(Value::Number(n.into()))
        }
        fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
            // As serde_json's own `Value` does (JSON text cannot spell a non-finite number).
            Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, s: &str) -> Result<Value, E> {
            Ok(Value::String(s.to_owned()))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_ITEMS));
            loop {
                let before = self.found();
                let Some(item) = seq.next_element_seed(self)? else {
                    break;
                };
                let i = items.len();
                self.after_child(before, || Step::Index(i));
                items.push(item);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut object = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                // Noticed on reading the key, before its value, as a reader would.
                if !self.found() && object.contains_key(&key) {
                    let mut r = self.0.borrow_mut();
                    r.found = true;
                    r.steps.push(Step::Key(key.clone()));
                }
                let before = self.found();
                let value = map.next_value_seed(self)?;
                self.after_child(before, || Step::Key(key.clone()));
                object.insert(key, value);
            }
            Ok(Value::Object(object))
        }
    }

    /// `confidence`, `context.pod_name`, `services[1].x`, from the steps, innermost first.
    fn path_to(steps: &[Step]) -> String {
        // An empty key still needs a visible name in the path.
        let name = |k: &str| if k.is_empty() { "\"\"".to_owned() } else { shorten(k) };
        let mut path = String::new();
        for step in steps.iter().rev() {
            match step {
                Step::Key(k) if path.is_empty() => path.push_str(&name(k)),
                Step::Key(k) => {
                    path.push('.');
                    path.push_str(&name(k));
                }
                Step::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        path
    }

    let repeated = RefCell::new(Repeated::default());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Build(&repeated).deserialize(&mut de)?;
    de.end()?;
    let Repeated { found, steps } = repeated.into_inner();
    Ok((value, found.then(|| path_to(&steps))))
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
                // Named only when something is wrong with it.
                let field = || format!("context.{}", shorten(k));
                if !valid_text(k, 128) {
                    return Err(Rejection::new(field(), "key must be 1..128 printable characters"));
                }
                let cv = match v {
                    Value::String(s) => {
                        let n = s.chars().count();
                        if n > MAX_TEXT_CHARS {
                            return Err(Rejection::new(
                                field(),
                                format!("must be at most {MAX_TEXT_CHARS} characters, got {n}"),
                            ));
                        }
                        if s.chars().any(char::is_control) {
                            return Err(Rejection::new(field(), "must not contain control characters"));
                        }
                        ContextValue::Str(s.clone())
                    }
                    Value::Number(n) => {
                        if n.as_f64().is_none_or(|f| !f.is_finite()) {
                            return Err(Rejection::new(field(), "must be a finite number"));
                        }
                        ContextValue::Num(n.clone())
                    }
                    Value::Bool(b) => ContextValue::Bool(*b),
                    other => {
                        return Err(Rejection::new(
                            field(),
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
