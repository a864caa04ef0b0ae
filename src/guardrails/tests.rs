//! Unit tests of the guardrail vocabulary: the wire names, service normalisation and the trust
//! rate.

use super::*;

/// The wire names are a contract: they are stored in Redis (read by every replica, of every
/// version), written on the audit topic and used as metric labels.
#[test]
fn wire_names_are_the_contract_and_parse_back() {
    let guardrails = [
        (Guardrail::RateLimit, "rate_limit"),
        (Guardrail::Cooldown, "cooldown"),
        (Guardrail::CircuitOpen, "circuit_open"),
        (Guardrail::BlastRadius, "blast_radius"),
        (Guardrail::StoreUnavailable, "store_unavailable"),
    ];
    for (g, name) in guardrails {
        assert_eq!((g.as_str(), g.to_string()), (name, name.to_string()));
        assert_eq!(Guardrail::parse(name), Some(g));
    }
    assert_eq!(Guardrail::parse("RATE_LIMIT"), None);
    for (s, name, gauge) in [
        (CircuitState::Closed, "CLOSED", 0),
        (CircuitState::HalfOpen, "HALF_OPEN", 1),
        (CircuitState::Open, "OPEN", 2),
    ] {
        assert_eq!((s.as_str(), s.gauge()), (name, gauge));
        assert_eq!(CircuitState::parse(name), Some(s));
    }
    assert_eq!(CircuitState::parse("closed"), None);
    for (s, name) in [
        (ApprovalState::Pending, "pending"),
        (ApprovalState::Approved, "approved"),
        (ApprovalState::Denied, "denied"),
    ] {
        assert_eq!(s.as_str(), name);
        assert_eq!(ApprovalState::parse(name), Some(s));
    }
    assert_eq!(ApprovalState::parse("expired"), None);
}

#[test]
fn services_are_counted_trimmed_and_lower_cased() {
    assert_eq!(Scope::normalise_service("  API-Server "), "api-server");
}

/// The trust ladder's rate: verified successes over executions counted, and a runbook that
/// never ran is trusted as configured (1.0), never demoted for lack of evidence.
#[test]
fn trust_rate_is_successes_over_executions() {
    let rate = |successes, total| TrustStats { successes, total }.rate();
    assert_eq!(rate(0, 0), 1.0);
    assert_eq!(rate(3, 4), 0.75);
    assert_eq!(rate(0, 2), 0.0);
    assert_eq!(rate(5, 5), 1.0);
}

/// A blocked outcome's template splits only around one detail mark that comes before one
/// `"guardrail"` field, and renders back to the outcome with the store's two facts in place;
/// anything else is refused (the caller then records the block itself), never mis-cut.
#[test]
fn a_blocked_record_splits_only_around_one_mark_before_its_guardrail() {
    const MARK: &str = "@@remediator:block-detail@@";
    let json = format!(
        r#"[{{"service":"a \"guardrail\":\"rate_limit\" b","reason":"x: {MARK}","guardrail":"rate_limit","n":1}}]"#
    );
    let record = BlockedRecord::split(&json, MARK, Guardrail::RateLimit).expect("splits");
    let rendered = record.render(Guardrail::Cooldown, "cooldown \"active\" (3s remaining)");
    let v: serde_json::Value = serde_json::from_str(&rendered).expect("valid JSON");
    assert_eq!(v[0]["reason"], "x: cooldown \"active\" (3s remaining)");
    assert_eq!(v[0]["guardrail"], "cooldown");
    assert_eq!(
        v[0]["service"], "a \"guardrail\":\"rate_limit\" b",
        "a value's escaped copy is left alone"
    );
    assert_eq!(v[0]["n"], 1);
    for bad in [
        // the mark twice, the field twice, the mark after the field (right after it, too)
        format!(r#"[{{"reason":"{MARK}","note":"{MARK}","guardrail":"rate_limit"}}]"#),
        format!(r#"[{{"reason":"{MARK}","guardrail":"rate_limit"}},{{"guardrail":"rate_limit"}}]"#),
        format!(r#"[{{"guardrail":"rate_limit","reason":"{MARK}"}}]"#),
        format!(r#"[{{"guardrail":"rate_limit","z":1,"reason":"later {MARK}"}}]"#),
        format!(r#""guardrail":"rate_limit"{MARK}"#),
        // no mark, no field of that guardrail
        r#"[{"reason":"x","guardrail":"rate_limit"}]"#.to_string(),
        format!(r#"[{{"reason":"{MARK}","guardrail":"cooldown"}}]"#),
    ] {
        assert_eq!(BlockedRecord::split(&bad, MARK, Guardrail::RateLimit), None, "{bad}");
    }
}
