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
