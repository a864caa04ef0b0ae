//! Validate events against the JSON Schemas in `schemas/` (draft 2020-12, formats asserted).

use serde_json::Value;
use std::sync::OnceLock;

fn load(path: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect("read schema");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

/// The outcome schema.
pub fn outcome() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| load("schemas/outcome.v1.json"))
}

/// The incident schema.
pub fn incident() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| load("schemas/incident.v1.json"))
}

/// Panic with every violation if `o` is not a valid outcome.
pub fn assert_valid_outcome(o: &Value) {
    let errors: Vec<String> = outcome()
        .iter_errors(o)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "outcome violates schemas/outcome.v1.json: {errors:#?}\n{o:#}"
    );
}
