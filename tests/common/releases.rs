//! The releases layout deploy tools use, for the tests of issue 16 (`tests/release.rs`,
//! `tests/history.rs`): `<dir>/releases/<name>/run.sh`, each a release of the example worker
//! whose answers carry its name, and `current` flipped to one of them atomically.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::example_bin;

/// `<dir>/releases/<name>/run.sh` and a `current` symlink, as a deploy script makes them.
pub struct Releases {
    pub dir: PathBuf,
}

impl Releases {
    pub fn new(dir: &Path) -> Releases {
        fs::create_dir_all(dir.join("releases")).expect("releases dir");
        Releases {
            dir: dir.to_path_buf(),
        }
    }

    /// A good release runs the example worker, whose answers carry its `MARK`; a broken one
    /// exits at once.
    pub fn add(&self, name: &str, good: bool) {
        let d = self.dir.join("releases").join(name);
        fs::create_dir_all(&d).expect("release dir");
        fs::write(d.join("MARK"), name).expect("MARK");
        let body = match good {
            true => format!(
                "export HELLO_MARK=\"$(cat \"$(dirname \"$0\")/MARK\")\"\nexec {}\n",
                example_bin("hello").display()
            ),
            false => format!("echo \"release {name} is broken\" >&2\nexit 1\n"),
        };
        let run = d.join("run.sh");
        fs::write(&run, format!("#!/bin/sh\n{body}")).expect("run.sh");
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// `ln -sfn releases/<name> current`, atomically: a new link renamed over the old one.
    pub fn point(&self, name: &str) {
        let tmp = self.dir.join("current.tmp");
        let _ = fs::remove_file(&tmp);
        symlink(format!("releases/{name}"), &tmp).expect("symlink");
        fs::rename(&tmp, self.current()).expect("rename");
    }

    pub fn current(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// The release as baton names it: its resolved path.
    pub fn path(&self, name: &str) -> String {
        self.dir
            .join("releases")
            .join(name)
            .canonicalize()
            .expect("release")
            .display()
            .to_string()
    }
}

/// A config for a releases layout: `top` (`command`, …), `instances`, the control socket, one
/// socket on `port`, `notify` readiness (5 s, plus `readiness` lines), a 3 s drain, then `tail`
/// (more tables).
pub fn releases_config(
    port: u16,
    ctl: &Path,
    top: &str,
    instances: u32,
    readiness: &str,
    tail: &str,
) -> String {
    format!(
        r#"{top}
instances = {instances}
control   = "{ctl}"

[sockets]
http = "127.0.0.1:{port}"

[readiness]
kind    = "notify"
timeout = "5s"
{readiness}
[drain]
timeout = "3s"
{tail}"#,
        ctl = ctl.display()
    )
}

/// `command = ["<current>/run.sh"]`: the release's run.sh, through the link.
pub fn run_current(current: &Path) -> String {
    format!("command   = [\"{}/run.sh\"]", current.display())
}
