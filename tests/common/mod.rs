//! Helpers shared by the integration tests: the guardrail behaviour suite and the connection
//! details of the real services started by `scripts/services.sh`.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod guardrail_suite;
pub mod k8s;
pub mod ledger_suite;
pub mod schema;

/// The Redis under test, from `REDIS_URL` (`scripts/services.sh start` prints it).
///
/// `None` (after a note on stderr) when it is unset, so `cargo test` works on a laptop without
/// services; with `REMEDIATOR_TEST_REQUIRE_SERVICES` set (CI) a missing URL is a failure instead,
/// so a misconfigured pipeline cannot pass by skipping everything.
pub fn redis_url() -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("REMEDIATOR_TEST_REQUIRE_SERVICES").is_some() => {
            panic!(
                "REDIS_URL is not set but REMEDIATOR_TEST_REQUIRE_SERVICES is: start Redis with \
                 `out=$(scripts/services.sh start) && export $out`"
            )
        }
        _ => {
            eprintln!("skipping: REDIS_URL not set (run `scripts/services.sh start` and export its output)");
            None
        }
    }
}
