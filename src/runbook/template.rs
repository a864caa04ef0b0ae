//! Action templates: `{pod_name}`-style placeholders filled from `incident.context`.
//!
//! The set of variables is closed and each has a kind with its own validation, so a template
//! that names an unknown variable fails at load time and a value that is not a valid Kubernetes
//! name or number fails before any API call. Every rendered value is also restricted to a safe
//! character set, so nothing event-derived can smuggle a path, a flag or a query into an action.

use crate::incident::{ContextValue, Incident};
use std::collections::BTreeMap;
use std::fmt;

/// How a variable's value is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarKind {
    /// RFC 1123 DNS label: namespaces, services, containers (<= 63 chars).
    Label,
    /// RFC 1123 DNS subdomain: pods, deployments (<= 253 chars).
    Subdomain,
    /// Non-negative integer replica count (<= 10000).
    Count,
    /// Non-negative decimal (loads).
    Decimal,
    /// Identifier text: `[A-Za-z0-9._:-]`, 1..128 chars (incident id, root cause).
    Token,
}

/// Every variable a template may use: name, kind, and where its value comes from. There is no
/// `max_replicas`: a scale's cap comes from the runbook, never from the incident.
pub const VARIABLES: &[(&str, VarKind)] = &[
    ("pod_name", VarKind::Subdomain),
    ("namespace", VarKind::Label),
    ("deployment", VarKind::Subdomain),
    ("container", VarKind::Label),
    ("node", VarKind::Subdomain),
    ("service", VarKind::Label),
    ("new_replicas", VarKind::Count),
    ("old_replicas", VarKind::Count),
    ("replicas", VarKind::Count),
    ("predicted_load", VarKind::Decimal),
    ("current_load", VarKind::Decimal),
    ("incident_id", VarKind::Token),
    ("root_cause", VarKind::Token),
];

/// Look up a variable's kind.
pub fn var_kind(name: &str) -> Option<VarKind> {
    VARIABLES.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Var(&'static str),
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    raw: String,
    parts: Vec<Part>,
}

/// A value that could not be rendered: which variable and why. Aborts the action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("context.{var}: {message}")]
pub struct RenderError {
    /// Variable name.
    pub var: String,
    /// What is wrong.
    pub message: String,
}

impl Template {
    /// Parse `text`. `{identifier}` is a variable and must be a known one; any other brace is
    /// literal, so PromQL selectors such as `up{job="{service}"}` need no escaping.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            lit.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let ident_len = after
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                .count();
            let is_var = ident_len > 0
                && after.as_bytes().get(ident_len) == Some(&b'}')
                && !after.as_bytes()[0].is_ascii_digit();
            if !is_var {
                lit.push('{');
                rest = after;
                continue;
            }
            let name = &after[..ident_len];
            let known = VARIABLES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(n, _)| *n)
                .ok_or_else(|| {
                    let names: Vec<&str> = VARIABLES.iter().map(|(n, _)| *n).collect();
                    format!("unknown template variable {{{name}}} (known: {})", names.join(", "))
                })?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(known));
            rest = &after[ident_len + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self {
            raw: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Variables used, in order.
    pub fn variables(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(*v),
            Part::Lit(_) => None,
        })
    }

    /// A template that is exactly one variable (`{deployment}`), if it is one.
    pub fn single_var(&self) -> Option<&'static str> {
        match self.parts.as_slice() {
            [Part::Var(v)] => Some(v),
            _ => None,
        }
    }

    /// Fill in the variables from `vars`, validating each value by its kind.
    pub fn render(&self, vars: &Vars) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.raw.len());
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(name) => out.push_str(&vars.get(name)?),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// The values templates draw from: the incident's context, its identity, and values captured
/// while acting (e.g. `old_replicas` read from the cluster before scaling), which win.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, String>,
    /// Names whose value an action captured from the cluster (not the incident's).
    captured: std::collections::BTreeSet<String>,
}

impl Vars {
    /// Values of an incident: its `context` plus `service`, `incident_id` and `root_cause`.
    pub fn from_incident(incident: &Incident) -> Self {
        let mut values: BTreeMap<String, String> = incident
            .context
            .iter()
            .map(|(k, v)| (k.clone(), context_string(v)))
            .collect();
        values.insert("service".into(), incident.service().to_string());
        values.insert("incident_id".into(), incident.id.clone());
        values.insert("root_cause".into(), incident.root_cause.clone());
        Self {
            values,
            captured: Default::default(),
        }
    }

    /// Set (or override) one value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values.insert(name.to_string(), value.into());
        self.captured.remove(name);
    }

    /// Set a value an action captured from the live object (`old_replicas`): it overrides the
    /// incident's, and only such a value can feed a `restore` scale.
    pub fn capture(&mut self, name: &str, value: impl Into<String>) {
        self.set(name, value);
        self.captured.insert(name.to_string());
    }

    /// A validated integer that an action captured (never one from the incident).
    pub fn captured_count(&self, name: &str) -> Result<u32, RenderError> {
        if !self.captured.contains(name) {
            return Err(RenderError {
                var: name.into(),
                message: "was not captured from the cluster by the action; a restore never uses the incident's value"
                    .into(),
            });
        }
        self.count(name)
    }

    /// Is a value present (validity aside)?
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// A validated value.
    pub fn get(&self, name: &str) -> Result<String, RenderError> {
        let err = |message: String| RenderError {
            var: name.to_string(),
            message,
        };
        let value = self
            .values
            .get(name)
            .ok_or_else(|| err("is missing from the incident context".into()))?;
        let kind = var_kind(name).ok_or_else(|| err("is not a template variable".into()))?;
        validate(kind, value).map_err(|m| err(format!("{m}, got {:?}", crate::incident::shorten(value))))?;
        Ok(value.clone())
    }

    /// A validated integer value.
    pub fn count(&self, name: &str) -> Result<u32, RenderError> {
        let v = self.get(name)?;
        v.parse().map_err(|_| RenderError {
            var: name.into(),
            message: format!("must be an integer, got {v:?}"),
        })
    }

    /// A validated decimal value.
    pub fn decimal(&self, name: &str) -> Result<f64, RenderError> {
        let v = self.get(name)?;
        v.parse().map_err(|_| RenderError {
            var: name.into(),
            message: format!("must be a number, got {v:?}"),
        })
    }
}

fn context_string(v: &ContextValue) -> String {
    v.to_string()
}

/// Validate one value against its kind.
pub fn validate(kind: VarKind, v: &str) -> Result<(), String> {
    match kind {
        VarKind::Label => rfc1123(v, 63, false),
        VarKind::Subdomain => rfc1123(v, 253, true),
        VarKind::Count => match v.parse::<u32>() {
            Ok(n) if n <= 10_000 && !v.starts_with('+') => Ok(()),
            _ => Err("must be an integer between 0 and 10000".into()),
        },
        VarKind::Decimal => match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') => Ok(()),
            _ => Err("must be a non-negative decimal number".into()),
        },
        VarKind::Token => {
            if !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
            {
                Ok(())
            } else {
                Err("must be 1..128 characters of [A-Za-z0-9._:-]".into())
            }
        }
    }
}

/// RFC 1123 label (`dots = false`) or subdomain (`dots = true`).
fn rfc1123(v: &str, max: usize, dots: bool) -> Result<(), String> {
    let what = if dots {
        "an RFC 1123 subdomain"
    } else {
        "an RFC 1123 label"
    };
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = !v.is_empty() && v.len() <= max && if dots { v.split('.').all(ok_label) } else { ok_label(v) };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be {what} (lowercase letters, digits, '-'{}; at most {max} characters)",
            if dots { ", '.'" } else { "" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        let mut v = Vars::default();
        for (k, val) in pairs {
            v.set(k, *val);
        }
        v
    }

    #[test]
    fn renders_known_variables() {
        let t = Template::parse("pod/{pod_name} in {namespace}").unwrap();
        let out = t
            .render(&vars(&[("pod_name", "api-1"), ("namespace", "prod")]))
            .unwrap();
        assert_eq!(out, "pod/api-1 in prod");
    }

    #[test]
    fn unknown_variables_fail_to_parse_and_other_braces_are_literal() {
        assert!(Template::parse("{podname}")
            .unwrap_err()
            .contains("unknown template variable {podname}"));
        let q = Template::parse(r#"rate(errors{service="{service}"}[5m])"#).unwrap();
        assert_eq!(q.variables().collect::<Vec<_>>(), vec!["service"]);
        assert_eq!(
            q.render(&vars(&[("service", "api")])).unwrap(),
            r#"rate(errors{service="api"}[5m])"#
        );
        assert_eq!(Template::parse("{pod-name}").unwrap().variables().count(), 0);
    }

    #[test]
    fn hostile_values_are_refused() {
        let t = Template::parse("{pod_name}").unwrap();
        for bad in [
            "api; rm -rf /",
            "../../etc/passwd",
            "API",
            "a b",
            "-a",
            "$(id)",
            "a\u{e9}",
            &"a".repeat(254),
        ] {
            let e = t.render(&vars(&[("pod_name", bad)])).unwrap_err();
            assert_eq!(e.var, "pod_name", "{bad}");
        }
        let n = Template::parse("{namespace}").unwrap();
        assert!(
            n.render(&vars(&[("namespace", "a.b")])).is_err(),
            "namespaces have no dots"
        );
        let c = Template::parse("{new_replicas}").unwrap();
        for bad in ["-1", "1e3", "10001", "+1", "five"] {
            assert!(c.render(&vars(&[("new_replicas", bad)])).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_value_names_the_variable() {
        let e = Template::parse("{deployment}")
            .unwrap()
            .render(&Vars::default())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "context.deployment: is missing from the incident context"
        );
    }

    /// Every kind of value at its edges and one past them: what may reach an action from an
    /// incident is exactly what these rules admit.
    #[test]
    fn every_value_kind_holds_at_its_edges() {
        let label = "must be an RFC 1123 label (lowercase letters, digits, '-'; at most 63 characters)";
        let subdomain = "must be an RFC 1123 subdomain (lowercase letters, digits, '-', '.'; at most 253 characters)";
        let l63 = "a".repeat(63);
        for ok in ["a", "0", "a-b", "a1-2b", l63.as_str()] {
            assert_eq!(validate(VarKind::Label, ok), Ok(()), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", "a b", "é", &"a".repeat(64)] {
            assert_eq!(validate(VarKind::Label, bad), Err(label.to_string()), "{bad:?}");
        }
        // 253 characters (three labels of 63, one of 59, one of 1, and the dots): the longest name.
        let s253 = format!("{l63}.{l63}.{l63}.{}.a", "a".repeat(59));
        assert_eq!(s253.len(), 253);
        for ok in ["a", "a.b", "api-0.web", l63.as_str(), s253.as_str()] {
            assert_eq!(validate(VarKind::Subdomain, ok), Ok(()), "{ok}");
        }
        let s254 = format!("a{s253}");
        let long_label = format!("{}.a", "a".repeat(64));
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a-.b",
            "a.-b",
            "A.b",
            "a/b",
            s254.as_str(),
            long_label.as_str(),
        ] {
            assert_eq!(validate(VarKind::Subdomain, bad), Err(subdomain.to_string()), "{bad:?}");
        }
        for ok in ["0", "1", "10000"] {
            assert_eq!(validate(VarKind::Count, ok), Ok(()), "{ok}");
        }
        for bad in ["10001", "+5", "-1", "1.5", " 5", "", "0x10", "4294967296"] {
            assert_eq!(
                validate(VarKind::Count, bad),
                Err("must be an integer between 0 and 10000".to_string()),
                "{bad:?}"
            );
        }
        for ok in ["0", "0.5", "12", "1000000.25"] {
            assert_eq!(validate(VarKind::Decimal, ok), Ok(()), "{ok}");
        }
        for bad in ["-0.5", "+1", "1e3", "inf", "NaN", "", ".", " 1"] {
            assert_eq!(
                validate(VarKind::Decimal, bad),
                Err("must be a non-negative decimal number".to_string()),
                "{bad:?}"
            );
        }
        let t128 = "t".repeat(128);
        for ok in ["a", "INC-42", "a.b_c:d-e", t128.as_str()] {
            assert_eq!(validate(VarKind::Token, ok), Ok(()), "{ok}");
        }
        for bad in ["", "a/b", "a b", "a;b", "é", &"t".repeat(129)] {
            assert_eq!(
                validate(VarKind::Token, bad),
                Err("must be 1..128 characters of [A-Za-z0-9._:-]".to_string()),
                "{bad:?}"
            );
        }
    }

    /// What is a variable: `{` + a known lowercase identifier not starting with a digit + `}`.
    /// Everything else is literal text, kept byte for byte.
    #[test]
    fn templates_split_into_literals_and_variables() {
        let t = Template::parse("x{service}{namespace}-{pod_name}y").unwrap();
        assert_eq!(
            t.variables().collect::<Vec<_>>(),
            vec!["service", "namespace", "pod_name"]
        );
        assert_eq!(t.raw(), "x{service}{namespace}-{pod_name}y");
        assert_eq!(t.to_string(), t.raw());
        assert_eq!(t.single_var(), None);
        let v = vars(&[("service", "api"), ("namespace", "prod"), ("pod_name", "api-0")]);
        assert_eq!(t.render(&v).unwrap(), "xapiprod-api-0y");
        assert_eq!(
            Template::parse("{deployment}").unwrap().single_var(),
            Some("deployment")
        );
        assert_eq!(Template::parse("{deployment} ").unwrap().single_var(), None);
        for literal in ["{}", "{0service}", "{service", "service}", "{Service}", "{{", "a{b}c{"] {
            let t = Template::parse(literal);
            if literal == "a{b}c{" {
                assert!(t
                    .unwrap_err()
                    .starts_with("unknown template variable {b} (known: pod_name, namespace,"));
                continue;
            }
            let t = t.unwrap();
            assert_eq!(t.variables().count(), 0, "{literal}");
            assert_eq!(t.render(&Vars::default()).unwrap(), literal);
        }
    }

    /// Only a value an action captured from the cluster feeds a restore; setting it again from
    /// anywhere else makes it the incident's value once more.
    #[test]
    fn captured_values_are_told_apart_from_the_incidents() {
        let mut v = vars(&[("old_replicas", "3")]);
        assert!(v.has("old_replicas") && !v.has("replicas"));
        assert_eq!(v.count("old_replicas"), Ok(3));
        let e = v.captured_count("old_replicas").unwrap_err();
        assert_eq!(
            e.to_string(),
            "context.old_replicas: was not captured from the cluster by the action; a restore never uses the incident's value"
        );
        v.capture("old_replicas", "5");
        assert_eq!(v.captured_count("old_replicas"), Ok(5));
        v.set("old_replicas", "7");
        assert!(v.captured_count("old_replicas").is_err());
        assert_eq!(v.count("old_replicas"), Ok(7));
        let v = vars(&[("predicted_load", "2.5"), ("new_replicas", "x")]);
        assert_eq!(v.decimal("predicted_load"), Ok(2.5));
        assert_eq!(
            v.count("new_replicas").unwrap_err().to_string(),
            r#"context.new_replicas: must be an integer between 0 and 10000, got "x""#
        );
        assert_eq!(
            v.get("replicas").unwrap_err().to_string(),
            "context.replicas: is missing from the incident context"
        );
    }
}
