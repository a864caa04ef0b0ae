//! The located errors of a runbook file: one [`LoadError`] per problem, with the file, runbook id,
//! key path and `line:column`, printed like a compiler's; [`LoadErrors`] for all of a file's
//! problems at once. Positions are found after the whole file is checked ([`locate`]), so the
//! rules that report a problem only need to name its key.

use crate::yaml::{Pos, Value};
use std::fmt;

/// One problem in a runbook file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// File it was found in.
    pub file: String,
    /// Runbook id, when the problem is inside one.
    pub runbook: Option<String>,
    /// Key path inside the runbook (`pre_checks[1].timeout_seconds`).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Where in the file (the offending value, or the key for an unknown key; a missing key is
    /// placed at its runbook's id). `None` only when the problem has no place (an unreadable
    /// file, an empty document).
    pub at: Option<Pos>,
}

impl LoadError {
    /// A problem under `key` of `runbook`; its position is filled in once the whole file has been
    /// checked (`parse_catalogue`).
    pub(in crate::runbook) fn at(file: &str, runbook: &str, key: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            runbook: Some(runbook.into()),
            key: Some(key.into()),
            message: message.into(),
            at: None,
        }
    }
}

impl fmt::Display for LoadError {
    /// `file:line:column: runbook "id": key: message`, like a compiler.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(at) = self.at {
            write!(f, ":{at}")?;
        }
        if let Some(r) = &self.runbook {
            write!(f, ": runbook {r:?}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": {k}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
/// Where the problem under `key` (`pre_checks[1].timeout_seconds`) of a runbook lies: the value
/// at that path, or the deepest part of the path the file has (so a missing key points at the
/// mapping that lacks it); `id_at` (the runbook's id) when none. (An unknown key is located at
/// the key itself by `Parser::unknown_keys`, which knows it.)
pub(super) fn locate(body: &Value, id_at: Option<Pos>, key: &str) -> Option<Pos> {
    let mut cur = body;
    let mut at = id_at;
    for part in key.split('.') {
        let mut pieces = part.split('[');
        let name = pieces.next().unwrap_or_default();
        let Value::Mapping(m) = cur else { return at };
        let Some(entry) = m.entry(name) else { return at };
        at = entry.value_at.or(at);
        cur = &entry.value;
        for index in pieces {
            let Some(i) = index.strip_suffix(']').and_then(|i| i.parse::<usize>().ok()) else {
                return at;
            };
            let Value::Sequence(items) = cur else { return at };
            let Some(item) = items.get(i) else { return at };
            at = items.pos(i).or(at);
            cur = item;
        }
    }
    at
}
