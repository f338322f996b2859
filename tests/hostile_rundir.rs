//! Issue 13, item 6: without XDG_RUNTIME_DIR a non-root baton's default control directory is
//! /tmp/baton-<uid>; one owned by another user, or writable by group or others, is refused
//! by `baton run`, `baton status` and `baton reload` (another user could swap the socket).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;

/// An otherwise unused uid for the victim.
const UID: &str = "64999";

/// `baton ARGS` as the victim's uid, killed after 10 s: a baton that wrongly accepts a hostile
/// directory fails the test instead of hanging it.
fn as_victim(args: &[&std::ffi::OsStr]) -> Command {
    let mut c = Command::new("timeout");
    c.args(["--kill-after=2", "10", "setpriv"]);
    c.args([
        &format!("--reuid={UID}"),
        &format!("--regid={UID}"),
        "--clear-groups",
    ])
    .arg(baton_bin())
    .args(args)
    .env_remove("XDG_RUNTIME_DIR")
    .env_remove("NOTIFY_SOCKET");
    c
}

#[test]
fn a_runtime_dir_others_can_write_is_refused() {
    let _g = serial();
    let rundir = std::path::PathBuf::from(format!("/tmp/baton-{UID}"));
    let _ = std::fs::remove_dir_all(&rundir);
    let dir = scratch("rundir");
    let cfg = dir.join("api.toml");
    std::fs::write(
        &cfg,
        format!(
            "command = [\"{}\"]\n[sockets]\nhttp = \"127.0.0.1:{}\"\n",
            example_bin("hello").display(),
            free_port()
        ),
    )
    .unwrap();
    for (owner, mode) in [
        ("65534", 0o777),
        ("65534", 0o755),
        (UID, 0o777),
        (UID, 0o770),
    ] {
        let _ = std::fs::remove_dir_all(&rundir);
        std::fs::create_dir(&rundir).unwrap();
        std::fs::set_permissions(&rundir, std::fs::Permissions::from_mode(mode)).unwrap();
        assert!(Command::new("chown")
            .args([&format!("{owner}:{owner}")])
            .arg(&rundir)
            .status()
            .unwrap()
            .success());
        let c: &std::ffi::OsStr = cfg.as_ref();
        for args in [
            vec!["run".as_ref(), "--config".as_ref(), c],
            vec!["status".as_ref(), "--config".as_ref(), c],
            vec!["reload".as_ref(), "--config".as_ref(), c],
            vec!["status".as_ref()],
        ] {
            let out = as_victim(&args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{args:?} with {owner} {mode:o}: {err}"
            );
            assert!(
                err.contains("refusing the control socket directory"),
                "{args:?} {owner} {mode:o}: {err}"
            );
        }
    }
    // its own private directory works
    let _ = std::fs::remove_dir_all(&rundir);
    let mut run = as_victim(&["run".as_ref(), "--config".as_ref(), cfg.as_ref()])
        .spawn()
        .unwrap();
    wait_for("victim's baton answers", Duration::from_secs(20), || {
        as_victim(&["status".as_ref(), "--config".as_ref(), cfg.as_ref()])
            .output()
            .unwrap()
            .status
            .success()
    });
    signal(run.id() as i32, "TERM");
    let _ = run.wait();
    let _ = std::fs::remove_dir_all(&rundir);
    let _ = std::fs::remove_dir_all(&dir);
}
