//! Durations and sizes as the command line writes them. Every duration
//! flag goes through [`parse_duration`], every size flag through
//! [`parse_bytes`].

use std::time::Duration;

/// Parses a duration: a bare number of seconds (`2`, `0.25`), or a number
/// with units as `humantime` reads them (`10s`, `500ms`, `2m`, `1h 30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// A timeout that can be turned off (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

/// Parses a duration as [`parse_duration`] does, or `off`.
pub fn parse_timeout(s: &str) -> Result<Timeout, String> {
    match s.trim() {
        "off" | "none" => Ok(Timeout(None)),
        d => parse_duration(d).map(|d| Timeout(Some(d))),
    }
}

/// Parses a byte count: a whole number with an optional binary unit
/// (`KiB`, `MiB`, `GiB`; `K`, `KB`, `M`... mean the same), any case.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '_').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: usize = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("expected a size such as 1024, 64KiB or 256MiB, not {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?}: use KiB, MiB or GiB (or none for bytes)")),
    };
    num.checked_mul(1 << shift).ok_or_else(|| format!("{s} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_or_units() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs_f64());
        // A bare number is seconds.
        assert_eq!((secs("2"), secs("0.25")), (Ok(2.0), Ok(0.25)));
        // Anything else needs units.
        assert_eq!((secs("500ms"), secs("10s"), secs("2m")), (Ok(0.5), Ok(10.0), Ok(120.0)));
        assert_eq!((secs("1h 30m"), secs("0s")), (Ok(5400.0), Ok(0.0)));
        for bad in ["", "soon", "-1", "2 weeks ago", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(parse_timeout("off"), Ok(Timeout(None)));
        assert_eq!(parse_timeout(" 5s "), Ok(Timeout(Some(Duration::from_secs(5)))));
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1_048_576"), Ok(1 << 20));
        assert!(parse_bytes("99999999999999999999G").is_err());
        assert!(parse_bytes("12XB").is_err());
    }
}
