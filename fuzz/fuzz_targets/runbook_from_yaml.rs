//! `remediator::runbook::Catalogue::from_yaml` on arbitrary text (a runbook file is reviewed
//! input, but a loader that panics, hangs or expands an alias bomb takes every replica down).
//!
//! Beyond "no panic, no hang": a catalogue that loads honours the documented ranges, and every
//! error names the file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use remediator::runbook::Catalogue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Catalogue::from_yaml(text, "fuzz.yaml") {
        Ok(catalogue) => {
            for rb in catalogue.runbooks() {
                assert!(!rb.triggers.is_empty(), "{}: no triggers", rb.id);
                assert!((0.0..=1.0).contains(&rb.min_confidence), "{}: min_confidence", rb.id);
                assert!((1..=10_000).contains(&rb.max_per_hour), "{}: max_per_hour", rb.id);
                assert!(rb.cooldown.as_secs() <= 7 * 24 * 3600, "{}: cooldown", rb.id);
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
            }
        }
    }
});
