//! A runbook's check lists (`pre_checks`, `post_checks`, `rollback_checks`): each item a known
//! check name, alone or as a mapping with the parameters that check takes.

use super::values::type_name;
use super::Parser;
use crate::runbook::check::{CheckName, CheckSpec, CHECK_NAMES};
use crate::yaml::Value;
use std::time::Duration;

impl Parser<'_> {
    pub(super) fn checks(&mut self, v: Option<&Value>, key: &str) -> Vec<CheckSpec> {
        let items = match v {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                self.err(key, format!("must be a list of checks, got {}", type_name(other)));
                return Vec::new();
            }
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.check(item, &format!("{key}[{i}]")))
            .collect()
    }

    fn check_name(&mut self, s: &str, key: &str) -> Option<CheckName> {
        let found = CheckName::parse(s);
        if found.is_none() {
            let names: Vec<&str> = CHECK_NAMES.iter().map(|(n, _)| *n).collect();
            self.err(key, format!("unknown check {s:?} (known: {})", names.join(", ")));
        }
        found
    }

    fn check(&mut self, item: &Value, key: &str) -> Option<CheckSpec> {
        match item {
            Value::String(s) => self.check_name(s, key).map(CheckSpec::named),
            Value::Mapping(m) => {
                let name_key = format!("{key}.name");
                let name = match m.get("name") {
                    Some(Value::String(s)) => self.check_name(s, &name_key)?,
                    _ => {
                        self.err(&name_key, "is required");
                        return None;
                    }
                };
                let mut allowed = vec!["name", "timeout_seconds"];
                allowed.extend_from_slice(name.params());
                let before = self.errors.len();
                self.unknown_keys(m, &allowed, key);
                let mut spec = CheckSpec::named(name);
                let int = |p: &mut Self, k: &str, min: u64, max: u64| {
                    m.get(k).and_then(|v| p.integer(v, &format!("{key}.{k}"), min, max))
                };
                spec.timeout = int(self, "timeout_seconds", 1, 3600).map(Duration::from_secs);
                spec.max_restarts = int(self, "max_restarts", 1, 1000).map(|x| x as u32);
                spec.max_replicas = int(self, "max_replicas", 1, 10_000).map(|x| x as u32);
                spec.start_hour = int(self, "start_hour", 0, 23).map(|x| x as u8);
                spec.end_hour = int(self, "end_hour", 0, 23).map(|x| x as u8);
                spec.below = m
                    .get("below")
                    .and_then(|v| self.number(v, &format!("{key}.below"), f64::MIN, f64::MAX));
                spec.above = m
                    .get("above")
                    .and_then(|v| self.number(v, &format!("{key}.above"), f64::MIN, f64::MAX));
                if let Some(q) = m.get("query") {
                    let qk = format!("{key}.query");
                    spec.query = self.string(q, &qk).and_then(|s| self.template(&s, &qk));
                }
                if name == CheckName::PrometheusQuery && spec.query.is_none() && m.get("query").is_none() {
                    self.err(&format!("{key}.query"), "is required for prometheus_query");
                }
                if spec.query.is_some() && spec.below.is_none() && spec.above.is_none() {
                    self.err(key, "a query check needs `below` or `above`");
                }
                (self.errors.len() == before).then_some(spec)
            }
            other => {
                self.err(
                    key,
                    format!(
                        "must be a check name or a mapping with `name`, got {}",
                        type_name(other)
                    ),
                );
                None
            }
        }
    }
}
