//! Loading: the layers (defaults, then the file, then the environment, then flags) meet in one
//! JSON tree that serde's derive turns into [`Config`]. The hand-written merge here gives what the
//! derive cannot: the layering, the refusal of unknown file keys and mistyped `REMEDIATOR_*`
//! variables, and the position of every file value, so a later problem still names
//! `file:line:column`.

use super::{invalid, secrets, Config, ConfigError, DEFAULT_PATH};
use crate::yaml::{self, Pos};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

impl Config {
    /// Load `path` (or the default path if it exists), apply environment overrides from `env`,
    /// and validate. `explicit` says the path was given by a flag, so a missing file is an error.
    pub fn load(
        path: Option<&Path>,
        env: &BTreeMap<String, String>,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let origin = path.display().to_string();
        // The layers meet in one JSON tree (defaults, then the file, then environment, then
        // flags) that serde's derive turns into `Config`. The derive gives types and unknown-key
        // refusal; the hand-written merge gives what it cannot: the layering, the refusal of a
        // file key the defaults lack with its position, and the position of every file value, so
        // a problem found later (a type, a rule in `validate`) still names `file:line:column`.
        let mut doc = defaults_tree()?;
        let mut at: BTreeMap<String, Pos> = BTreeMap::new();
        let file_doc = match std::fs::read_to_string(&path) {
            Ok(text) => Some(yaml::parse(&text).map_err(|e| invalid(located(&origin, e.pos), e.message))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
            Err(e) => return Err(ConfigError::Read { path, source: e }),
        };
        if let Some(file_doc) = file_doc {
            match file_doc {
                yaml::Value::Null => {}
                yaml::Value::Mapping(m) => merge(&mut doc, &m, "", &origin, &mut at)?,
                _ => return Err(invalid(&origin, "must be a mapping of config keys")),
            }
        }
        let keys = leaf_keys(&defaults_tree()?);
        let claimed = claimed_words(&keys);
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("REMEDIATOR_") else {
                continue;
            };
            let Some(path) = keys.iter().find(|k| env_name(k) == rest) else {
                // A variable whose first word is a section, a top-level key or a secret's claims
                // to configure the worker: if it is none of them, it is a typo. Other
                // REMEDIATOR_* variables belong to scripts (REMEDIATOR_CACHE, REMEDIATOR_TEST_...).
                if secrets::ALL.contains(&name.as_str()) {
                    continue;
                }
                if claimed.contains(rest.split('_').next().unwrap_or("")) {
                    return Err(invalid(name, "unknown configuration key"));
                }
                continue;
            };
            set_path(&mut doc, path, value, name)?;
            at.retain(|k, _| !within(k, path));
        }
        for (key, value) in overrides {
            set_path(&mut doc, key, value, &format!("--{}", key.replace(['.', '_'], "-")))?;
            at.retain(|k, _| !within(k, key));
        }
        // Where in the file the value at `key` (or the section holding it) was written, if it was.
        let file_pos = |key: &str| {
            let mut k = key;
            loop {
                if let Some(p) = at.get(k) {
                    return Some(*p);
                }
                k = &k[..k.rfind('.')?];
            }
        };
        let config: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            invalid(located(&origin, file_pos(&key)), format!("{key}: {}", e.inner()))
        })?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { origin: key, message } => match file_pos(&key) {
                Some(p) => invalid(format!("{origin}:{p}: {key}"), message),
                None => invalid(key, message),
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Every config key (dotted) with its environment variable, for docs and `--help`.
    pub fn keys() -> Vec<(String, String)> {
        let doc = defaults_tree().unwrap_or(Value::Null);
        leaf_keys(&doc)
            .into_iter()
            .map(|k| (k.clone(), format!("REMEDIATOR_{}", env_name(&k))))
            .collect()
    }
}

/// The defaults as a tree: the base layer of `Config::load`, and the list of keys.
fn defaults_tree() -> Result<Value, ConfigError> {
    serde_json::to_value(Config::default()).map_err(|e| invalid("defaults", e.to_string()))
}

/// `file` or `file:line:column`.
fn located(file: &str, pos: Option<Pos>) -> String {
    match pos {
        Some(p) => format!("{file}:{p}"),
        None => file.to_string(),
    }
}

/// Is dotted `key` the key `path` or inside it?
fn within(key: &str, path: &str) -> bool {
    key == path || key.strip_prefix(path).is_some_and(|rest| rest.starts_with('.'))
}

/// The first words of every variable the configuration owns: its sections, its top-level keys
/// (`DRY` of `DRY_RUN`) and its secrets (`APPROVAL`, `WEBHOOK`, ...).
fn claimed_words(keys: &[String]) -> std::collections::BTreeSet<String> {
    let first = |name: &str| name.split('_').next().unwrap_or("").to_string();
    keys.iter()
        .map(|k| first(&env_name(k)))
        .chain(secrets::ALL.iter().map(|s| first(s.trim_start_matches("REMEDIATOR_"))))
        .collect()
}

/// `kafka.brokers` -> `KAFKA_BROKERS`.
fn env_name(key: &str) -> String {
    key.replace('.', "_").to_ascii_uppercase()
}

fn leaf_keys(v: &Value) -> Vec<String> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) if !m.is_empty() || prefix.is_empty() => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.to_string()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(x, &p, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// Merge a file's mapping into the defaults, rejecting keys the defaults do not have; records in
/// `at` where each value taken from the file was written.
fn merge(
    base: &mut Value,
    file: &yaml::Mapping,
    prefix: &str,
    origin: &str,
    at: &mut BTreeMap<String, Pos>,
) -> Result<(), ConfigError> {
    let Value::Object(b) = base else {
        return Err(invalid(origin, format!("{prefix}: is not a section")));
    };
    for e in file.entries() {
        let key = e
            .key
            .as_str()
            .ok_or_else(|| invalid(located(origin, e.key_at), format!("{prefix}: keys must be strings")))?;
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(slot) = b.get_mut(key) else {
            return Err(invalid(located(origin, e.key_at), format!("{path}: unknown key")));
        };
        // Values only (a section's keys record their own), so a value set by the environment
        // or a flag never inherits its section's place in the file.
        if let (Some(p), false) = (
            e.value_at,
            matches!(e.value, yaml::Value::Mapping(_)) && path != "kafka.properties",
        ) {
            at.insert(path.clone(), p);
        }
        match (slot, &e.value) {
            // `kafka.properties` is an open map: take it as given.
            (slot @ Value::Object(_), yaml::Value::Mapping(_)) if path == "kafka.properties" => {
                *slot = to_json(&e.value, origin, e.value_at)?
            }
            (slot @ Value::Object(_), yaml::Value::Mapping(m)) => merge(slot, m, &path, origin, at)?,
            (Value::Object(_), other) if !other.is_null() => {
                return Err(invalid(
                    located(origin, e.value_at),
                    format!("{path}: must be a mapping"),
                ));
            }
            (slot, v) => *slot = to_json(v, origin, e.value_at)?,
        }
    }
    Ok(())
}

/// A file value as JSON (the tree `Config` is deserialized from).
fn to_json(v: &yaml::Value, origin: &str, pos: Option<Pos>) -> Result<Value, ConfigError> {
    serde_json::to_value(v).map_err(|e| invalid(located(origin, pos), e.to_string()))
}

/// Set a dotted key from a string (environment or flag), parsed as a YAML scalar so numbers and
/// booleans keep their type; string-typed keys keep the raw text.
fn set_path(doc: &mut Value, key: &str, raw: &str, origin: &str) -> Result<(), ConfigError> {
    let mut cur = doc;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        let Value::Object(m) = cur else {
            return Err(invalid(origin, format!("{key}: not a section")));
        };
        let slot = m
            .get_mut(*p)
            .ok_or_else(|| invalid(origin, format!("{key}: unknown key")))?;
        if i + 1 == parts.len() {
            *slot = match slot {
                Value::String(_) => Value::String(raw.to_string()),
                Value::Object(_) => {
                    // key=value,key=value for `kafka.properties`.
                    let mut m = serde_json::Map::new();
                    for pair in raw.split(',').filter(|s| !s.trim().is_empty()) {
                        let (k, v) = pair
                            .split_once('=')
                            .ok_or_else(|| invalid(origin, format!("expected key=value pairs, got {pair:?}")))?;
                        m.insert(k.trim().into(), Value::String(v.trim().into()));
                    }
                    Value::Object(m)
                }
                _ => {
                    let v = yaml::parse(raw).map_err(|e| invalid(origin, e.message))?;
                    to_json(&v, origin, None)?
                }
            };
            return Ok(());
        }
        cur = slot;
    }
    Ok(())
}
