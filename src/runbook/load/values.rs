//! Reading one YAML value as what a runbook key expects (a non-empty string, a list of strings,
//! a number or integer in range, a template, JSON for patches and bodies). Each reader reports a
//! wrong value at its key and returns `None`, so the walk goes on and finds every problem.

use super::{LoadError, Parser};
use crate::runbook::template::Template;
use crate::yaml::{Mapping, Value};

pub(super) fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Sequence(_) | Value::Mapping(_) => "?".into(),
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
    }
}
impl Parser<'_> {
    pub(super) fn err(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(LoadError::at(self.file, self.runbook, key, message));
    }

    /// Report keys of `m` not in `allowed`, each at the key itself.
    pub(super) fn unknown_keys(&mut self, m: &Mapping, allowed: &[&str], path: &str) {
        for e in m.entries() {
            let name = key_name(&e.key);
            if !allowed.contains(&name.as_str()) {
                let at = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                self.err(&at, format!("unknown key (allowed: {})", allowed.join(", ")));
                if let Some(last) = self.errors.last_mut() {
                    last.at = e.key_at;
                }
            }
        }
    }

    pub(super) fn string(&mut self, v: &Value, key: &str) -> Option<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => {
                self.err(key, "must not be empty");
                None
            }
            other => {
                self.err(key, format!("must be a string, got {}", type_name(other)));
                None
            }
        }
    }

    pub(super) fn strings(&mut self, v: Option<&Value>, key: &str) -> Vec<String> {
        match v {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, x)| self.string(x, &format!("{key}[{i}]")))
                .collect(),
            Some(other) => {
                self.err(key, format!("must be a list of strings, got {}", type_name(other)));
                Vec::new()
            }
        }
    }

    pub(super) fn number(&mut self, v: &Value, key: &str, min: f64, max: f64) -> Option<f64> {
        match v.as_f64() {
            Some(x) if x.is_finite() && (min..=max).contains(&x) => Some(x),
            Some(x) => {
                self.err(key, format!("must be between {min} and {max}, got {x}"));
                None
            }
            None => {
                self.err(key, format!("must be a number, got {}", type_name(v)));
                None
            }
        }
    }

    pub(super) fn integer(&mut self, v: &Value, key: &str, min: u64, max: u64) -> Option<u64> {
        match v.as_u64() {
            Some(x) if (min..=max).contains(&x) => Some(x),
            Some(x) => {
                self.err(key, format!("must be between {min} and {max}, got {x}"));
                None
            }
            None => {
                let shown = match v {
                    Value::Number(n) => format!("{n}"),
                    other => type_name(other).to_string(),
                };
                self.err(key, format!("must be an integer between {min} and {max}, got {shown}"));
                None
            }
        }
    }

    pub(super) fn template(&mut self, s: &str, key: &str) -> Option<Template> {
        Template::parse(s).map_err(|e| self.err(key, e)).ok()
    }
    /// Convert YAML to JSON, checking that string leaves are valid templates.
    pub(super) fn json(&mut self, v: &Value, key: &str) -> Option<serde_json::Value> {
        let json: serde_json::Value = match serde_json::to_value(v) {
            Ok(j) => j,
            Err(e) => {
                self.err(key, format!("is not representable as JSON: {e}"));
                return None;
            }
        };
        let mut ok = true;
        visit_strings(&json, &mut |s| {
            if let Err(e) = Template::parse(s) {
                ok = false;
                self.err(key, e);
            }
        });
        ok.then_some(json)
    }
}

fn visit_strings(v: &serde_json::Value, f: &mut dyn FnMut(&str)) {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| visit_strings(x, f)),
        serde_json::Value::Object(o) => o.values().for_each(|x| visit_strings(x, f)),
        _ => {}
    }
}

pub(super) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_string(),
    }
}
