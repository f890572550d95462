//! Go-style durations (`90s`, `10m`, `1h30m`, `1.5h`), the form Kubernetes users write and the
//! CRD's CEL rule admits.

use std::time::Duration;

/// A duration string the operator cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a duration such as 90s, 10m or 1h30m")]
pub struct DurationError {
    /// What was given.
    pub input: String,
}

/// Parses a Go duration made of `<number><unit>` parts, units `ns us ms s m h`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = || DurationError { input: input.to_owned() };
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(error());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len =
            rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(error)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| error())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(error()),
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_durations_users_write() {
        let cases = [
            ("90s", 90.0),
            ("10m", 600.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("250ms", 0.25),
            ("2h3m4s", 7384.0),
        ];
        for (input, seconds) in cases {
            assert_eq!(parse_duration(input), Ok(Duration::from_secs_f64(seconds)), "{input}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for input in ["", "10", "m", "10x", "1d", "-5s", "1..5s", "s10"] {
            assert!(parse_duration(input).is_err(), "{input} should be rejected");
        }
    }
}
