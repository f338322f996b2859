//! What `baton status` and `baton reload` make of the server's answer: parsing, validation
//! and rendering of a reply line (the raw line comes from [`crate::control::request`]).
//! Pure functions, no I/O: a reply from a baton that lies or is broken is an error message,
//! never a panic.

use std::time::Duration;

use crate::control::{ReloadReply, Status};
use crate::supervisor::fmt_duration;

/// Longest time a status reply may report (about 300 years): anything beyond is not from a
/// baton.
pub const MAX_REPORTED_SECS: f64 = 1e10;

/// `baton status` without `--json`: the table for a status reply line, or why the line is
/// not a status a baton could send (the caller prints "unexpected reply: …").
pub fn status_text(line: &str) -> Result<String, String> {
    let s = serde_json::from_str::<Status>(line).map_err(|e| e.to_string())?;
    check_status(&s)?;
    Ok(render_status(&s))
}

/// The answer to a reload request (its numbers are unsigned integers: serde refuses
/// negative, fractional or out-of-range ones).
pub fn parse_reload(line: &str) -> Result<ReloadReply, String> {
    serde_json::from_str::<ReloadReply>(line).map_err(|e| e.to_string())
}

/// Whether the baton that sent status reply `line` serves the config file `asked` (`reload
/// --config FILE`). Two files of one name share the default control path (`/etc/baton/api.toml`
/// and `./api.toml`), and a baton reloads only the file it runs: asked to reload another file,
/// it would reload its own. `Err` says which file it serves instead. Paths are compared with
/// their symlinks resolved where they exist; a reply that names no absolute file (the demo, or
/// a baton that keeps the relative path it was started with) is judged by what it names.
pub fn serves(line: &str, asked: &std::path::Path) -> Result<(), String> {
    let s = serde_json::from_str::<Status>(line).map_err(|e| format!("unexpected reply: {e}"))?;
    let resolved = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let served = match &s.config {
        None => return Err("the demo (no config file)".into()),
        Some(c) if std::path::Path::new(c).is_relative() => return Ok(()),
        Some(c) => c,
    };
    match resolved(std::path::Path::new(served)) == resolved(asked) {
        true => Ok(()),
        false => Err(shown(served)),
    }
}

/// `baton history` without `--json`: one line per generation, newest first (time, run,
/// generation, kind, outcome, release, config digest), then the reason of each that failed or
/// ended, and where the history is kept.
pub fn history_text(line: &str) -> Result<String, String> {
    use crate::history::{utc, Kind, Outcome};
    let h =
        serde_json::from_str::<crate::control::HistoryReply>(line).map_err(|e| e.to_string())?;
    let mut out = String::new();
    if h.generations.is_empty() {
        out.push_str("no generation has served or failed yet\n");
    }
    let mut rows = vec![[
        "GEN".to_string(),
        "STARTED (UTC)".into(),
        "KIND".into(),
        "OUTCOME".into(),
        "SERVED".into(),
        "RELEASE".into(),
        "CONFIG".into(),
    ]];
    let mut notes = Vec::new();
    for r in h.generations.iter().rev() {
        let gen = match r.run == h.run {
            true => r.generation.to_string(),
            // an earlier run of baton: its generation numbers started at 1 too
            false => format!("{} (run {})", r.generation, utc(r.run)),
        };
        let kind = match (r.kind, r.rollback_to) {
            (Kind::Rollback, Some(to)) => format!("rollback to {to}"),
            (k, _) => k.name().to_string(),
        };
        let served = match (r.swapped_ms, r.ended_ms) {
            (Some(s), Some(e)) => span(e.saturating_sub(s)),
            (Some(_), None) => "-".into(),
            (None, _) => "never".into(),
        };
        rows.push([
            gen.clone(),
            utc(r.started_ms),
            kind,
            r.outcome.name().into(),
            served,
            r.release.clone().unwrap_or_else(|| "-".into()),
            r.config_digest.clone(),
        ]);
        // why it failed or stopped ("replaced by generation N" says nothing the table does not)
        let noted = matches!(r.outcome, Outcome::Failed | Outcome::Stopped);
        if let Some(reason) = r.reason.as_ref().filter(|_| noted) {
            notes.push(format!("generation {gen} {}: {reason}", r.outcome.name()));
        }
    }
    if !h.generations.is_empty() {
        let widths: Vec<usize> = (0..7)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{:<w$}", shown(c), w = *w))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
    }
    for n in notes {
        out.push_str(&shown(&n));
        out.push('\n');
    }
    out.push_str(&match (&h.file, &h.unwritten) {
        (Some(f), Some(why)) => format!(
            "(the last {} kept in memory: {} cannot be written: {})\n",
            h.keep,
            shown(f),
            shown(why)
        ),
        (Some(f), None) => format!("(the last {} kept in {})\n", h.keep, shown(f)),
        (None, _) => format!(
            "(the last {} kept in memory only: no state directory)\n",
            h.keep
        ),
    });
    Ok(out)
}

/// `baton history --releases`: the releases of the generations a rollback may start again
/// (those that served: [`crate::history::Record::served`], and whose directory is still
/// there: `there`, which the caller answers from the file system), one per line, newest
/// first, each once, as they are (no JSON escaping, no control characters replaced: a deploy
/// script compares them with paths, e.g. to keep them when it prunes).
pub fn history_releases(line: &str, there: &dyn Fn(&str) -> bool) -> Result<String, String> {
    let h =
        serde_json::from_str::<crate::control::HistoryReply>(line).map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    for release in h
        .generations
        .iter()
        .rev()
        .filter(|r| r.served())
        .filter_map(|r| r.release.as_deref())
        .filter(|r| there(r))
    {
        if seen.insert(release) {
            out.push_str(release);
            out.push('\n');
        }
    }
    Ok(out)
}

/// How long a generation served: "850ms", "12.5s", "3m20s", "21h0m", "3d4h".
fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => fmt_duration(Duration::from_millis(ms)),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A status reply's times must be durations: finite, not negative, not absurd.
pub fn check_status(s: &Status) -> Result<(), String> {
    let time = |what: &str, v: f64| {
        if v.is_finite() && (0.0..=MAX_REPORTED_SECS).contains(&v) {
            Ok(())
        } else {
            Err(format!("{what} = {v} is not a time in seconds"))
        }
    };
    time("uptime_s", s.uptime_s)?;
    for g in &s.generations {
        time("age_s", g.age_s)?;
        for w in &g.workers {
            if let Some(u) = w.uptime_s {
                time("a worker's uptime_s", u)?;
            }
        }
    }
    Ok(())
}

/// Text from a reply as it may be shown on a terminal: control characters (escape
/// sequences) replaced.
pub fn shown(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// A duration from seconds of a checked reply (see [`check_status`]).
fn secs_f64(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or_default()
}

/// The table `baton status` prints, for a reply that passed [`check_status`].
pub fn render_status(s: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    // how many of the serving generation's workers are ready: "serving" alone said nothing
    // of a generation whose workers all crash-loop (a new user's trial: its release deleted)
    let serving = match s.serving_generation {
        None => "-".to_string(),
        Some(id) => match s.generations.iter().find(|g| g.generation == id) {
            None => id.to_string(),
            Some(g) => {
                let ready = g.workers.iter().filter(|w| w.state == "ready").count();
                let none = if ready == 0 { ": none answers" } else { "" };
                format!("{id} ({ready}/{} ready{none})", g.workers.len())
            }
        },
    };
    let _ = writeln!(
        out,
        "baton pid {} — {} — up {} — serving generation {serving} — reloads: {} ok, {} failed",
        s.pid,
        shown(&s.state),
        // whole seconds: "up 3m12s", not "up 192.4s"
        fmt_duration(Duration::from_secs(
            secs_f64(s.uptime_s).as_secs_f64().round() as u64
        )),
        s.reloads_ok,
        s.reloads_failed
    );
    for sock in &s.sockets {
        // the workers' descriptor is the one an app is configured with (fd 3, …)
        let fd = match sock.worker_fd {
            Some(w) => format!("workers' fd {w} (baton's fd {})", sock.fd),
            None => format!("baton's fd {}", sock.fd),
        };
        let _ = writeln!(
            out,
            "socket {}: {fd}, {} ({})",
            shown(&sock.name),
            shown(&sock.address),
            shown(&sock.source)
        );
    }
    if let Some(r) = &s.last_reload {
        let _ = writeln!(
            out,
            "last reload: {} in {} ms: {}",
            if r.ok { "ok" } else { "FAILED" },
            r.duration_ms,
            shown(&r.message)
        );
    }
    for g in &s.generations {
        if let Some(r) = &g.release {
            let _ = writeln!(
                out,
                "generation {} ({}): release {}",
                g.generation,
                shown(&g.role),
                shown(r)
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:<5} {:<9} {:<9} {:<9} {:<11} {:>8} {:>9}  STATUS",
        "GEN", "ROLE", "INSTANCE", "PID", "STATE", "RESTARTS", "UPTIME"
    );
    for g in &s.generations {
        for w in &g.workers {
            let _ = writeln!(
                out,
                "{:<5} {:<9} {:<9} {:<9} {:<11} {:>8} {:>9}  {}",
                g.generation,
                shown(&g.role),
                w.instance,
                w.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                shown(&w.state),
                w.restarts,
                w.uptime_s
                    .map(|u| fmt_duration(Duration::from_secs(secs_f64(u).as_secs())))
                    .unwrap_or_else(|| "-".into()),
                shown(
                    &w.status
                        .clone()
                        .or_else(|| w.last_exit.as_ref().map(|e| format!("last exit: {e}")))
                        .unwrap_or_default()
                )
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = r#"{"pid":7,"state":"serving","uptime_s":61.5,"config":"/etc/baton/api.toml","serving_generation":2,"sockets":[{"name":"http","fd":3,"worker_fd":3,"address":"127.0.0.1:8080","source":"systemd"}],"generations":[{"generation":2,"role":"current","phase":"serving","release":"/srv/api/releases/2\u001b[31m","age_s":60.0,"workers":[{"instance":0,"pid":42,"state":"ready","restarts":1,"uptime_s":59.9,"status":"ok\u001b[31m","last_exit":null}]}],"reloads_ok":1,"reloads_failed":0,"last_reload":{"ok":true,"generation":2,"message":"generation 2 serving","duration_ms":41,"duration_us":41000,"slowest_start_us":40000}}"#;

    #[test]
    fn a_history_is_rendered_newest_first_with_earlier_runs_named() {
        let rec = |g: u64, run: u64, kind: &str, outcome: &str, swapped: &str, ended: &str| {
            format!(
                r#"{{"generation":{g},"run":{run},"kind":"{kind}","rollback_to":1,"release":"/r/{g}\u001b[2J","config_digest":"fnv1a64:00","config":"x","started_ms":{run},"swapped_ms":{swapped},"ended_ms":{ended},"outcome":"{outcome}","reason":"why {g}"}}"#
            )
        };
        let line = format!(
            r#"{{"run":86400000,"file":"/var/lib/baton/api/history.json","keep":10,"generations":[{},{},{}]}}"#,
            rec(2, 0, "reload", "stopped", "1000", "76201000"),
            rec(1, 86_400_000, "start", "failed", "null", "86400500"),
            rec(2, 86_400_000, "rollback", "serving", "86400900", "null"),
        );
        let text = history_text(&line).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("GEN "), "{text}");
        assert!(lines[1].starts_with("2 "), "{text}");
        assert!(
            lines[1].contains("1970-01-02 00:00:00  rollback to 1  serving"),
            "{text}"
        );
        assert!(lines[2].contains("failed   never"), "{text}");
        assert!(
            lines[3].starts_with("2 (run 1970-01-01 00:00:00)"),
            "{text}"
        );
        assert!(lines[3].contains("21h10m"), "{text}");
        assert!(lines[3].contains("/r/2\u{fffd}[2J"), "{text}");
        assert!(text.contains("\ngeneration 1 failed: why 1\n"), "{text}");
        assert!(
            text.contains("(run 1970-01-01 00:00:00) stopped: why 2\n"),
            "{text}"
        );
        assert!(!text.contains("serving: why"), "{text}");
        assert!(text.ends_with("(the last 10 kept in /var/lib/baton/api/history.json)\n"));
        assert!(history_text("{}").is_err());
    }

    #[test]
    fn history_releases_are_those_that_served_newest_first_once_each_unescaped() {
        let rec = |g: u64, release: &str, swapped: &str| {
            format!(
                r#"{{"generation":{g},"run":5,"kind":"reload","release":{release},"config_digest":"fnv1a64:00","config":"x","started_ms":{g},"swapped_ms":{swapped},"ended_ms":null,"outcome":"replaced"}}"#
            )
        };
        // oldest first, as baton sends them
        let line = format!(
            r#"{{"run":5,"file":null,"keep":10,"generations":[{},{},{},{},{},{}]}}"#,
            rec(1, r#""/r/a\"q\\b""#, "10"),
            rec(2, r#""/r/2""#, "20"),
            rec(3, r#""/r/failed""#, "null"),
            rec(4, "null", "40"),
            rec(5, r#""/r/a\"q\\b""#, "50"),
            rec(6, r#""/r/6\u001b""#, "60"),
        );
        let all = |_: &str| true;
        assert_eq!(
            history_releases(&line, &all).unwrap(),
            "/r/6\u{1b}\n/r/a\"q\\b\n/r/2\n"
        );
        // a new user's trial: releases whose directories were gone were listed
        let gone = |r: &str| r != "/r/2";
        assert_eq!(
            history_releases(&line, &gone).unwrap(),
            "/r/6\u{1b}\n/r/a\"q\\b\n"
        );
        let none = r#"{"run":5,"file":null,"keep":10,"generations":[]}"#;
        assert_eq!(history_releases(none, &all).unwrap(), "");
        assert!(history_releases("{}", &all).is_err());
    }

    #[test]
    fn a_status_is_rendered_with_control_characters_replaced() {
        let text = status_text(STATUS).unwrap();
        assert!(
            text.starts_with("baton pid 7 — serving — up 1m2s —"),
            "{text}"
        );
        assert!(text.contains("workers' fd 3 (baton's fd 3)"), "{text}");
        assert!(
            text.contains("— serving generation 2 (1/1 ready) — reloads: 1 ok"),
            "{text}"
        );
        assert!(text.contains("last reload: ok in 41 ms: generation 2 serving"));
        // a serving generation whose workers all crash-loop says so (a new user's trial: it
        // said "serving" alone while its release was deleted and no worker lived)
        let down = STATUS.replace(r#""state":"ready""#, r#""state":"restarting""#);
        let text = status_text(&down).unwrap();
        assert!(
            text.contains("— serving generation 2 (0/1 ready: none answers) —"),
            "{text}"
        );
        assert!(text.contains("ok\u{fffd}[31m"), "{text}");
        assert!(
            text.contains("generation 2 (current): release /srv/api/releases/2\u{fffd}[31m\n"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'));
    }

    #[test]
    fn absurd_times_are_errors() {
        for (from, to) in [
            ("\"uptime_s\":61.5", "\"uptime_s\":-1"),
            ("\"uptime_s\":61.5", "\"uptime_s\":1e300"),
            ("\"age_s\":60.0", "\"age_s\":1e11"),
            ("\"uptime_s\":59.9", "\"uptime_s\":-0.5"),
        ] {
            let bad = STATUS.replacen(from, to, 1);
            assert_ne!(bad, STATUS);
            let e = status_text(&bad).unwrap_err();
            assert!(e.contains("is not a time in seconds"), "{e}");
        }
        assert!(status_text("{}").is_err());
    }

    #[test]
    fn reload_numbers_must_be_unsigned_integers() {
        let good = r#"{"ok":true,"generation":3,"message":"m","duration_ms":1,"duration_us":1000,"slowest_start_us":null}"#;
        assert_eq!(parse_reload(good).unwrap().generation, Some(3));
        for bad in [
            good.replace("\"generation\":3", "\"generation\":1e300"),
            good.replace("\"duration_ms\":1", "\"duration_ms\":-1"),
            good.replace("\"duration_us\":1000", "\"duration_us\":0.5"),
        ] {
            assert!(parse_reload(&bad).is_err(), "{bad}");
        }
    }
}
