//! examples/deploy.sh outside systemd, for what needs no running baton (the end-to-end run under
//! the shipped units is `systemd::the_deploy_script_deploys_a_good_release_and_backs_out_of_a_broken_one`).

mod common;

use std::process::{Command, Stdio};

use common::*;

fn deploy_sh() -> std::path::PathBuf {
    repo_dir().join("examples/deploy.sh")
}

/// Two deploys of one root at once (a new user's trial: the first one's failure pointed
/// `current` back over the second one's success): the second fails at once, saying so, and
/// touches nothing.
#[test]
fn a_second_deploy_of_the_same_root_waits_for_nothing_and_changes_nothing() {
    let root = scratch("deploy-lock");
    std::fs::create_dir_all(root.join("releases/1")).unwrap();
    std::os::unix::fs::symlink("releases/1", root.join("current")).unwrap();
    let lock = root.join(".deploy.lock");
    // another deploy holds the lock: flock(1) until its stdin closes
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", "echo held; read _"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock (util-linux)");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    let out = Command::new("sh")
        .arg(deploy_sh())
        .args(["--service", "x", "--root"])
        .arg(&root)
        .args(["--reload-cmd", "true", "--", "touch", "built"])
        .output()
        .unwrap();
    drop(holder.stdin.take());
    let _ = holder.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another deploy of") && err.contains(".deploy.lock"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_link(root.join("current")).unwrap(),
        std::path::Path::new("releases/1")
    );
    let releases: Vec<_> = std::fs::read_dir(root.join("releases")).unwrap().collect();
    assert_eq!(releases.len(), 1, "no release was made");
    // the lock is free again: the same deploy runs (its reload is `true`)
    let out = Command::new("sh")
        .arg(deploy_sh())
        .args(["--service", "x", "--root"])
        .arg(&root)
        .args(["--reload-cmd", "true", "--", "touch", "built"])
        .env("BATON", "false")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn deploy(root: &std::path::Path, build: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg(deploy_sh())
        .args(["--service", "x", "--root"])
        .arg(root)
        .args(["--reload-cmd", "true", "--"])
        .args(build)
        .env("BATON", "false")
        .output()
        .unwrap()
}

/// A build in place (`current` the app's own directory; a new user's trial: a raw `mv` error,
/// and `current.tmp` left): refused, saying how to move to the releases layout, nothing made.
#[test]
fn a_build_in_place_is_refused_with_the_way_to_the_releases_layout() {
    let root = scratch("deploy-inplace");
    std::fs::create_dir_all(root.join("current")).unwrap();
    let out = deploy(&root, &["true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is a directory, not a symlink") && err.contains("ln -s releases/"),
        "{err}"
    );
    assert!(root.join("current").is_dir() && !root.join("current.tmp").exists());
    assert_eq!(std::fs::read_dir(root.join("releases")).unwrap().count(), 0);
}

/// A failed build says its exit status; `current` is untouched.
#[test]
fn a_failed_build_says_its_exit_status() {
    let root = scratch("deploy-buildfail");
    let out = deploy(&root, &["sh", "-c", "exit 3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the build failed (exit status 3)"), "{err}");
    assert!(!root.join("current").exists());
}
