//! `baton verify`'s table and its JSON: the same rows, one per check.

use serde::Serialize;

use super::checks::{Check, Verdict};

/// What `--json` prints: one object.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub config: String,
    pub reloads: u32,
    pub failed: bool,
    /// Stopped early with no failed check: no verdict on the app (`INCOMPLETE`).
    pub incomplete: bool,
    pub checks: &'a [Check],
    /// Why verify stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// Where the app's own output and baton's events were kept (`--keep`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

/// Control characters of the app's or baton's text are not the terminal's to interpret.
fn shown(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The table: CHECK, VERDICT, MEASURED, and the advice under a row that has one.
pub fn table(r: &Report<'_>) -> String {
    use std::fmt::Write;
    let width = r
        .checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = String::new();
    let _ = writeln!(out, "{:<width$}  {:<7}  MEASURED", "CHECK", "VERDICT");
    for c in r.checks {
        let _ = writeln!(
            out,
            "{:<width$}  {:<7}  {}",
            c.check,
            c.verdict.name(),
            shown(&c.figure)
        );
        if !c.advice.is_empty() {
            let _ = writeln!(out, "{:<width$}  {:<7}  → {}", "", "", shown(&c.advice));
        }
    }
    let fails = r
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .count();
    let warns = r
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Warn)
        .count();
    if let Some(why) = &r.aborted {
        let _ = writeln!(out, "\nverify stopped early: {}", shown(why));
    }
    let _ = writeln!(
        out,
        "\n{}: {fails} failed, {warns} warning(s), {} reload(s) of {}",
        match (r.failed, r.incomplete) {
            (false, _) => "ok",
            // stopped before any check could fail: not a verdict on the app
            (true, true) => "INCOMPLETE",
            (true, false) => "FAILED",
        },
        r.reloads,
        shown(&r.config)
    );
    if let Some(k) = &r.kept {
        let _ = writeln!(out, "the app's output and baton's events: {}", shown(k));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fds_row() -> Check {
        Check {
            id: "fds",
            check: "fds",
            verdict: Verdict::Pass,
            figure: "none".into(),
            advice: String::new(),
        }
    }

    fn report<'a>(checks: &'a [Check], reloads: u32, aborted: Option<&str>) -> Report<'a> {
        Report {
            config: "/etc/baton/api.toml".into(),
            reloads,
            failed: true,
            incomplete: aborted.is_some(),
            checks,
            aborted: aborted.map(str::to_string),
            kept: None,
        }
    }

    #[test]
    fn the_table_and_the_json_have_the_same_rows() {
        let checks = vec![
            Check {
                id: "in_flight",
                check: "in-flight requests survive SIGTERM",
                verdict: Verdict::Fail,
                figure: "3 of 9 cut\u{1b}[2J".into(),
                advice: "finish them".into(),
            },
            fds_row(),
        ];
        let r = report(&checks, 5, None);
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("CHECK "), "{t}");
        assert!(
            lines[1]
                .starts_with("in-flight requests survive SIGTERM  FAIL     3 of 9 cut\u{fffd}[2J"),
            "{t}"
        );
        assert!(lines[2].trim_start().starts_with("→ finish them"), "{t}");
        assert!(lines[3].starts_with("fds "), "{t}");
        assert!(t.contains("FAILED: 1 failed, 0 warning(s), 5 reload(s) of /etc/baton/api.toml"));
        let j: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(j["checks"].as_array().unwrap().len(), 2);
        assert_eq!(j["checks"][0]["verdict"], "fail");
        assert_eq!(j["checks"][0]["figure"], "3 of 9 cut\u{1b}[2J");
        assert_eq!(j["checks"][1]["verdict"], "pass");
        assert_eq!(j["failed"], true);
    }

    /// A run stopped before any check failed (an interrupt, a path that 404s) proved
    /// nothing, and says so: not "FAILED: 0 failed".
    #[test]
    fn a_run_stopped_early_with_no_failed_check_is_incomplete() {
        let checks = [fds_row()];
        let r = report(&checks, 0, Some("interrupted (SIGINT)"));
        let t = table(&r);
        assert!(
            t.contains("verify stopped early: interrupted (SIGINT)"),
            "{t}"
        );
        assert!(
            t.contains("INCOMPLETE: 0 failed, 0 warning(s), 0 reload(s) of /etc/baton/api.toml"),
            "{t}"
        );
    }
}
