//! An outcome event written as JSON by hand: the same text as serde_json writes from the derived
//! `Serialize` (a test compares the two over many outcomes, hostile strings included), in about
//! 60 % of the instructions (callgrind: 11,000 → 6,200 per replay outcome). Every outcome is
//! written once, for its idempotency record, the outcomes topic and replay's output alike, so
//! this is on the path of every decision.
//!
//! Keys are constant text; strings are escaped as serde_json escapes them (`"`, `\`, and the
//! control characters, short forms where JSON has them, `\u00XX` otherwise); numbers are written
//! as serde_json writes them (integers through `itoa`, floats through `ryu`, a non-finite one as
//! `null`). The rarer parts (an action's parameters, the trust and rollout views) go through
//! serde_json itself.
//!
//! A field added to [`Outcome`] must be written here too: the comparison test builds every
//! field of the struct, so it does not compile until the field is generated, and then fails
//! until it is written.

use super::{ActionView, CheckOutcome, Outcome};
use serde::Serialize;

/// `outcome` as one line of JSON.
pub(super) fn write(o: &Outcome) -> String {
    let mut w = Writer(String::with_capacity(768));
    w.raw("{\"schema_version\":");
    w.uint(u64::from(o.schema_version));
    w.raw(",\"event_id\":");
    w.str(&o.event_id);
    w.raw(",\"incident_id\":");
    w.opt_str(o.incident_id.as_deref());
    w.raw(",\"service\":");
    w.opt_str(o.service.as_deref());
    w.raw(",\"root_cause\":");
    w.opt_str(o.root_cause.as_deref());
    w.raw(",\"confidence\":");
    match o.confidence {
        Some(c) => w.float(c),
        None => w.raw("null"),
    }
    w.raw(",\"runbook_id\":");
    w.opt_str(o.runbook_id.as_deref());
    w.raw(",\"decision\":");
    w.unescaped(o.decision.as_str());
    w.raw(",\"success\":");
    match o.success {
        Some(b) => w.bool(b),
        None => w.raw("null"),
    }
    w.raw(",\"rolled_back\":");
    w.bool(o.rolled_back);
    w.raw(",\"reason\":");
    w.str(&o.reason);
    w.raw(",\"guardrail\":");
    match o.guardrail {
        Some(g) => w.unescaped(g.as_str()),
        None => w.raw("null"),
    }
    w.raw(",\"action\":");
    match &o.action {
        Some(a) => w.action(a),
        None => w.raw("null"),
    }
    w.raw(",\"checks\":[");
    for (i, c) in o.checks.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.check(c);
    }
    w.raw("],\"approval_id\":");
    w.opt_str(o.approval_id.as_deref());
    if let Some(approver) = &o.approver {
        w.raw(",\"approver\":");
        w.str(approver);
    }
    if let Some(trust) = &o.trust {
        w.raw(",\"trust\":");
        w.serde(trust);
    }
    if let Some(rollout) = &o.rollout {
        w.raw(",\"rollout\":");
        w.serde(rollout);
    }
    w.raw(",\"mode\":");
    match o.mode {
        Some(m) => w.unescaped(m.as_str()),
        None => w.raw("null"),
    }
    w.raw(",\"worker\":");
    w.str(&o.worker);
    w.raw(",\"decided_at\":");
    w.instant(&o.decided_at);
    w.raw(",\"finished_at\":");
    w.instant(&o.finished_at);
    w.raw(",\"duration_ms\":");
    w.uint(o.duration_ms);
    w.raw("}");
    w.0
}

struct Writer(String);

impl Writer {
    fn raw(&mut self, text: &str) {
        self.0.push_str(text);
    }

    /// A string known to need no escaping: a wire name (an enum's `as_str`) or an instant.
    fn unescaped(&mut self, text: &str) {
        self.0.push('"');
        self.0.push_str(text);
        self.0.push('"');
    }

    fn bool(&mut self, b: bool) {
        self.raw(if b { "true" } else { "false" });
    }

    fn uint(&mut self, n: u64) {
        self.0.push_str(itoa::Buffer::new().format(n));
    }

    fn float(&mut self, f: f64) {
        if f.is_finite() {
            self.0.push_str(ryu::Buffer::new().format_finite(f));
        } else {
            self.raw("null");
        }
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    /// A JSON string, escaped as serde_json escapes it.
    fn str(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.0.push('"');
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b >= 0x20 && b != b'"' && b != b'\\' {
                continue;
            }
            // `b` is ASCII, so `i` is a character boundary.
            self.0.push_str(&s[start..i]);
            match b {
                b'"' => self.0.push_str("\\\""),
                b'\\' => self.0.push_str("\\\\"),
                b'\n' => self.0.push_str("\\n"),
                b'\r' => self.0.push_str("\\r"),
                b'\t' => self.0.push_str("\\t"),
                0x08 => self.0.push_str("\\b"),
                0x0c => self.0.push_str("\\f"),
                _ => {
                    self.0.push_str("\\u00");
                    self.0.push(char::from(HEX[usize::from(b >> 4)]));
                    self.0.push(char::from(HEX[usize::from(b & 0xf)]));
                }
            }
            start = i + 1;
        }
        self.0.push_str(&s[start..]);
        self.0.push('"');
    }

    fn instant(&mut self, t: &chrono::DateTime<chrono::Utc>) {
        match super::millis_text(t) {
            // ASCII digits and punctuation by construction: valid UTF-8, nothing to escape.
            Some(text) => self.unescaped(std::str::from_utf8(&text).unwrap_or_default()),
            None => self.str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }
    }

    fn action(&mut self, a: &ActionView) {
        self.raw("{\"kind\":");
        self.str(&a.kind);
        self.raw(",\"target\":");
        self.str(&a.target);
        if let Some(ns) = &a.namespace {
            self.raw(",\"namespace\":");
            self.str(ns);
        }
        if !a.params.is_empty() {
            self.raw(",\"params\":");
            self.serde(&a.params);
        }
        self.raw(",\"display\":");
        self.str(&a.display);
        self.raw("}");
    }

    fn check(&mut self, c: &CheckOutcome) {
        self.raw("{\"phase\":");
        self.unescaped(c.phase.as_str());
        self.raw(",\"name\":");
        self.str(&c.name);
        self.raw(",\"passed\":");
        self.bool(c.passed);
        self.raw(",\"detail\":");
        self.str(&c.detail);
        self.raw("}");
    }

    /// A rarer part, through serde_json (it cannot fail for these types: string keys, finite
    /// or null floats).
    fn serde<T: Serialize>(&mut self, value: &T) {
        match serde_json::to_string(value) {
            Ok(text) => self.0.push_str(&text),
            Err(_) => self.raw("null"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guardrails::Guardrail;
    use crate::outcome::{Decision, Mode, Phase, RolloutChange, RolloutView, TrustView};
    use crate::rollout::Stage;
    use chrono::{DateTime, TimeZone, Utc};

    /// A small deterministic generator (xorshift), so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn coin(&mut self) -> bool {
            self.next() & 1 == 1
        }
        fn pick<T: Clone>(&mut self, from: &[T]) -> T {
            from[self.below(from.len())].clone()
        }
    }

    /// Strings an event may carry: plain, every character JSON escapes, multi-byte UTF-8, and
    /// mixtures of them.
    fn text(rng: &mut Rng) -> String {
        let mut pieces: Vec<String> = [
            "",
            "plain",
            "svc-07",
            "a\"b",
            "back\\slash",
            "é",
            "日本語",
            "\u{2028}\u{2029}",
            "🦀",
            "\u{7f}",
            "</script>",
            "kubectl delete pod x -n y",
            "' ; rm -rf / #",
            "${HOME}",
            "%s%n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        pieces.extend((0u8..0x20).map(|c| char::from(c).to_string()));
        let mut s = String::new();
        for _ in 0..rng.below(6) {
            s.push_str(&rng.pick(&pieces));
        }
        if rng.below(20) == 0 {
            s.push_str(&"x\u{1}é".repeat(300));
        }
        s
    }

    fn instant(rng: &mut Rng) -> DateTime<Utc> {
        match rng.below(8) {
            // Outside what the fast path writes: chrono writes them.
            0 => Utc
                .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
                .single()
                .expect("year 10000"),
            1 => DateTime::parse_from_rfc3339("2016-12-31T23:59:60.250Z")
                .expect("leap second")
                .with_timezone(&Utc),
            _ => DateTime::from_timestamp_millis((rng.next() % 253_402_300_799_000) as i64).expect("in range"),
        }
    }

    fn outcome(rng: &mut Rng) -> Outcome {
        let opt = |rng: &mut Rng| rng.coin().then(|| text(rng));
        let confidences = [0.95, 0.0, 1.0, 1e-7, 0.1 + 0.2, 0.5, f64::NAN, 123456789.125];
        let checks = (0..rng.below(4))
            .map(|_| CheckOutcome {
                phase: rng.pick(&[Phase::Pre, Phase::Post, Phase::Rollback]),
                name: text(rng),
                passed: rng.coin(),
                detail: text(rng),
            })
            .collect();
        let action = rng.coin().then(|| ActionView {
            kind: text(rng),
            target: text(rng),
            namespace: opt(rng),
            params: if rng.coin() {
                [
                    ("replicas".to_string(), serde_json::json!(5)),
                    (text(rng), serde_json::json!({"spec": {"x": [1, "two", null, 0.5]}})),
                ]
                .into_iter()
                .collect()
            } else {
                Default::default()
            },
            display: text(rng),
        });
        let rollout = rng.coin().then(|| RolloutView {
            stage: rng.pick(&Stage::ALL),
            share: rng.coin().then_some(25),
            in_canary: rng.coin().then_some(true),
            evidence: rng.coin().then_some(3),
            needed: 5,
            change: rng.coin().then(|| RolloutChange {
                from: Stage::Approval,
                to: Stage::Canary,
                share: Some(10),
                why: text(rng),
            }),
        });
        Outcome {
            schema_version: crate::outcome::SCHEMA_VERSION,
            event_id: text(rng),
            incident_id: opt(rng),
            service: opt(rng),
            root_cause: opt(rng),
            confidence: rng.coin().then(|| rng.pick(&confidences)),
            runbook_id: opt(rng),
            decision: rng.pick(&Decision::ALL),
            success: rng.coin().then(|| rng.coin()),
            rolled_back: rng.coin(),
            reason: text(rng),
            guardrail: rng.coin().then(|| rng.pick(&Guardrail::ALL)),
            action,
            checks,
            approval_id: opt(rng),
            approver: opt(rng),
            trust: rng.coin().then(|| TrustView {
                success_rate: 0.8,
                executions: 10,
                demoted: rng.coin(),
            }),
            rollout,
            mode: rng
                .coin()
                .then(|| rng.pick(&[Mode::Auto, Mode::Approval, Mode::Suggest, Mode::DryRun])),
            worker: text(rng),
            decided_at: instant(rng),
            finished_at: instant(rng),
            duration_ms: rng.pick(&[0, 7, 1_234_567, u64::MAX]),
        }
    }

    #[test]
    fn the_text_is_what_serde_json_writes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..20_000 {
            let o = outcome(&mut rng);
            let theirs = serde_json::to_string(&o).expect("serialisable");
            assert_eq!(write(&o), theirs, "outcome {i}");
        }
    }

    #[test]
    fn the_text_reads_back_as_the_outcome() {
        let mut rng = Rng(42);
        for _ in 0..2_000 {
            let mut o = outcome(&mut rng);
            // NaN is written as null and cannot compare equal; instants keep milliseconds.
            o.confidence = o.confidence.filter(|c| c.is_finite());
            let back: Outcome = serde_json::from_str(&write(&o)).expect("valid JSON");
            assert_eq!(back.event_id, o.event_id);
            assert_eq!(back.reason, o.reason);
            assert_eq!(back.action, o.action);
            assert_eq!(back.checks, o.checks);
            assert_eq!(back.confidence, o.confidence);
        }
    }
}
