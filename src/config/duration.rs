//! Durations as written in the file: [`parse_duration`] (`"30s"`, `"1m30s"`, `"1.5s"`, …) and
//! their upper bound, [`MAX_DURATION`].
//!
//! Must never accept a duration that could overflow the supervisor's clock arithmetic: every
//! duration key is checked against [`MAX_DURATION`] (in `validate.rs`).

use std::time::Duration;

/// Longest accepted duration, for every duration key: one day. Longer timeouts, intervals
/// or backoffs are mistakes, and the supervisor adds these durations to clock readings.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// Parses a duration like `"30s"`, `"250ms"`, `"1m30s"`, `"1.5s"`, `"500us"`
/// or `"0"`. Units: `ns`, `us`/`µs`, `ms`, `s`, `m`/`min`, `h`, `d`.
/// Components may be separated by spaces.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; use a string like \"30s\"".to_string());
    }
    if t.starts_with('-') {
        return Err(format!("negative duration {s:?} is not allowed"));
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();

        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format!(
                "invalid duration {s:?}: expected a number followed by a unit, like \"30s\" or \"1.5s\""
            ));
        }
        if unit.is_empty() {
            return Err(format!(
                "invalid duration {s:?}: missing unit after {num:?} (use ns, us, ms, s, m, h or d, like \"30s\")"
            ));
        }
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" | "min" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h or d)"
                ))
            }
        };
        let overflow = || format!("duration {s:?} is too large");
        let int_val: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| overflow())?
        };
        // At most 18 fractional digits matter (10^18 * scale fits in u128).
        let frac = &frac[..frac.len().min(18)];
        let frac_val: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| overflow())?
        };
        let frac_ns = frac_val * scale / 10u128.pow(frac.len() as u32);
        total = int_val
            .checked_mul(scale)
            .and_then(|v| v.checked_add(frac_ns))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(overflow)?;
    }
    let secs =
        u64::try_from(total / 1_000_000_000).map_err(|_| format!("duration {s:?} is too large"))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_err, parse, MIN};

    #[test]
    fn bad_duration() {
        let e = assert_err(
            &format!("{MIN}[drain]\ntimeout = \"30seconds\"\n"),
            3,
            "drain.timeout",
        );
        assert!(e.message.contains("unknown unit"), "{e}");
        assert_eq!(e.column, Some(11));
        assert_err(
            &format!("{MIN}[readiness]\ntimeout = \"abc\"\n"),
            3,
            "readiness.timeout",
        );
        assert_err(
            &format!("{MIN}[readiness]\nstable = \"5\"\n"),
            3,
            "readiness.stable",
        );
        assert_err(
            &format!("{MIN}[readiness]\nstable = \"-5s\"\n"),
            3,
            "readiness.stable",
        );
    }

    #[test]
    fn integer_duration_hint() {
        let e = assert_err(&format!("{MIN}[drain]\ntimeout = 30\n"), 3, "drain.timeout");
        assert!(e.message.contains("use a string like \"30s\""), "{e}");
        let e = assert_err(
            &format!("{MIN}[readiness]\nkind = \"delay\"\ndelay = 1.5\n"),
            4,
            "readiness.delay",
        );
        assert!(e.message.contains("use a string like \"30s\""), "{e}");
    }

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1m 30s"), Duration::from_secs(90));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("500us"), Duration::from_micros(500));
        assert_eq!(ok("500µs"), Duration::from_micros(500));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("1d"), Duration::from_secs(86400));
        assert_eq!(ok("2min"), Duration::from_secs(120));
        assert_eq!(ok("0.001ms"), Duration::from_nanos(1000));
        for bad in [
            "",
            "5",
            "s",
            "1.2.3s",
            "1x",
            "-1s",
            "1s-",
            "99999999999999999999999h",
            "1 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    /// Issue 13, item 3: a duration `check` accepts must never panic the supervisor.
    #[test]
    fn every_duration_key_is_at_most_a_day() {
        let keys = [
            ("readiness", "timeout", ""),
            ("readiness", "stable", ""),
            ("readiness", "interval", "kind = \"tcp\"\n"),
            ("readiness", "probe_timeout", "kind = \"tcp\"\n"),
            ("drain", "timeout", ""),
            ("restart", "backoff_initial", "backoff_max = \"1d\"\n"),
            ("restart", "backoff_max", ""),
        ];
        for (table, key, extra) in keys {
            for v in ["9223372036854775807s", "18446744073709551615s", "25h", "2d"] {
                let text = format!("{MIN}[{table}]\n{extra}{key} = \"{v}\"\n");
                let line = 3 + extra.lines().count();
                let e = assert_err(&text, line, &format!("{table}.{key}"));
                assert!(e.message.contains("at most one day"), "{e}");
            }
            let ok = format!("{MIN}[{table}]\n{extra}{key} = \"1d\"\n");
            parse(&ok).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
