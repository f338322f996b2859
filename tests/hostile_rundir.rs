//! Issue 13, item 6: without XDG_RUNTIME_DIR a non-root baton's default control directory is
//! /tmp/baton-<uid>; one owned by another user, or writable by group or others, is refused
//! by `baton run`, `baton status` and `baton reload` (another user could swap the socket).
//! An explicit control path may still be in such a directory: there the clients check who
//! serves the socket (SO_PEERCRED) and `baton run` never takes another user's socket.

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
    as_uid(Some(UID), args)
}

/// `baton ARGS` as `uid` (None: the test's own), killed after 10 s.
fn as_uid(uid: Option<&str>, args: &[&std::ffi::OsStr]) -> Command {
    let mut c = Command::new("timeout");
    c.args(["--kill-after=2", "10"]);
    if let Some(uid) = uid {
        c.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ]);
    }
    c.arg(baton_bin())
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

/// A running baton whose explicit control path is in a directory others may write (here
/// 0777): a stranger (uid 65534) replaces its control socket with a server of their own that
/// answers like a baton ("generation 99 serving"). `baton status` and `baton reload`, as root
/// and as another user, refuse to believe it: they check the server's uid (SO_PEERCRED), exit
/// 1 and name the path and the uid. `baton run` on that path refuses the stranger's socket,
/// live or stale, as root and as another user, and leaves it in place. Throughout, the real
/// baton serves with no failed request and answers `baton status` (through a second name the
/// test kept for its socket) within 100 ms; at exit it leaves the stranger's socket alone.
#[test]
fn a_hijacked_control_socket_fools_no_client() {
    use std::os::unix::fs::PermissionsExt;
    let _g = serial();
    let mut baton = Baton::start("hijack", |port, ctl| {
        let dir = ctl.parent().unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        hello_config(port, ctl, 1, "", "")
    });
    let real = baton.dir.join("real.sock");
    std::fs::hard_link(&baton.control, &real).unwrap();
    let watch = Watched::start(baton.port, StatusWatch::of(&real));
    let stranger = Stranger::bind(&baton.control, "stream");
    let strangers = owner_and_inode(&baton.control);
    let ctl = baton.control.display().to_string();
    let c: &std::ffi::OsStr = baton.control.as_ref();
    let cfg: &std::ffi::OsStr = baton.config.as_ref();
    for uid in [None, Some(UID)] {
        for args in [
            vec!["status".as_ref(), "--control".as_ref(), c],
            vec![
                "status".as_ref(),
                "--json".as_ref(),
                "--control".as_ref(),
                c,
            ],
            vec!["reload".as_ref(), "--control".as_ref(), c],
            vec!["reload".as_ref(), "--config".as_ref(), cfg],
        ] {
            let out = as_uid(uid, &args).output().unwrap();
            let (stdout, err) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} as {uid:?}, fooled: {stdout} {err}"
            );
            assert!(!stdout.contains("99"), "{args:?} as {uid:?}: {stdout}");
            assert!(
                err.contains(&ctl) && err.contains(&format!("served by uid {STRANGER}")),
                "{args:?} as {uid:?}: {err}"
            );
        }
    }
    // `baton run` takes neither the stranger's live socket nor, once they are gone, its file
    let other = baton.dir.join("other.toml");
    std::fs::write(&other, hello_config(free_port(), &baton.control, 1, "", "")).unwrap();
    let o: &std::ffi::OsStr = other.as_ref();
    let run = |uid: Option<&str>| {
        let out = as_uid(uid, &["run".as_ref(), "--config".as_ref(), o])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "baton run as {uid:?}: {err}");
        assert!(
            err.contains(&ctl) && err.contains(&format!("uid {STRANGER}")),
            "baton run as {uid:?}: {err}"
        );
        assert_eq!(owner_and_inode(&baton.control), strangers, "as {uid:?}");
    };
    run(None);
    stranger.exit();
    run(None);
    run(Some(UID));
    watch.finish("a stranger's server at the control path", 10);
    assert!(baton.stop().success());
    assert_eq!(
        owner_and_inode(&baton.control),
        strangers,
        "baton removed only its own socket at exit"
    );
}
