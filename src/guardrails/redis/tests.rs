//! Unit tests of the Redis store that need no Redis: the approval scripts' declared keys, key
//! escaping and the decoding of script replies.

use super::*;
use crate::guardrails::Guardrail;

/// Every key an approval script touches is one of its declared KEYS (Redis Cluster routes
/// and ACLs check declared keys; a key built inside a script bypasses both).
#[test]
fn approval_scripts_touch_only_declared_keys() {
    for (name, text) in [
        ("approval_create.lua", include_str!("../approval_create.lua")),
        ("approval_answer.lua", include_str!("../approval_answer.lua")),
        ("approval_pending.lua", include_str!("../approval_pending.lua")),
        ("approval_summary.lua", include_str!("../approval_summary.lua")),
    ] {
        for call in text.split("redis.call(").skip(1) {
            let end = call.find([',', ')']).unwrap_or(call.len());
            let command = &call[..end];
            if command == "'TIME'" {
                continue;
            }
            let key = call[end..].trim_start_matches(',').trim_start();
            assert!(
                key.starts_with("KEYS["),
                "{name}: redis.call({command}, {} …) uses an undeclared key",
                key.lines().next().unwrap_or("")
            );
        }
    }
}

#[test]
fn escape_keeps_key_parts_unambiguous() {
    assert_eq!(escape("a:b"), "a%3Ab");
    assert_eq!(escape("100%:x"), "100%25%3Ax");
    assert_ne!(
        format!("{}:{}", escape("a:b"), escape("c")),
        format!("{}:{}", escape("a"), escape("b:c"))
    );
}

#[test]
fn decide_replies_parse_and_reject_bad_shapes() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let reply = s(&["e1", "allowed", "1", "0"]);
    let (epoch, answer) = parse_decide(&reply).expect("allowed");
    assert_eq!(epoch, "e1");
    assert_eq!(
        answer,
        DecideAnswer::Allowed {
            probe: true,
            conservative: false
        }
    );
    let (_, answer) = parse_decide(&s(&["", "blocked", "cooldown", "cooldown active (3s remaining)"])).expect("b");
    assert_eq!(
        answer,
        DecideAnswer::Blocked {
            guardrail: Guardrail::Cooldown,
            detail: "cooldown active (3s remaining)".into()
        }
    );
    for bad in [
        s(&[]),
        s(&["", "allowed", "1"]),
        s(&["", "allowed", "yes", "0"]),
        s(&["", "blocked", "nope", "x"]),
        s(&["", "in_progress", "w", "-5"]),
        s(&["", "teleported"]),
    ] {
        assert!(matches!(parse_decide(&bad), Err(StoreError::Protocol(_))), "{bad:?}");
    }
}

#[test]
fn finish_replies_parse_and_reject_bad_shapes() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (a, current) = parse_finish(&s(&["OPEN", "3", "1", "current"])).expect("finish");
    assert_eq!(
        a,
        FinishAnswer {
            circuit: CircuitState::Open,
            failures: 3,
            opened: true
        }
    );
    assert!(current);
    let (a, current) = parse_finish(&s(&["CLOSED", "0", "0", "stale"])).expect("finish");
    assert_eq!(
        (a.circuit, a.failures, a.opened, current),
        (CircuitState::Closed, 0, false, false)
    );
    assert!(matches!(
        parse_finish(&s(&["OPEN", "3", "1", "mine"])),
        Err(StoreError::Protocol(_))
    ));
    assert!(matches!(
        parse_finish(&s(&["AJAR", "3", "1", "current"])),
        Err(StoreError::Protocol(_))
    ));
    assert!(matches!(
        parse_finish(&s(&["OPEN", "3", "1"])),
        Err(StoreError::Protocol(_))
    ));
}

/// A Redis error as the server sends it (`-CODE detail`), decoded like the client decodes it.
fn server_error(line: &str) -> RedisError {
    redis::parse_redis_value(format!("-{line}\r\n").as_bytes())
        .expect("a RESP error parses")
        .extract_error()
        .expect_err("an error reply")
}

/// Only a script that broke on data it did not expect is a protocol error (this version cannot
/// use this store); a demoted primary refusing a script's write, a server loading or out of
/// memory, an unknown command: the store is unusable right now, and callers wait and retry.
#[test]
fn errors_are_protocol_errors_only_when_a_script_broke() {
    let protocol = |line: &str| matches!(classify("decide", server_error(line)), StoreError::Protocol(_));
    assert!(protocol(
        "ERR user_script:40: Script attempted to access nonexistent global variable 'x' script: 1f0a"
    ));
    assert!(protocol(
        "WRONGTYPE Operation against a key holding the wrong kind of value script: 1f0a"
    ));
    for unusable in [
        "ERR Error running script (call to f_1f0a): @user_script:12: READONLY You can't write against a read only replica. script: 1f0a",
        "READONLY You can't write against a read only replica.",
        "LOADING Redis is loading the dataset in memory",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "ERR unknown command 'EVALSHA', with args beginning with:",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    ] {
        assert!(!protocol(unusable), "{unusable}");
    }
}

#[test]
fn renew_replies_parse_and_reject_bad_shapes() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(parse_renew(&s(&["renewed"])).expect("r"), Renewal::Renewed);
    assert_eq!(
        parse_renew(&s(&["reacquired", "1"])).expect("r"),
        Renewal::Reacquired { probe: true }
    );
    assert_eq!(
        parse_renew(&s(&["reacquired", "0"])).expect("r"),
        Renewal::Reacquired { probe: false }
    );
    assert_eq!(parse_renew(&s(&["lapsed"])).expect("r"), Renewal::Lapsed);
    assert_eq!(parse_renew(&s(&["stale"])).expect("r"), Renewal::Stale);
    for bad in [
        s(&[]),
        s(&["renewed", "1"]),
        s(&["lapsed", "0"]),
        s(&["reacquired"]),
        s(&["reacquired", "yes"]),
        s(&["renewed!"]),
    ] {
        assert!(matches!(parse_renew(&bad), Err(StoreError::Protocol(_))), "{bad:?}");
    }
}

/// A batch reply answers every request, or those up to the first answer that ends the batch;
/// more answers, fewer without an end, or an answer after the end are refused.
#[test]
fn batch_replies_answer_each_request_up_to_the_first_that_ends_the_batch() {
    let req = |id: &str| DecideRequest {
        incident_id: id.to_owned(),
        attempt: format!("{id}-a"),
        worker: "w".to_owned(),
        source: None,
        lease_ms: 1_000,
        admission: Admission::Record {
            outcomes: "[]".to_owned(),
            ttl_ms: 1_000,
        },
        on_block: None,
        rollout_version: None,
    };
    let reqs = [req("i1"), req("i2"), req("i3")];
    let recorded = |epoch: &str| vec!["2".to_owned(), epoch.to_owned(), "recorded".to_owned()];
    let waiting = || ["4", "e", "in_progress", "w2", "250"].map(str::to_owned).to_vec();
    let reply = |parts: &[Vec<String>]| parts.concat();

    let three = reply(&[recorded("e1"), recorded("e2"), recorded("e3")]);
    let all = parse_decide_batch(&three, &reqs).expect("all");
    assert_eq!(
        all,
        vec![
            ("e1", DecideAnswer::Recorded),
            ("e2", DecideAnswer::Recorded),
            ("e3", DecideAnswer::Recorded)
        ]
    );
    let two = reply(&[recorded("e"), waiting()]);
    let stopped = parse_decide_batch(&two, &reqs).expect("stopped");
    assert_eq!(stopped.len(), 2);
    assert!(matches!(
        stopped[1].1,
        DecideAnswer::InProgress {
            retry_after_ms: 250,
            ..
        }
    ));
    assert_eq!(parse_decide_batch(&[], &[]).expect("none"), vec![]);

    for (what, bad) in [
        (
            "too many",
            reply(&[recorded("e"), recorded("e"), recorded("e"), recorded("e")]),
        ),
        ("too few", reply(&[recorded("e"), recorded("e")])),
        ("none", Vec::new()),
        ("past the end", reply(&[recorded("e"), waiting(), recorded("e")])),
        (
            "a length past the end",
            ["9", "e", "recorded"].map(str::to_owned).to_vec(),
        ),
        (
            "a length that is no number",
            ["x", "e", "recorded"].map(str::to_owned).to_vec(),
        ),
    ] {
        assert!(
            matches!(parse_decide_batch(&bad, &reqs), Err(StoreError::Protocol(_))),
            "{what}: {bad:?}"
        );
    }
}

/// `record.lua`'s status: the expected word is `true`, `stale` is `false`, anything else a
/// protocol error (never read as either).
#[test]
fn status_replies_parse_and_reject_bad_shapes() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(parse_status("record", "recorded", &s(&["recorded"])).expect("status"));
    assert!(!parse_status("record", "recorded", &s(&["stale"])).expect("status"));
    for bad in [s(&[]), s(&["done"]), s(&["recorded", "1"]), s(&["stale", "x"])] {
        assert!(
            matches!(parse_status("record", "recorded", &bad), Err(StoreError::Protocol(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn rollout_replies_parse_and_reject_bad_shapes() {
    use crate::rollout::{Position, PromoteRefusal, RolloutRecord, Stage};
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let parse = super::ledger::parse_rollout;
    assert_eq!(
        parse(&s(&["canary", "1", "4", "2", "canary", "0"])).expect("record"),
        Ok(RolloutRecord {
            position: Position {
                stage: Stage::Canary,
                step: 1
            },
            version: 4,
            evidence: 2,
            changed_from: Some(Position {
                stage: Stage::Canary,
                step: 0
            }),
        })
    );
    assert_eq!(
        parse(&s(&["auto", "0", "5", "0", "", ""]))
            .expect("record")
            .map(|r| r.changed_from),
        Ok(None)
    );
    assert_eq!(
        parse(&s(&["refused", "evidence", "1", "3"])).expect("refusal"),
        Err(PromoteRefusal::Evidence(1, 3))
    );
    assert_eq!(
        parse(&s(&["refused", "end", "0", "3"])).expect("refusal"),
        Err(PromoteRefusal::AtTheEnd)
    );
    for bad in [
        s(&[]),
        s(&["accepted", "end", "0", "3"]),
        s(&["refused", "tired", "0", "3"]),
        s(&["refused", "evidence", "x", "3"]),
        s(&["sideways", "0", "1", "0", "", ""]),
        s(&["auto", "0", "1", "0", "upwards", "0"]),
        s(&["auto", "-1", "1", "0", "", ""]),
        s(&["auto", "0", "1"]),
    ] {
        assert!(matches!(parse(&bad), Err(StoreError::Protocol(_))), "{bad:?}");
    }
}
