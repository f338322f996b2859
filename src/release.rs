//! What a generation runs from, resolved once at its start: its release.
//!
//! Deploys flip a symlink (`/srv/api/current` → `releases/5`, with `ln -sfn` and a rename) and
//! then reload. A worker that is restarted later (it crashed, it was killed) must run what its
//! generation started with, not whatever the symlink points at by then: after a failed reload
//! that is the broken release, and the generation that still serves would crash-loop.
//! [`pin`] resolves the symlinks once per generation (realpath) and returns the generation's
//! config with its paths rewritten under the resolved directories; every worker of the
//! generation, restarts included, is started from that.
//!
//! * `release` (optional, absolute): resolved; `cwd`, and every argument of `command` and of
//!   `readiness.exec` that is an absolute path under it (`/srv/api/current/dist/server.js`),
//!   are rewritten under the resolved directory, component by component (`--config=/srv/…`
//!   inside a longer argument is not a path and stays as written).
//! * `cwd`: resolved (a relative `command`, and the app's own relative paths, follow it).
//! * the program (`command[0]`, a path or a name found in `PATH`): its directory is resolved
//!   and the last component kept, so a venv's `bin/python` symlink still starts as the venv's
//!   python. A `PATH` lookup is done here too, once per generation, and pinned the same way:
//!   an interpreter under a symlinked directory on `PATH` does not change under a generation.
//!   `command[0]` written as a path becomes the resolved path; a bare name stays as `argv[0]`.
//! * every other argument of `command` and of `readiness.exec` that is a whole absolute path
//!   (`node /srv/api/current/server.js`), `release` or not: resolved the same way (a
//!   directory whole), except under /proc, /sys and /dev; a path that does not resolve stays
//!   as written.
//!
//! The release a generation names (status, reload reply, `BATON_RELEASE` in the journal) is
//! the resolved `release`; without it, the resolved `cwd` when it goes through a symlink;
//! else the directory of the first argument that goes through one; else the resolved `cwd`
//! when the program is under it or is found in `PATH`; else the program's resolved directory
//! (`release_source`).
//!
//! Reads the file system; changes nothing. An in-place build (the same directory rebuilt) has
//! nothing to resolve: only the releases layout makes a generation's files stay put.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::{Config, ReadinessKind};
use crate::worker;

/// A generation's paths, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// The directory the generation runs from, resolved.
    pub release: PathBuf,
    /// The program every worker of the generation executes.
    pub program: PathBuf,
    /// The config with `cwd`, `command` and `readiness.exec` rewritten.
    pub config: Config,
}

/// Resolve a generation's release and paths, or say why they cannot be.
pub fn pin(config: &Config) -> Result<Pinned, String> {
    let from = release_source(config);
    let mut c = config.clone();
    // the release's directory is read once, and every path under it follows that reading
    // (a deploy that flips the link meanwhile cannot split a generation across two releases)
    let release = match &from {
        Some((dir, what)) => Some((dir.clone(), resolve_dir(dir, what)?)),
        None => None,
    };
    if let Some((from, to)) = &release {
        rewrite_under(&mut c, from, to)?;
    }
    if let Some(dir) = &c.cwd {
        c.cwd = Some(resolve_dir(dir, "the working directory")?);
    }
    let argv0 = c.command[0].clone();
    let found = worker::resolve_program(&argv0, c.cwd.as_deref()).map_err(|e| e.to_string())?;
    let full = match (&c.cwd, found.is_relative()) {
        (Some(dir), true) => dir.join(&found),
        (None, true) => std::env::current_dir()
            .map_err(|e| format!("baton's working directory: {e}"))?
            .join(&found),
        (_, false) => found,
    };
    let program = resolve_parent(&full)?;
    if argv0.contains('/') {
        c.command[0] = utf8(&program)?.to_string();
    }
    // the arguments that are whole absolute paths elsewhere, and the readiness check's:
    // pinned like the program
    pin_args(&mut c.command[1..])?;
    if let ReadinessKind::Exec { argv, .. } = &mut c.readiness.kind {
        pin_args(argv)?;
    }
    let release = match release {
        Some((_, to)) => to,
        None => program
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
    };
    Ok(Pinned {
        release,
        program,
        config: c,
    })
}

/// The directory, as the config writes it, whose resolution is the generation's release, and
/// what to call it when it cannot be resolved: `release`; else the link `cwd` goes through
/// (`/srv/api/current` for `cwd = "/srv/api/current/dist"`); else the link the first argument
/// of `command` that is a whole absolute path goes through (`node
/// /srv/api/current/dist/server.js`: `/srv/api/current`, so that every path under the link
/// follows it, `current/conf.json` as well); else `cwd` when the program is under it, is
/// relative or is a bare name; else the program's directory when it is written as an absolute
/// path. `None`: the release is the directory the program is found in.
///
/// A link is the shallowest symlink among a path's directories (a file that is a link is not
/// a release, and links inside a release, to shared directories or a build, are not its
/// release); the links right under `/` (`/bin` → `usr/bin` on a merged /usr) are the
/// system's, not a deploy's. A link that points nowhere is one all the same: the generation
/// then fails, saying so.
///
/// [`pin`] and [`pin_at`] share it, so that a rollback replaces the very directory whose
/// resolution the history recorded.
fn release_source(config: &Config) -> Option<(PathBuf, &'static str)> {
    if let Some(r) = &config.release {
        return Some((r.clone(), "the release directory"));
    }
    if let Some(cwd) = &config.cwd {
        if let Some(link) = release_link(cwd, true) {
            return Some((link, "the release directory (cwd's link)"));
        }
    }
    let linked_arg = config.command[1..].iter().find_map(|a| {
        let p = Path::new(a.as_str());
        (p.is_absolute() && !kernel(p))
            .then(|| release_link(p, false))
            .flatten()
    });
    if let Some(link) = linked_arg {
        return Some((link, "the release directory (an argument's link)"));
    }
    let argv0 = Path::new(&config.command[0]);
    let bare = !config.command[0].contains('/');
    match &config.cwd {
        Some(cwd) if bare || argv0.is_relative() || argv0.starts_with(cwd) => {
            Some((cwd.clone(), "the working directory"))
        }
        _ if argv0.is_absolute() => argv0
            .parent()
            .map(|d| (d.to_path_buf(), "the command's directory")),
        _ => None,
    }
}

/// The shallowest symlink among `path`'s directories (`path` itself too when `itself`), not
/// one right under `/`: in `/srv/api/current/log/x`, `current`, not the `log` link a release
/// may hold (Capistrano's shared directories, `dist -> build`).
fn release_link(path: &Path, itself: bool) -> Option<PathBuf> {
    let dirs: Vec<&Path> = path.ancestors().skip(usize::from(!itself)).collect();
    dirs.into_iter()
        .rev()
        .filter(|a| a.parent().is_some_and(|p| p != Path::new("/")))
        .find(|a| {
            a.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
        })
        .map(Path::to_path_buf)
}

/// Under /proc, /sys or /dev: never a release, never rewritten.
fn kernel(p: &Path) -> bool {
    ["/proc", "/sys", "/dev"].iter().any(|k| p.starts_with(k))
}

/// [`pin`] for `baton rollback`: the generation runs `recorded`, the release an earlier
/// generation of this config resolved, not what the config's paths resolve to now. The
/// directory the release was resolved from ([`release_source`]) is replaced by `recorded` in
/// `cwd` and the arguments, then the paths are pinned as usual. A `recorded` that is gone is
/// the error.
pub fn pin_at(config: &Config, recorded: &Path) -> Result<Pinned, String> {
    let to = resolve_dir(recorded, "the release directory")?;
    let from = release_source(config).map(|(dir, _)| dir);
    let mut c = config.clone();
    if let Some(from) = &from {
        rewrite_under(&mut c, from, &to)?;
        if c.release.is_some() {
            c.release = Some(to.clone());
        }
    }
    let mut pinned = pin(&c)?;
    // the generation runs the recorded release, and says so: the config itself is not changed
    pinned.release = to;
    Ok(pinned)
}

/// Every argument that is a whole absolute path, pinned ([`pin_path`]).
fn pin_args(argv: &mut [String]) -> Result<(), String> {
    for a in argv.iter_mut() {
        if let Some(p) = pin_path(Path::new(a.as_str())) {
            *a = utf8(&p)?.to_string();
        }
    }
    Ok(())
}

/// An absolute path with its symlinks resolved, when that changes it: a directory whole, any
/// other path by its directory with the last component kept (a venv's `bin/python` link stays
/// the venv's). `None` for a path that is relative, cannot be resolved, resolves to itself,
/// or is under /proc, /sys or /dev, before or after (`/dev/fd/3` → `/proc/self/fd/3` would
/// name baton's own descriptors).
fn pin_path(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() || kernel(path) {
        return None;
    }
    let resolved = match std::fs::canonicalize(path) {
        Ok(r) if r.is_dir() => r,
        _ => {
            let (dir, name) = (path.parent()?, path.file_name()?);
            std::fs::canonicalize(dir).ok()?.join(name)
        }
    };
    (resolved != path && !kernel(&resolved)).then_some(resolved)
}

/// Whether `config.release` pins anything: `cwd` or an argument of `command` is under it.
pub fn pins_anything(config: &Config) -> bool {
    let Some(from) = &config.release else {
        return true;
    };
    let is_under = |p: &Path| p.strip_prefix(from).is_ok();
    config.cwd.as_deref().is_some_and(is_under)
        || config
            .command
            .iter()
            .any(|a| Path::new(a).is_absolute() && is_under(Path::new(a)))
}

/// `dir` with its symlinks resolved; it must be a directory.
pub fn resolve_dir(dir: &Path, what: &str) -> Result<PathBuf, String> {
    let shown = dir.display();
    match std::fs::canonicalize(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(format!("{what} {shown} does not exist"))
        }
        Err(e) => Err(format!("{what} {shown}: {e}")),
        Ok(p) if !p.is_dir() => Err(format!(
            "{what} {shown} is not a directory ({})",
            p.display()
        )),
        Ok(p) => Ok(p),
    }
}

/// `path` with its directory resolved and its last component kept.
fn resolve_parent(path: &Path) -> Result<PathBuf, String> {
    let shown = path.display();
    let fail = |e: io::Error| format!("the command's directory ({shown}): {e}");
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok(std::fs::canonicalize(dir).map_err(fail)?.join(name)),
        _ => std::fs::canonicalize(path).map_err(fail),
    }
}

/// `path` rewritten from under `from` to under `to`, if it is under `from`.
fn under(path: &Path, from: &Path, to: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(from).ok()?;
    Some(match rest.as_os_str().is_empty() {
        true => to.to_path_buf(),
        false => to.join(rest),
    })
}

/// `cwd` and every argument of `command` and `readiness.exec` that is a path under `from`,
/// rewritten under `to`.
fn rewrite_under(c: &mut Config, from: &Path, to: &Path) -> Result<(), String> {
    if let Some(p) = c.cwd.as_deref().and_then(|cwd| under(cwd, from, to)) {
        c.cwd = Some(p);
    }
    rewrite_args(&mut c.command, from, to)?;
    if let ReadinessKind::Exec { argv, .. } = &mut c.readiness.kind {
        rewrite_args(argv, from, to)?;
    }
    Ok(())
}

/// Every argument that is an absolute path under `from`, rewritten under `to`.
fn rewrite_args(argv: &mut [String], from: &Path, to: &Path) -> Result<(), String> {
    for a in argv.iter_mut() {
        if !Path::new(a.as_str()).is_absolute() {
            continue;
        }
        if let Some(p) = under(Path::new(a.as_str()), from, to) {
            *a = utf8(&p)?.to_string();
        }
    }
    Ok(())
}

fn utf8(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// `<tmp>/releases/{1,2}` with an executable `run.sh` each, `current` → `releases/1`.
    fn layout(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-release-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for r in ["1", "2"] {
            let d = dir.join("releases").join(r);
            std::fs::create_dir_all(d.join("dist")).unwrap();
            let run = d.join("run.sh");
            std::fs::write(&run, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        symlink("releases/1", dir.join("current")).unwrap();
        dir.canonicalize().unwrap()
    }

    fn config(text: &str) -> Config {
        Config::parse(text, "test.toml").unwrap()
    }

    #[test]
    fn the_command_path_is_resolved_once() {
        let dir = layout("command");
        let c = config(&format!(
            "command = [\"{}/current/run.sh\", \"--flag\"]\n",
            dir.display()
        ));
        let p = pin(&c).unwrap();
        let r1 = dir.join("releases/1");
        assert_eq!(p.release, r1);
        assert_eq!(p.program, r1.join("run.sh"));
        assert_eq!(
            p.config.command,
            [r1.join("run.sh").display().to_string(), "--flag".into()]
        );
        // the symlink flips: this generation's pin does not move, the next one's does
        std::fs::remove_file(dir.join("current")).unwrap();
        symlink("releases/2", dir.join("current")).unwrap();
        assert_eq!(p.program, r1.join("run.sh"));
        assert_eq!(pin(&c).unwrap().release, dir.join("releases/2"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn cwd_and_a_relative_command_follow_it() {
        let dir = layout("cwd");
        let c = config(&format!(
            "command = [\"./run.sh\"]\ncwd = \"{}/current\"\n",
            dir.display()
        ));
        let p = pin(&c).unwrap();
        let r1 = dir.join("releases/1");
        assert_eq!(p.config.cwd.as_deref(), Some(r1.as_path()));
        assert_eq!(p.release, r1);
        assert_eq!(p.program, r1.join("run.sh"));
        // a bare name keeps its argv[0]; the release is the cwd
        let c = config(&format!(
            "command = [\"sh\", \"run.sh\"]\ncwd = \"{}/current\"\n",
            dir.display()
        ));
        let p = pin(&c).unwrap();
        assert_eq!(p.config.command[0], "sh");
        assert!(
            p.program.is_absolute() && p.program.ends_with("sh"),
            "{p:?}"
        );
        assert_eq!(p.release, r1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn release_rewrites_cwd_and_the_arguments_under_it() {
        let dir = layout("key");
        let cur = dir.join("current");
        let c = config(&format!(
            "command = [\"/bin/sh\", \"{cur}/run.sh\", \"--config={cur}/x\", \"{cur}\"]\n\
             cwd = \"{cur}/dist\"\nrelease = \"{cur}/\"\n\
             [readiness]\nkind = \"exec\"\nexec = [\"{cur}/run.sh\", \"check\"]\n",
            cur = cur.display()
        ));
        assert!(pins_anything(&c));
        let p = pin(&c).unwrap();
        let r1 = dir.join("releases/1");
        assert_eq!(p.release, r1);
        assert_eq!(p.config.cwd, Some(r1.join("dist")));
        assert_eq!(
            p.config.command,
            [
                // merged /usr: /bin is itself a symlink
                Path::new("/bin")
                    .canonicalize()
                    .unwrap()
                    .join("sh")
                    .display()
                    .to_string(),
                r1.join("run.sh").display().to_string(),
                format!("--config={}/x", cur.display()),
                r1.display().to_string(),
            ]
        );
        let ReadinessKind::Exec { argv, .. } = &p.config.readiness.kind else {
            panic!("exec");
        };
        assert_eq!(argv[0], r1.join("run.sh").display().to_string());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_rollback_pins_the_recorded_release_not_the_symlink() {
        let dir = layout("at");
        let (r1, r2) = (dir.join("releases/1"), dir.join("releases/2"));
        std::fs::remove_file(dir.join("current")).unwrap();
        symlink("releases/2", dir.join("current")).unwrap();
        let cur = dir.join("current");
        for top in [
            format!("command = [\"{}/run.sh\"]\n", cur.display()),
            format!("command = [\"./run.sh\"]\ncwd = \"{}\"\n", cur.display()),
            format!("command = [\"/bin/sh\", \"{}/run.sh\"]\n", cur.display()),
            format!(
                "command = [\"sh\", \"{}/run.sh\"]\ncwd = \"{}\"\n",
                cur.display(),
                dir.display()
            ),
            format!(
                "command = [\"/bin/sh\", \"{c}/run.sh\"]\nrelease = \"{c}\"\ncwd = \"{c}/dist\"\n",
                c = cur.display()
            ),
        ] {
            let c = config(&top);
            assert_eq!(pin(&c).unwrap().release, r2, "{top}");
            let p = pin_at(&c, &r1).unwrap();
            assert_eq!(p.release, r1, "{top}");
            assert!(
                p.config
                    .command
                    .iter()
                    .any(|a| a.starts_with(r1.to_str().unwrap()))
                    || p.config.cwd.as_deref() == Some(r1.as_path()),
                "{top}: {p:?}"
            );
            assert!(
                !format!("{:?}", p.config).contains("releases/2"),
                "{top}: {p:?}"
            );
        }
        let c = config(&format!("command = [\"{}/run.sh\"]\n", cur.display()));
        std::fs::remove_dir_all(&r1).unwrap();
        let e = pin_at(&c, &r1).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn whole_path_arguments_are_pinned_without_release() {
        // a new user's trial: `node /srv/api/current/server.js` restarted from the broken
        // release after a failed deploy, because only `release` pinned arguments
        let dir = layout("args");
        let cur = dir.join("current");
        let r1 = dir.join("releases/1");
        let c = config(&format!(
            "command = [\"/bin/sh\", \"{cur}/run.sh\", \"--config={cur}/x\", \"{cur}\",              \"/dev/fd/3\", \"/proc/self/fd/0\", \"{cur}/missing/x\", \"/nope/x\", \"rel/x\"]\n",
            cur = cur.display()
        ));
        let p = pin(&c).unwrap();
        assert_eq!(
            p.release, r1,
            "the first argument through a link names the release"
        );
        assert_eq!(
            p.config.command[1..],
            [
                r1.join("run.sh").display().to_string(),
                format!("--config={}/x", cur.display()),
                r1.display().to_string(),
                // never baton's own descriptors
                "/dev/fd/3".into(),
                "/proc/self/fd/0".into(),
                // a path under the link follows the link's one reading, even one that is
                // not there (yet); one that does not resolve stays as written
                r1.join("missing/x").display().to_string(),
                "/nope/x".into(),
                "rel/x".into(),
            ]
        );
        // a readiness check's paths too
        let c = config(&format!(
            "command = [\"/bin/sh\"]\n[readiness]\nkind = \"exec\"\nexec = [\"{cur}/run.sh\", \"{cur}/dist\"]\n",
            cur = cur.display()
        ));
        let ReadinessKind::Exec { argv, .. } = &pin(&c).unwrap().config.readiness.kind else {
            panic!("exec");
        };
        assert_eq!(
            argv,
            &[
                r1.join("run.sh").display().to_string(),
                r1.join("dist").display().to_string()
            ]
        );
        // a static cwd and a bare program: the argument through the link names the release
        let c = config(&format!(
            "command = [\"sh\", \"{cur}/run.sh\"]\ncwd = \"{}\"\n",
            dir.display(),
            cur = cur.display()
        ));
        assert_eq!(pin(&c).unwrap().release, r1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn every_path_under_the_link_follows_one_release_in_a_rollback() {
        // a new user's trial: `node current/dist/server.js current/conf.json` rolled back with
        // the server of release 1 and the conf of release 2 (only `current/dist` was replaced)
        let dir = layout("link");
        let (r1, r2) = (dir.join("releases/1"), dir.join("releases/2"));
        let cur = dir.join("current");
        let c = config(&format!(
            "command = [\"sh\", \"{c}/dist/x.js\", \"{c}/run.sh\"]\ncwd = \"{c}/dist\"\n",
            c = cur.display()
        ));
        assert_eq!(
            pin(&c).unwrap().release,
            r1,
            "the link, not cwd, is the release"
        );
        std::fs::remove_file(&cur).unwrap();
        symlink("releases/2", &cur).unwrap();
        let p = pin_at(&c, &r1).unwrap();
        assert_eq!(p.release, r1);
        assert_eq!(p.config.cwd, Some(r1.join("dist")));
        assert_eq!(
            p.config.command[1..],
            [
                r1.join("dist/x.js").display().to_string(),
                r1.join("run.sh").display().to_string()
            ]
        );
        assert_eq!(pin(&c).unwrap().release, r2);
        // a link that points nowhere fails the generation, naming it (not "release /usr/bin")
        std::fs::remove_file(&cur).unwrap();
        symlink("releases/gone", &cur).unwrap();
        let c = config(&format!(
            "command = [\"sh\", \"{}/run.sh\"]\n",
            cur.display()
        ));
        let e = pin(&c).unwrap_err();
        assert!(
            e.contains(&cur.display().to_string()) && e.contains("does not exist"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_link_inside_a_release_is_not_the_release() {
        // a new user's trial: `current/dist -> build` in each release; the release was taken
        // to be `current/dist`, and a rollback mixed two releases
        let dir = layout("inner");
        let (r1, r2) = (dir.join("releases/1"), dir.join("releases/2"));
        for r in [&r1, &r2] {
            std::fs::remove_dir_all(r.join("dist")).unwrap();
            std::fs::create_dir_all(r.join("build")).unwrap();
            symlink("build", r.join("dist")).unwrap();
        }
        let cur = dir.join("current");
        let c = config(&format!(
            "command = [\"sh\", \"{c}/dist/x.js\", \"{c}/run.sh\"]\n",
            c = cur.display()
        ));
        assert_eq!(pin(&c).unwrap().release, r1);
        std::fs::remove_file(&cur).unwrap();
        symlink("releases/2", &cur).unwrap();
        let p = pin_at(&c, &r1).unwrap();
        assert_eq!(
            p.config.command[1..],
            [
                r1.join("build/x.js").display().to_string(),
                r1.join("run.sh").display().to_string()
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn what_cannot_be_resolved_is_said() {
        let dir = layout("missing");
        let c = config(&format!(
            "command = [\"/bin/sh\"]\nrelease = \"{}/nope\"\n",
            dir.display()
        ));
        assert!(!pins_anything(&c));
        let e = pin(&c).unwrap_err();
        assert!(
            e.starts_with("the release directory ") && e.ends_with("/nope does not exist"),
            "{e}"
        );
        let c = config(&format!(
            "command = [\"/bin/sh\"]\nrelease = \"{}/current/run.sh\"\n",
            dir.display()
        ));
        assert!(pin(&c).unwrap_err().contains("is not a directory"));
        let c = config(&format!(
            "command = [\"/bin/sh\"]\ncwd = \"{}/gone\"\n",
            dir.display()
        ));
        assert!(pin(&c).unwrap_err().contains("working directory"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
