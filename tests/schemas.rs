//! The JSON Schemas in `schemas/` agree with the code: what the parser accepts the incident
//! schema accepts, and what it rejects the schema rejects.

mod common;

use serde_json::{json, Value};

#[test]
fn incident_schema_and_parser_agree() {
    let mut cases: Vec<Value> = include_str!("data/seed-incidents.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    cases.extend([
        json!({"id": "a", "root_cause": "x", "confidence": 0.5, "services": ["a", "b"], "symptoms": ["s"]}),
        json!({"id": "a", "root_cause": "x", "confidence": 0, "service": "a", "detected_at": "2026-11-25T10:00:00Z"}),
        json!({"id": "a", "root_cause": "x", "confidence": 1.01, "service": "a"}),
        json!({"id": "", "root_cause": "x", "confidence": 0.5, "service": "a"}),
        json!({"id": "a", "root_cause": "x", "confidence": 0.5}),
        json!({"id": "a", "root_cause": "x", "confidence": 0.5, "services": []}),
        json!({"id": "a", "root_cause": "x", "confidence": 0.5, "service": "a", "context": {"k": [1]}}),
        json!({"id": "a", "root_cause": "x", "confidence": 0.5, "service": "a", "context": {"k": null}}),
        json!({"id": "a", "root_cause": "x", "confidence": 0.5, "service": "a", "detected_at": "noon"}),
        json!({"id": "a\u{0007}", "root_cause": "x", "confidence": 0.5, "service": "a"}),
        json!({"id": "x".repeat(129), "root_cause": "x", "confidence": 0.5, "service": "a"}),
        json!({"id": "a", "root_cause": "x", "confidence": 0.5, "service": "a", "extra": {"ignored": true}}),
    ]);
    for case in cases {
        let parsed = remediator::incident::parse(case.to_string().as_bytes());
        let valid = common::schema::incident().is_valid(&case);
        assert_eq!(
            parsed.is_ok(),
            valid,
            "parser says {:?}, schema says {valid} for {case}",
            parsed.err().map(|e| e.0)
        );
    }
}

#[test]
fn schemas_are_valid_draft_2020_12() {
    for f in ["schemas/incident.v1.json", "schemas/outcome.v1.json"] {
        let text = std::fs::read_to_string(format!("{}/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema", "{f}");
        assert!(jsonschema::meta::is_valid(&schema), "{f} is not a valid 2020-12 schema");
    }
}
