//! Durations written the way operators write them: `"900s"`, `"2m"`,
//! `"100ms"`, `"1h30m"`.
//!
//! Owns: [`parse_duration`] and [`format_duration`]. Must not: know which field a
//! duration belongs to or what range it may take.
//!
//! Grammar: one or more `<integer><unit>` parts, optionally separated by
//! spaces, where unit is one of `ms`, `s`, `m`, `h`, `d`. No fractions (write
//! `1500ms`, not `1.5s`), no bare numbers (the unit is never guessed).

use std::fmt;
use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    /// A number without a unit, e.g. `"900"`.
    MissingUnit(String),
    /// A unit we do not know, e.g. `"5sec"`.
    UnknownUnit(String),
    /// A unit without a number, or a stray character.
    ExpectedNumber(String),
    /// `"1.5s"`.
    Fraction,
    TooLarge,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => write!(f, "empty duration"),
            DurationError::MissingUnit(n) => write!(f, "number {n} has no unit"),
            DurationError::UnknownUnit(u) => write!(f, "unknown unit \"{u}\""),
            DurationError::ExpectedNumber(at) => write!(f, "expected a number at \"{at}\""),
            DurationError::Fraction => write!(f, "fractions are not supported"),
            DurationError::TooLarge => write!(f, "duration too large"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Unit names with their length in milliseconds. A unit is read as the whole
/// run of letters after the number, so `ms` never matches `m`.
const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses `"900s"`, `"2m"`, `"100ms"`, `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let (part_ms, after) = parse_part(rest)?;
        total_ms = total_ms
            .checked_add(part_ms)
            .ok_or(DurationError::TooLarge)?;
        rest = after.trim_start();
    }
    Ok(Duration::from_millis(total_ms))
}

/// One `<integer><unit>`; returns its length in ms and the rest of the text.
fn parse_part(text: &str) -> Result<(u64, &str), DurationError> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, after) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(DurationError::ExpectedNumber(text.to_string()));
    }
    if after.starts_with('.') {
        return Err(DurationError::Fraction);
    }
    let unit_end = after
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(after.len());
    let (unit, rest) = after.split_at(unit_end);
    if unit.is_empty() {
        return Err(DurationError::MissingUnit(digits.to_string()));
    }
    let scale = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, ms)| *ms)
        .ok_or_else(|| DurationError::UnknownUnit(unit.to_string()))?;
    let number: u64 = digits.parse().map_err(|_| DurationError::TooLarge)?;
    let ms = number.checked_mul(scale).ok_or(DurationError::TooLarge)?;
    Ok((ms, rest))
}

/// The shortest text [`parse_duration`] reads back as `d` (milliseconds
/// precision; sub-millisecond parts are dropped).
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (name, scale) in UNITS.iter().rev() {
        if ms >= *scale {
            out.push_str(&format!("{}{name}", ms / scale));
            ms %= scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_usual_forms() {
        assert_eq!(parse_duration("900s"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 1h 30m "), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_with_a_reason() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("900"),
            Err(DurationError::MissingUnit("900".into()))
        );
        assert_eq!(
            parse_duration("5sec"),
            Err(DurationError::UnknownUnit("sec".into()))
        );
        assert_eq!(parse_duration("1.5s"), Err(DurationError::Fraction));
        assert_eq!(
            parse_duration("s"),
            Err(DurationError::ExpectedNumber("s".into()))
        );
        assert_eq!(
            parse_duration("-5s"),
            Err(DurationError::ExpectedNumber("-5s".into()))
        );
        assert_eq!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::TooLarge)
        );
        assert_eq!(
            parse_duration("9999999999999999d"),
            Err(DurationError::TooLarge)
        );
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(Duration::from_secs(900)), "15m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in 0u64..=10_000_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn never_panics(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
        }
    }
}
