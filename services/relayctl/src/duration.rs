//! Durations as operators write them on the command line (`90s`, `10m`, `2h30m`, `3d`) and as
//! relayctl prints them back, for every setting that takes one.

use std::fmt::Write as _;

/// Parses `90s`, `10m`, `2h`, `3d`, `1h30m` into seconds. A unit is required: a bare `5` could
/// mean seconds or minutes, and a clinical clock must not be guessed.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("unknown unit {c:?} in {text:?} (use s, m, h, d)")),
        };
        let value: u64 = number
            .parse()
            .map_err(|_| format!("a number must come before {c:?} in {text:?}"))?;
        total = value
            .checked_mul(unit)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("{text:?} is too long"))?;
        number.clear();
    }
    if !number.is_empty() || text.is_empty() {
        return Err(format!("{text:?} needs a unit (e.g. 90s, 10m, 2h30m)"));
    }
    Ok(total)
}

/// Seconds in the largest units: `1h30m`, `10m`, `7m30s`, `3d`, `0s`.
pub fn format_duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let parts = [
        ("d", seconds / 86_400),
        ("h", seconds % 86_400 / 3600),
        ("m", seconds % 3600 / 60),
        ("s", seconds % 60),
    ];
    for (unit, amount) in parts {
        if amount > 0 {
            let _ = write!(out, "{amount}{unit}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_an_operator_writes_them() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h30m"), Ok(5_400));
        assert_eq!(parse_duration("3d"), Ok(259_200));
        assert_eq!(parse_duration("0s"), Ok(0));
        for bad in ["", "45", "m", "10x", "1h30", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_print_in_the_largest_units() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(450), "7m30s");
        assert_eq!(format_duration(5_400), "1h30m");
        assert_eq!(format_duration(9_000), "2h30m");
        assert_eq!(format_duration(259_200), "3d");
    }
}
