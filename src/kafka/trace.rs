//! W3C trace context: an incident's `traceparent` header, continued on its outcomes.
//!
//! Tracing is advisory, so a malformed header is ignored, never an error: the message is handled
//! and its outcomes go out without one. The outcomes keep the incident's trace id and carry a
//! span id of this worker's, so a trace shows where the incident was remediated.

use rdkafka::message::{Headers, OwnedHeaders};

/// The W3C trace-context header carried from incidents to their outcomes.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed W3C `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id (32 lowercase hex, not all zero).
    pub trace_id: String,
    /// Parent span id (16 lowercase hex, not all zero).
    pub parent_id: String,
    /// Trace flags (2 hex).
    pub flags: String,
}

impl TraceParent {
    /// Parse a header value; anything malformed is ignored (never an error: tracing is advisory).
    pub fn parse(v: &str) -> Option<Self> {
        let parts: Vec<&str> = v.trim().split('-').collect();
        let hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
        match parts.as_slice() {
            [ver, trace, parent, flags]
                if hex(ver, 2)
                    && *ver != "ff"
                    && hex(trace, 32)
                    && nonzero(trace)
                    && hex(parent, 16)
                    && nonzero(parent)
                    && hex(flags, 2) =>
            {
                Some(Self {
                    trace_id: trace.to_string(),
                    parent_id: parent.to_string(),
                    flags: flags.to_string(),
                })
            }
            _ => None,
        }
    }

    /// The first valid `traceparent` header of a message.
    pub fn from_headers(h: &OwnedHeaders) -> Option<Self> {
        h.iter()
            .filter(|x| x.key.eq_ignore_ascii_case(TRACEPARENT))
            .find_map(|x| x.value.and_then(|v| std::str::from_utf8(v).ok()).and_then(Self::parse))
    }

    /// The header for what this worker sends on: same trace, a new span id of ours.
    pub fn child(&self) -> String {
        let span = uuid::Uuid::new_v4().simple().to_string();
        format!("00-{}-{}-{}", self.trace_id, &span[..16], self.flags)
    }
}
