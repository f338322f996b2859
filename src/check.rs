//! `baton check`: what a valid config (see [`crate::config`]) may still get wrong at run time.
//!
//! [`findings`] looks at the machine the way `baton run` will: whether the worker's program
//! and the `exec` check's program exist and are executable (looked up like
//! [`worker::resolve_program`] does), whether `cwd` is a directory this user may enter, and
//! whether `release` resolves to a directory (as each generation resolves it at its start,
//! [`crate::release`]).
//! Each [`Finding`] has a [`Level`]: [`Level::RunTime`] findings (the worker would not start)
//! are warnings, and errors under `baton check --strict`, which the shipped units run as the
//! service's own user (`ExecStartPre=`); [`Level::Advice`] findings are always warnings.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, Handover, ReadinessKind};
use crate::release;
use crate::sys;
use crate::worker;

/// How much a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `baton run` would fail: an error with `--strict`, else a warning (a check run by
    /// another user, or before the app is deployed, may see another machine than the service).
    RunTime,
    /// Advice: always a warning.
    Advice,
    /// A note: what the config leaves to the environment, never a warning or an error.
    Note,
}

/// One thing `baton check` reports about a valid config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// The dotted key it concerns, like `command` or `readiness.exec`.
    pub key: &'static str,
    pub message: String,
}

impl Finding {
    pub fn run_time(key: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::RunTime,
            key,
            message: message.into(),
        }
    }

    pub fn advice(key: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Advice,
            key,
            message: message.into(),
        }
    }

    pub fn note(key: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Note,
            key,
            message: message.into(),
        }
    }

    /// Whether it makes `baton check` fail.
    pub fn is_error(&self, strict: bool) -> bool {
        strict && self.level == Level::RunTime
    }
}

/// Everything `baton check` reports about `config` besides its syntax and values, in the
/// order of the keys.
/// An argument of `command` that holds an absolute path through a symlinked directory after
/// a `=` (`--config=/srv/api/current/app.toml`, `current` a link), with that link: baton pins
/// whole-path arguments, not paths inside longer ones.
fn unpinned_argument(config: &Config) -> Option<(String, PathBuf)> {
    config.command.iter().skip(1).find_map(|arg| {
        let (_, value) = arg.split_once('=')?;
        let path = Path::new(value);
        if !path.is_absolute() || !path.exists() {
            return None;
        }
        let link = path
            .ancestors()
            .skip(1)
            .filter(|a| {
                a.symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
            })
            .last()?;
        Some((arg.clone(), link.to_path_buf()))
    })
}

pub fn findings(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let cwd_ok = match &config.cwd {
        None => true,
        Some(dir) => match check_dir(dir) {
            Ok(()) => true,
            Err(m) => {
                out.push(Finding::run_time("cwd", m));
                false
            }
        },
    };
    if cwd_ok {
        let argv0 = &config.command[0];
        match check_program(argv0, config.cwd.as_deref()) {
            Some(m) => out.push(Finding::run_time("command", m)),
            None if config.cwd.is_none()
                && argv0.contains('/')
                && Path::new(argv0).is_relative() =>
            {
                out.push(Finding::advice(
                    "command",
                    format!(
                        "{argv0:?} is relative to the directory baton runs in (under systemd: \
                         WorkingDirectory=, by default /); give an absolute path or set `cwd`"
                    ),
                ))
            }
            None => {}
        }
        if let ReadinessKind::Exec { argv, .. } = &config.readiness.kind {
            if let Some(m) = check_program(&argv[0], config.cwd.as_deref()) {
                out.push(Finding::run_time("readiness.exec", m));
            }
        }
    }
    if let Some(dir) = &config.release {
        match release::resolve_dir(dir, "the release directory") {
            Err(m) => out.push(Finding::run_time(
                "release",
                format!("{m}: every generation started now would fail"),
            )),
            Ok(resolved) if resolved == *dir => out.push(Finding::advice(
                "release",
                format!(
                    "{} is no symlink and goes through none: every generation names this same \
                     release, so `baton history` and `baton rollback` cannot tell releases \
                     apart (a rollback would run what the links under it point at then); name \
                     the link a deploy flips (the `current` of a releases layout), or leave \
                     `release` out",
                    dir.display(),
                ),
            )),
            Ok(_) if !release::pins_anything(config) => out.push(Finding::advice(
                "release",
                format!(
                    "neither `cwd` nor an argument of `command` is under {}: it names the \
                     release but pins nothing",
                    dir.display()
                ),
            )),
            Ok(_) => {}
        }
    }
    if let Some((arg, link)) = unpinned_argument(config) {
        let (flag, value) = arg.split_once('=').unwrap_or((&arg, ""));
        out.push(Finding::advice(
            "command",
            format!(
                "{arg}: the path goes through the symlink {shown} and is not pinned (only an \
                 argument that is a whole path is), so a worker restarted after a deploy reads \
                 whatever {shown} points at then; if the app takes it, pass it as two \
                 arguments: {flag:?}, {value:?}",
                shown = link.display(),
            ),
        ));
    }
    if config.history == 1 {
        out.push(Finding::advice(
            "history",
            "history = 1 keeps the serving generation alone: `baton rollback` has no earlier \
             one to start again, and the deploy script keeps no release for it; 2 or more \
             keeps one",
        ));
    }
    for name in config.env.keys() {
        if crate::config::TOP_LEVEL_KEYS.contains(&name.as_str()) {
            out.push(Finding::advice(
                "env",
                format!(
                    "`env.{name}` sets the workers' environment variable {name}; if it was \
                     meant as baton's `{name}`, that is a top-level key: put it above the first \
                     [table]"
                ),
            ));
        }
    }
    if config.sockets.is_empty() {
        out.push(Finding::note(
            "sockets",
            "no [sockets]: the sockets must then come from systemd (a socket unit, like the one \
             `baton units NAME` writes); outside it `baton run` has nothing to listen on, so add \
             a [sockets] table to run it there, like http = \"0.0.0.0:3000\"",
        ));
    }
    if let Some(m) = probe_socket_advice(config) {
        out.push(Finding::advice("readiness.kind", m));
    }
    if config.handover == Handover::Bind && config.readiness.kind == ReadinessKind::Notify {
        out.push(Finding::advice(
            "readiness.kind",
            "bind mode with notify readiness (the kind when `[readiness]` names none): the app must send READY=1 \
             itself; an app that binds its own port usually does not: kind = \"listen\"",
        ));
    }
    if config.handover == Handover::Bind {
        if let Err(e) = sys::trap_bind_supported() {
            out.push(Finding::run_time(
                "handover",
                format!("handover = \"bind\" cannot trap the workers' bind() here: {e}"),
            ));
        }
    }
    out
}

/// Apps known to serve every socket they are passed, so that they answer on the probe socket
/// of `http` and `tcp` (matched against the program's name and the arguments' names, so that
/// `python3 -m gunicorn` and `/venv/bin/gunicorn` count).
const SERVES_EVERY_SOCKET: &[&str] = &["gunicorn"];

/// `http` and `tcp` probe a socket the app gets after its own: most apps serve only the first
/// (fd 3) and never answer there, so every reload would fail. Unless the app is known to serve
/// every socket, say so.
fn probe_socket_advice(config: &Config) -> Option<String> {
    let kind = match &config.readiness.kind {
        ReadinessKind::Http { .. } => "http",
        ReadinessKind::Tcp { .. } => "tcp",
        _ => return None,
    };
    let known = config.command.iter().any(|a| {
        let name = Path::new(a).file_name().map(|n| n.to_string_lossy());
        name.is_some_and(|n| SERVES_EVERY_SOCKET.contains(&n.as_ref()))
    });
    if known {
        return None;
    }
    let fd = match config.sockets.len() {
        0 => "after the ones systemd passes".to_string(),
        n => format!("fd {}", 3 + n),
    };
    Some(format!(
        "kind = \"{kind}\" probes a private socket each worker gets after its own (`{}`, {fd}); \
         only apps that serve every passed socket answer there, and an app that serves only fd 3 \
         never does, so every reload would fail: use kind = \"accepting\" for such an app",
        worker::PROBE_FDNAME
    ))
}

/// Why `dir` cannot be a worker's working directory, if it cannot.
fn check_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(format!("the working directory {shown} does not exist"))
        }
        Err(e) => Err(format!("the working directory {shown}: {e}")),
        Ok(m) if !m.is_dir() => Err(format!("the working directory {shown} is not a directory")),
        Ok(_) => sys::may_execute(dir).map_err(|e| {
            format!(
                "the working directory {shown} cannot be entered by uid {}: {e}",
                sys::euid()
            )
        }),
    }
}

/// Why `argv0` would not start (as `baton run` finds it), if it would not.
fn check_program(argv0: &str, cwd: Option<&Path>) -> Option<String> {
    let found = match worker::resolve_program(argv0, cwd) {
        Ok(p) => p,
        Err(_) => return Some(missing(argv0, cwd)),
    };
    // resolve_program keeps a relative path relative to the workers' cwd
    let full = match cwd {
        Some(dir) if found.is_relative() => dir.join(&found),
        _ => found,
    };
    match sys::may_execute(&full) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "{} is not executable by uid {}: {e}",
            full.display(),
            sys::euid()
        )),
    }
}

/// What is wrong with an `argv0` that `resolve_program` did not find.
fn missing(argv0: &str, cwd: Option<&Path>) -> String {
    if !argv0.contains('/') {
        let path = std::env::var("PATH").unwrap_or_default();
        return format!(
            "{argv0:?} is not an executable file in any directory of PATH ({path}); \
             give its absolute path"
        );
    }
    let p = PathBuf::from(argv0);
    let (full, base) = match cwd {
        Some(dir) if p.is_relative() => (
            dir.join(&p),
            format!(" (relative to cwd {})", dir.display()),
        ),
        None if p.is_relative() => (
            p.clone(),
            format!(
                " (relative to the current directory {}: give an absolute path or set `cwd`)",
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| "?".into())
            ),
        ),
        _ => (p.clone(), String::new()),
    };
    match std::fs::metadata(&full) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            format!("{} does not exist{base}", full.display())
        }
        Err(e) => format!("{}{base}: {e}", full.display()),
        Ok(m) if !m.is_file() => format!("{} is not a regular file{base}", full.display()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            format!("{} has no execute permission{base}", full.display())
        }
        Ok(_) => format!("{} cannot be executed{base}", full.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test.toml").unwrap()
    }

    /// Its findings but the note a config without [sockets] gets (most of these have none).
    fn found(c: &Config) -> Vec<Finding> {
        let mut f = findings(c);
        f.retain(|f| f.key != "sockets");
        f
    }

    fn keys(c: &Config) -> Vec<(&'static str, Level)> {
        found(c).iter().map(|f| (f.key, f.level)).collect()
    }

    #[test]
    fn probe_kinds_are_advised_against_unless_the_app_serves_every_socket() {
        let probe = |cmd: &str, kind: &str| {
            config(&format!(
                "command = {cmd}\n[sockets]\nhttp = \"127.0.0.1:1\"\n[readiness]\nkind = \"{kind}\"\n"
            ))
        };
        let node = probe(r#"["/bin/true", "server.js"]"#, "http");
        assert_eq!(keys(&node), vec![("readiness.kind", Level::Advice)]);
        let f = &found(&node)[0];
        assert!(f.message.contains("(`baton-probe`, fd 4)"), "{}", f.message);
        assert!(
            f.message.contains("use kind = \"accepting\""),
            "{}",
            f.message
        );
        assert_eq!(keys(&probe(r#"["/bin/true"]"#, "tcp")).len(), 1);
        // gunicorn serves every socket it is passed
        assert!(found(&probe(r#"["/bin/true", "-m", "gunicorn"]"#, "http")).is_empty());
        assert!(found(&probe(r#"["/bin/true"]"#, "accepting")).is_empty());
        assert!(found(&probe(r#"["/bin/true"]"#, "notify")).is_empty());
    }

    /// A new user's trial: bind mode with no `readiness.kind` ran with `notify`, and at run
    /// time said only "not ready after 5s"; a config with no [sockets] passed `baton check`
    /// and failed `baton run` outside systemd.
    #[test]
    fn bind_mode_with_notify_is_advice_and_no_sockets_a_note() {
        let c = config(
            "command = [\"/bin/true\"]\nhandover = \"bind\"\n[sockets]\nhttp = \"127.0.0.1:1\"\n",
        );
        let f = findings(&c);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].key, f[0].level), ("readiness.kind", Level::Advice));
        assert!(f[0].message.contains("READY=1") && f[0].message.contains("kind = \"listen\""));
        let c = config(
            "command = [\"/bin/true\"]\nhandover = \"bind\"\n[sockets]\nhttp = \"127.0.0.1:1\"\n\
             [readiness]\nkind = \"listen\"\n",
        );
        assert!(findings(&c).is_empty());
        let c = config("command = [\"/bin/true\"]\n");
        let f = findings(&c);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].key, f[0].level), ("sockets", Level::Note));
        assert!(!f[0].is_error(true));
        assert!(f[0].message.contains("systemd") && f[0].message.contains("http = "));
    }

    /// `handover = "bind"` under [env] is a valid variable, and baton ran with fds.
    #[test]
    fn a_top_level_key_under_env_is_advice() {
        let c = config("command = [\"/bin/true\"]\n[env]\nhandover = \"bind\"\nHANDOVER = \"x\"\n");
        assert_eq!(keys(&c), [("env", Level::Advice)]);
        let f = found(&c);
        assert!(
            f[0].message.contains(
                "if it was meant as baton's `handover`, that is a top-level key: put it above"
            ),
            "{f:?}"
        );
    }

    #[test]
    fn a_path_inside_an_argument_through_a_symlink_is_advice() {
        // a new user's trial: `command = ["/bin/sh", "/srv/api/current/run.sh"]` was never
        // pinned; whole-path arguments are now, a path after `=` is not
        let dir = std::env::temp_dir().join(format!("baton-check-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("releases/1")).unwrap();
        std::fs::write(dir.join("releases/1/run.sh"), "").unwrap();
        std::os::unix::fs::symlink("releases/1", dir.join("current")).unwrap();
        let script = dir.join("current/run.sh").display().to_string();
        let whole = format!("command = [\"/bin/sh\", {script:?}]\n");
        assert!(found(&config(&whole)).is_empty(), "a whole path is pinned");
        let inside = format!("command = [\"/bin/sh\", \"--script={script}\"]\n");
        assert_eq!(keys(&config(&inside)), [("command", Level::Advice)]);
        let m = &found(&config(&inside))[0].message;
        assert!(
            m.contains(&dir.join("current").display().to_string())
                && m.contains(&format!("\"--script\", {script:?}")),
            "{m}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_release_that_is_no_link_is_advice() {
        // a new user's trial: `release = "/srv/api"` (the app's root, `current` under it):
        // every generation named the same release and a rollback ran what `current` said
        let c =
            config("command = [\"/bin/true\", \"/tmp/x\"]\ncwd = \"/tmp\"\nrelease = \"/tmp\"\n");
        assert_eq!(keys(&c), [("release", Level::Advice)]);
        assert!(
            found(&c)[0].message.contains("no symlink"),
            "{:?}",
            found(&c)
        );
        let c = config("command = [\"/bin/true\"]\nrelease = \"/\"\n");
        assert_eq!(keys(&c), [("release", Level::Advice)]);
    }

    #[test]
    fn history_of_one_is_advice() {
        // a new user's trial: `history = 1` made every rollback fail
        let c = config("command = [\"/bin/true\"]\nhistory = 1\n");
        assert_eq!(keys(&c), [("history", Level::Advice)]);
        assert!(found(&config("command = [\"/bin/true\"]\nhistory = 2\n")).is_empty());
    }

    #[test]
    fn a_good_config_has_no_findings() {
        assert!(found(&config("command = [\"/bin/true\"]\n")).is_empty());
        assert!(found(&config("command = [\"true\"]\ncwd = \"/\"\n")).is_empty());
        assert!(found(&config("command = [\"bin/true\"]\ncwd = \"/usr\"\n")).is_empty());
    }

    #[test]
    fn missing_programs_and_directories_are_run_time_findings() {
        let dir = std::env::temp_dir().join(format!("baton-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        sys::chmod(&plain, 0o644).unwrap();
        for (text, key, words) in [
            (
                "command = [\"/nonexistent/app\"]\n".to_string(),
                "command",
                "does not exist",
            ),
            (
                "command = [\"no-such-cmd-baton\"]\n".into(),
                "command",
                "PATH",
            ),
            (
                format!("command = [\"{}\"]\n", plain.display()),
                "command",
                "execute",
            ),
            (
                "command = [\"/bin\"]\n".into(),
                "command",
                "not a regular file",
            ),
            ("command = [\"./true\"]\ncwd = \"/bin\"\n".into(), "", ""),
            (
                "command = [\"./nope\"]\ncwd = \"/bin\"\n".into(),
                "command",
                "relative to cwd /bin",
            ),
            (
                "command = [\"/bin/true\"]\ncwd = \"/nonexistent\"\n".into(),
                "cwd",
                "does not exist",
            ),
            (
                "command = [\"/bin/true\"]\ncwd = \"/bin/true\"\n".into(),
                "cwd",
                "not a directory",
            ),
            (
                "command = [\"/bin/true\"]\n[readiness]\nkind = \"exec\"\nexec = [\"/no/check\"]\n"
                    .into(),
                "readiness.exec",
                "does not exist",
            ),
        ] {
            let f = found(&config(&text));
            if key.is_empty() {
                assert!(f.is_empty(), "{text}: {f:?}");
                continue;
            }
            assert_eq!(f.len(), 1, "{text}: {f:?}");
            assert_eq!((f[0].key, f[0].level), (key, Level::RunTime), "{text}");
            assert!(f[0].message.contains(words), "{text}: {}", f[0].message);
            assert!(f[0].is_error(true) && !f[0].is_error(false));
        }
        // a missing cwd is reported once, not again for the command inside it
        let c = config("command = [\"./app\"]\ncwd = \"/nonexistent\"\n");
        assert_eq!(keys(&c), [("cwd", Level::RunTime)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_release_that_does_not_resolve_is_a_run_time_finding() {
        let c = config("command = [\"/bin/true\"]\nrelease = \"/nonexistent/current\"\n");
        let f = found(&c);
        assert_eq!(keys(&c), [("release", Level::RunTime)]);
        assert!(
            f[0].message
                .contains("the release directory /nonexistent/current does not exist"),
            "{f:?}"
        );
        // one that pins nothing is advice
        let c = config("command = [\"/bin/true\"]\nrelease = \"/usr\"\n");
        assert_eq!(keys(&c), [("release", Level::Advice)]);
        // a link that pins an argument: nothing to say
        let dir = std::env::temp_dir().join(format!("baton-check-rel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("releases/1")).unwrap();
        std::os::unix::fs::symlink("releases/1", dir.join("current")).unwrap();
        let c = config(&format!(
            "command = [\"/bin/sh\", \"{d}/current/x\"]\nrelease = \"{d}/current\"\n",
            d = dir.display()
        ));
        assert!(found(&c).is_empty(), "{:?}", found(&c));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_relative_command_without_cwd_is_advice() {
        // found from here (the crate's directory, where cargo runs the tests), but relative
        let c = config("command = [\"./Cargo.toml\"]\n");
        assert_eq!(keys(&c), [("command", Level::RunTime)], "not executable");
        let c = config("command = [\"../../../../../../../../bin/true\"]\n");
        let f = found(&c);
        assert_eq!(keys(&c), [("command", Level::Advice)]);
        assert!(f[0].message.contains("set `cwd`"), "{f:?}");
        assert!(!f[0].is_error(true) && !f[0].is_error(false));
    }
}
