//! Durations in the configuration: a number of seconds (`45`), or text with units
//! (`"500ms"`, `"30s"`, `"1m"`, `"1m30s"`, `"1h"`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration as written in the file or on the command line.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl std::fmt::Display for DurationValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurationValue::Seconds(s) => write!(f, "{s}"),
            DurationValue::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// A flag's value is text (`--pull-progress-timeout 45` is parsed like `"45"`).
impl std::str::FromStr for DurationValue {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DurationValue::Text(s.to_owned()))
    }
}

impl DurationValue {
    pub fn parse(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Seconds(s) => Ok(Duration::from_secs(*s)),
            DurationValue::Text(t) => parse(t),
        }
    }
}

const HINT: &str = "expected seconds or a duration like 500ms, 30s, 1m, 1m30s, 1h";

/// Parses `45`, `500ms`, `30s`, `1m30s`, `1h`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(HINT.into());
    }
    if let Ok(s) = t.parse::<u64>() {
        return Ok(Duration::from_secs(s));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(HINT.into());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| HINT.to_owned())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(HINT.into()),
        };
        rest = &rest[unit_len..];
        total = total.saturating_add(unit);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds_parse() {
        assert_eq!(parse("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "1x", "-1s", "1.5s", "1 m"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
