//! Reading the scripts' replies: every script answers a flat array of strings, decoded here into
//! the store's types. Anything of an unexpected shape is a [`StoreError::Protocol`] (a script and
//! a worker of different versions), never a guess.

use crate::guardrails::{CircuitState, DecideAnswer, DecideRequest, FinishAnswer, Guardrail, Renewal, StoreError};
use redis::Value;

/// A script's reply as the flat array of strings every script returns.
pub(super) fn strings(op: &str, v: Value) -> Result<Vec<String>, StoreError> {
    let Value::Array(items) = v else {
        return Err(StoreError::Protocol(format!("{op}: expected an array, got {v:?}")));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::BulkString(b) => {
                String::from_utf8(b).map_err(|e| StoreError::Protocol(format!("{op}: reply is not UTF-8: {e}")))
            }
            Value::SimpleString(s) => Ok(s),
            other => Err(StoreError::Protocol(format!("{op}: expected a string, got {other:?}"))),
        })
        .collect()
}

pub(super) fn flag(op: &str, s: &str) -> Result<bool, StoreError> {
    match s {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => Err(StoreError::Protocol(format!("{op}: expected 0 or 1, got {s:?}"))),
    }
}

pub(super) fn number<T: std::str::FromStr>(op: &str, s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Protocol(format!("{op}: expected a number, got {s:?}")))
}

/// `decide.lua`'s reply: the epoch it read (empty if none) and the answer.
pub(super) fn parse_decide(reply: &[String]) -> Result<(&str, DecideAnswer), StoreError> {
    const OP: &str = "decide";
    let [epoch, kind, rest @ ..] = reply else {
        return Err(StoreError::Protocol(format!("{OP}: short reply {reply:?}")));
    };
    let answer = match (kind.as_str(), rest) {
        ("recorded", []) => DecideAnswer::Recorded,
        ("allowed", [probe, conservative]) => DecideAnswer::Allowed {
            probe: flag(OP, probe)?,
            conservative: flag(OP, conservative)?,
        },
        ("blocked", [guardrail, detail]) => DecideAnswer::Blocked {
            guardrail: Guardrail::parse(guardrail)
                .ok_or_else(|| StoreError::Protocol(format!("{OP}: unknown guardrail {guardrail:?}")))?,
            detail: detail.clone(),
        },
        ("duplicate", [outcomes, same_source]) => DecideAnswer::Duplicate {
            outcomes: outcomes.clone(),
            same_source: flag(OP, same_source)?,
        },
        ("in_progress", [worker, retry_after_ms]) => DecideAnswer::InProgress {
            worker: worker.clone(),
            retry_after_ms: number(OP, retry_after_ms)?,
        },
        ("interrupted", [worker]) => DecideAnswer::Interrupted { worker: worker.clone() },
        ("stage_changed", []) => DecideAnswer::StageChanged,
        _ => return Err(StoreError::Protocol(format!("{OP}: unexpected reply {reply:?}"))),
    };
    Ok((epoch, answer))
}

/// `decide_batch.lua`'s reply: each answer as its length followed by a `decide.lua` reply, in
/// request order. The script answers every request, or those up to the first whose answer ends a
/// batch ([`DecideAnswer::ends_batch`]) and stops there; any other count, or an answer after one
/// that ends the batch, is a protocol error (the worker would otherwise act on a request the
/// script never decided, or skip one it did).
pub(super) fn parse_decide_batch<'a>(
    reply: &'a [String],
    reqs: &[DecideRequest],
) -> Result<Vec<(&'a str, DecideAnswer)>, StoreError> {
    const OP: &str = "decide_batch";
    let mut answers = Vec::with_capacity(reqs.len());
    let mut rest = reply;
    let mut ended = false;
    while let [len, tail @ ..] = rest {
        let Some(req) = reqs.get(answers.len()).filter(|_| !ended) else {
            return Err(StoreError::Protocol(format!(
                "{OP}: more answers than the {} requests it decided",
                answers.len()
            )));
        };
        let len = Some(number::<usize>(OP, len)?)
            .filter(|l| *l <= tail.len())
            .ok_or_else(|| StoreError::Protocol(format!("{OP}: reply length {len} past the end")))?;
        let (one, after) = tail.split_at(len);
        let (epoch, answer) = parse_decide(one)?;
        ended = answer.ends_batch(&req.admission);
        answers.push((epoch, answer));
        rest = after;
    }
    if answers.len() < reqs.len() && !ended {
        return Err(StoreError::Protocol(format!(
            "{OP}: {} answers for {} requests",
            answers.len(),
            reqs.len()
        )));
    }
    Ok(answers)
}

/// `finish.lua`'s reply: the answer and whether the attempt still owned the incident.
pub(super) fn parse_finish(reply: &[String]) -> Result<(FinishAnswer, bool), StoreError> {
    const OP: &str = "finish";
    let [state, failures, opened, owner] = reply else {
        return Err(StoreError::Protocol(format!("{OP}: unexpected reply {reply:?}")));
    };
    let circuit = CircuitState::parse(state)
        .ok_or_else(|| StoreError::Protocol(format!("{OP}: unknown circuit state {state:?}")))?;
    let current = match owner.as_str() {
        "current" => true,
        "stale" => false,
        _ => return Err(StoreError::Protocol(format!("{OP}: unexpected owner {owner:?}"))),
    };
    Ok((
        FinishAnswer {
            circuit,
            failures: number(OP, failures)?,
            opened: flag(OP, opened)?,
        },
        current,
    ))
}

/// `renew.lua`'s reply.
pub(super) fn parse_renew(reply: &[String]) -> Result<Renewal, StoreError> {
    const OP: &str = "renew";
    Ok(match reply {
        [s] if s == "renewed" => Renewal::Renewed,
        [s, probe] if s == "reacquired" => Renewal::Reacquired {
            probe: flag(OP, probe)?,
        },
        [s] if s == "lapsed" => Renewal::Lapsed,
        [s] if s == "stale" => Renewal::Stale,
        _ => return Err(StoreError::Protocol(format!("{OP}: unexpected reply {reply:?}"))),
    })
}

/// The `recorded` or `stale` status of `record.lua`.
pub(super) fn parse_status(op: &str, ok: &str, reply: &[String]) -> Result<bool, StoreError> {
    match reply {
        [s] if s == ok => Ok(true),
        [s] if s == "stale" => Ok(false),
        _ => Err(StoreError::Protocol(format!("{op}: unexpected reply {reply:?}"))),
    }
}
