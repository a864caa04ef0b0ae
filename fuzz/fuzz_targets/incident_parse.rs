//! `remediator::incident::parse` on arbitrary bytes (a Kafka message value is untrusted).
//!
//! Beyond "no panic, no hang": an accepted incident honours the contract
//! (docs/design.md#incident-event) and every action rendered from it for the reference catalogue
//! (tests/data/seed-runbooks.yaml) names only RFC 1123 Kubernetes objects, so nothing an incident
//! says can reach an API call (or a shell) as anything but a name; a rejection always names a
//! field.

#![no_main]

use libfuzzer_sys::fuzz_target;
use remediator::incident::{parse, MAX_ID_CHARS, MAX_INCIDENT_BYTES, MAX_ITEMS, MAX_TEXT_CHARS};
use remediator::runbook::template::Vars;
use remediator::runbook::Catalogue;
use std::sync::OnceLock;

fn catalogue() -> &'static Catalogue {
    static C: OnceLock<Catalogue> = OnceLock::new();
    C.get_or_init(|| {
        Catalogue::from_yaml(include_str!("../../tests/data/seed-runbooks.yaml"), "seed").expect("seed catalogue")
    })
}

/// RFC 1123 label (`dots = false`, ≤ 63) or subdomain (`dots = true`, ≤ 253).
fn rfc1123(s: &str, dots: bool) -> bool {
    let max = if dots { 253 } else { 63 };
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(incident) => {
            assert!(data.len() <= MAX_INCIDENT_BYTES);
            let n = incident.id.chars().count();
            assert!((1..=MAX_ID_CHARS).contains(&n), "id of {n} chars accepted");
            assert!(!incident.id.chars().any(char::is_control));
            assert!(!incident.services.is_empty() && incident.services.len() <= MAX_ITEMS);
            assert!(incident.services.iter().all(|s| s.chars().count() <= MAX_TEXT_CHARS));
            assert!((0.0..=1.0).contains(&incident.confidence));
            assert!(incident.context.len() <= MAX_ITEMS);
            let vars = Vars::from_incident(&incident);
            for rb in catalogue().runbooks() {
                let Ok(action) = rb.action.render(&vars, &rb.scope.namespaces) else {
                    continue;
                };
                let view = action.view();
                if let Some(ns) = &view.namespace {
                    assert!(rfc1123(ns, false), "namespace {ns:?} rendered for {}", rb.id);
                }
                let (_, name) = view.target.split_once('/').expect("kind/name target");
                assert!(rfc1123(name, true), "target {:?} rendered for {}", view.target, rb.id);
            }
        }
        Err((rejection, partial)) => {
            assert!(!rejection.field.is_empty() && !rejection.message.is_empty());
            if let Some(id) = partial.id {
                assert!(id.chars().count() <= MAX_ID_CHARS);
            }
        }
    }
});
