//! Strict loading of `runbooks.yaml`, in the kubectl-style form and the richer native form
//! (docs/design.md#runbooks).
//!
//! Hand-written over a positioned YAML tree ([`crate::yaml`]) so that *every* problem in a file is
//! reported at once, each with `file:line:column`, the runbook id and the key: unknown keys,
//! unknown checks, unknown template variables, unsupported actions, out-of-range numbers,
//! duplicate triggers.
//!
//! Why not serde's derive (with serde-saphyr's `Spanned` and a validation layer): a derived
//! `Deserialize` stops at the first type error of a file (`max_per_hour: lots` hides every later
//! problem), and cannot say what this loader says: a rule spanning keys (a restore only in a
//! rollback, `rollback_checks` without a rollback, a HIGH-risk auto runbook without one), the
//! seed's kubectl strings parsed into typed actions, defaults that depend on other keys (a scale's
//! cap from its pre-check), and one message per problem in the words a runbook author reads. The
//! walk stays; the library gives it the parse, the limits and the positions.
//!
//! The loader by concern, one hop each:
//! * `error`: the located errors ([`LoadError`], [`LoadErrors`]) and how a key path is traced
//!   back to `line:column` once the whole file has been read;
//! * `values`: reading one YAML value as a string, number, integer, template or JSON, each
//!   problem reported at its key;
//! * `runbook`: one runbook's keys, their defaults, and the rules that span keys (risk, mode,
//!   rollback, trust, scaling);
//! * `rollout`: the `rollout:` policy (stages, evidence, canary shares);
//! * `checks`: the `pre_checks` / `post_checks` / `rollback_checks` lists;
//! * `actions`: an action or rollback in either form, the kubectl-style string
//!   ([`ActionSpec::from_kubectl_capped`](super::ActionSpec::from_kubectl_capped)) or the native
//!   `{kind: ...}` mapping with its replica rules.
//!
//! This file walks the top of the file and hands each runbook to a [`Parser`], which collects
//! every problem instead of stopping at the first.

mod actions;
mod checks;
mod error;
mod rollout;
mod runbook;
mod values;

pub use error::{LoadError, LoadErrors};

use super::Catalogue;
use crate::yaml::{Pos, Value};
use error::locate;
use values::key_name;

pub(super) fn parse_catalogue(text: &str, file: &str) -> Result<Catalogue, LoadErrors> {
    let top_err = |message: String, at: Option<Pos>| {
        LoadErrors(vec![LoadError {
            file: file.into(),
            runbook: None,
            key: None,
            message,
            at,
        }])
    };
    let doc = crate::yaml::parse(text).map_err(|e| top_err(format!("invalid YAML: {e}"), e.pos))?;
    let Value::Mapping(top) = doc else {
        return Err(top_err(
            "the top level must be a mapping with a `runbooks` key".into(),
            None,
        ));
    };
    let mut errors = Vec::new();
    for e in top.entries() {
        if e.key.as_str() != Some("runbooks") {
            errors.push(LoadError {
                file: file.into(),
                runbook: None,
                key: Some(key_name(&e.key)),
                message: "unknown top-level key (expected only `runbooks`)".into(),
                at: e.key_at,
            });
        }
    }
    let Some(Value::Mapping(books)) = top.get("runbooks") else {
        errors.push(LoadError {
            file: file.into(),
            runbook: None,
            key: Some("runbooks".into()),
            message: "must be a mapping of runbook id to runbook".into(),
            at: top.entry("runbooks").and_then(|e| e.value_at),
        });
        return Err(LoadErrors(errors));
    };
    let mut runbooks = Vec::new();
    for (id, body) in books {
        let id_str = key_name(id);
        let mut p = Parser {
            file,
            runbook: &id_str,
            errors: &mut errors,
        };
        if let Some(rb) = p.runbook(&id_str, body) {
            runbooks.push(rb);
        }
    }
    if runbooks.is_empty() && errors.is_empty() {
        errors.push(LoadError {
            file: file.into(),
            runbook: None,
            key: Some("runbooks".into()),
            message: "defines no runbooks".into(),
            at: top.entry("runbooks").and_then(|e| e.key_at),
        });
    }
    let result = if errors.is_empty() {
        Catalogue::build(runbooks, file)
    } else {
        Err(LoadErrors(errors))
    };
    result.map_err(|LoadErrors(mut errors)| {
        for e in &mut errors {
            if let (None, Some(id), Some(key)) = (e.at, &e.runbook, &e.key) {
                e.at = books
                    .entries()
                    .iter()
                    .find(|b| key_name(&b.key) == *id)
                    .and_then(|b| locate(&b.value, b.key_at, key));
            }
        }
        LoadErrors(errors)
    })
}

/// The walk over one runbook: every problem found goes to `errors`, tagged with the file and the
/// runbook id. Its methods live with their concern (`values`, `runbook`, `checks`, `actions`).
struct Parser<'a> {
    file: &'a str,
    runbook: &'a str,
    errors: &'a mut Vec<LoadError>,
}

#[cfg(test)]
mod tests;
