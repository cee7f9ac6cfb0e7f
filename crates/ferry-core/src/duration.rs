//! Durations as people write them in flags and `ferry.toml`: `500ms`, `2s`, `5m`, `1h`, `30d`.

use std::time::Duration;

/// Parses `500ms`, `2s`, `5m`, `1h` or `30d`.
///
/// # Errors
/// A message naming the value and the units.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a duration; write it like 500ms, 2s, 5m, 1h or 30d"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(format!("'{s}' has no known unit; write it like 500ms, 2s, 5m, 1h or 30d")),
    };
    match ms {
        None => Err(format!("'{s}' is too long")),
        Some(0) => Err(format!("'{s}' must be longer than zero")),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

/// Parses a schedule of durations, `30s,1m,5m` (each as [`parse_duration`]).
///
/// # Errors
/// A message naming the bad step.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let steps = text.split(',').map(|s| parse_duration(s.trim())).collect::<Result<Vec<_>, _>>()?;
    if steps.is_empty() {
        return Err("the schedule is empty; give steps like 1s,2s,4s".into());
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_refusals() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("0s").unwrap_err().contains("longer than zero"));
        assert!(parse_duration("5w").unwrap_err().contains("no known unit"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(parse_duration("99999999999999999d").unwrap_err().contains("too long"));
        assert_eq!(parse_schedule("1s, 2s").unwrap().len(), 2);
    }
}
