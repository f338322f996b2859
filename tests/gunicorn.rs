//! An unchanged third-party app: gunicorn from PyPI takes the sockets through LISTEN_FDS and
//! sends READY=1 from its master process; reloads under load lose nothing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn gunicorn_available() {
    let out = Command::new("python3")
        .args(["-m", "gunicorn", "--version"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "gunicorn is not installed for python3 (`.ci/run` installs it: pip install gunicorn): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gunicorn_reloads_under_load_with_notify_readiness() {
    let _g = serial();
    gunicorn_available();
    let apps = repo_dir().join("tests/apps");
    let baton = Baton::spawn("gunicorn", |port, ctl| {
        format!(
            r#"command = ["python3", "-m", "gunicorn", "--no-control-socket", "--workers", "2",
             "--graceful-timeout", "10", "--chdir", "{apps}", "app:application"]
instances = 1
control = "{ctl}"

[sockets]
http = "127.0.0.1:{port}"

[readiness]
kind = "notify"
timeout = "30s"

[drain]
timeout = "15s"
"#,
            apps = apps.display(),
            ctl = ctl.display()
        )
    });
    baton.wait_serving(Duration::from_secs(30));
    let (code, body) = http_get(baton.port, "/", Duration::from_secs(10)).expect("GET");
    assert_eq!(code, 200);
    assert!(body.starts_with("hello from gunicorn"), "{body}");
    let keep = Load::start(baton.port, "keepalive", 2, 200);
    let close = Load::start(baton.port, "close", 2, 200);
    // back to back: each reload already waits for a new gunicorn master to start and be ready
    baton.paced_reloads(
        5,
        Duration::ZERO,
        Duration::from_secs(20),
        gunicorn_workers,
        |_| assert_eq!(children_of(baton.pid()).len(), 1, "one gunicorn master"),
    );
    assert_no_failures(&keep.stop(), 100);
    assert_no_failures(&close.stop(), 100);
    assert!(
        baton.log_text().contains("ready (READY=1 from pid"),
        "readiness came from gunicorn's own READY=1"
    );
}
