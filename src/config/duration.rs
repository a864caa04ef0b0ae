//! Durations in the config: read from `300s`, `15m`, `1h`, `500ms`, `7d` or a whole number of
//! seconds ([`parse_duration`]); written back in the largest unit that is exact
//! ([`format_duration`]). The module is also the serde helper (`#[serde(with = "duration")]`)
//! every `Duration` field of the config uses, so a value is typed once, at load.

use serde::{de, Deserializer, Serializer};
use std::time::Duration;

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Text;
    impl de::Visitor<'_> for Text {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as 300s, 15m or 1h")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
    }
    d.deserialize_any(Text)
}

/// `d` in the largest unit that is exact: `250ms`, `90s`, `15m`, `1h`, `7d`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        _ if s.is_multiple_of(86400) => format!("{}d", s / 86400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// The longest duration the config accepts: ten years.
pub(super) const MAX_DURATION_SECS: u64 = 3650 * 86400;

/// Parse `300s`, `15m`, `1h`, `500ms`, `7d` or a plain number of seconds (at most 3650d).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 300s, 15m, 1h)"))?;
    let per = match unit {
        "" | "s" => 1,
        "ms" if n / 1000 <= MAX_DURATION_SECS => return Ok(Duration::from_millis(n)),
        "ms" => return Err(format!("duration {s:?} is too long (at most 3650d)")),
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s, m, h or d)")),
    };
    // Bounded so no deadline computed from it can overflow a clock.
    n.checked_mul(per)
        .filter(|secs| *secs <= MAX_DURATION_SECS)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too long (at most 3650d)"))
}
