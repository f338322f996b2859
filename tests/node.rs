//! Unchanged-style Node.js apps (`server.listen({fd})`, no notify support) under baton: the
//! `http` readiness check on the private probe socket, the `accepting` check with one socket,
//! and the README's drain snippet; reloads under load lose nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// `node APP` with `instances` workers and the given `[readiness]` lines, serving; then 5
/// reloads, one every 500 ms (so that every generation takes traffic), under keep-alive and
/// per-request load: each reload must succeed and not one request may fail.
fn reloads_under_load(name: &str, app: &Path, instances: usize, readiness: &str) -> Baton {
    let baton = Baton::spawn(name, |port, ctl| {
        format!(
            r#"command = ["node", "{app}"]
instances = {instances}
control = "{ctl}"

[sockets]
http = "127.0.0.1:{port}"

[readiness]
{readiness}
timeout = "20s"

[drain]
timeout = "10s"
"#,
            app = app.display(),
            ctl = ctl.display()
        )
    });
    baton.wait_serving(Duration::from_secs(30));
    let (code, body) = http_get(baton.port, "/", Duration::from_secs(10)).expect("GET");
    assert_eq!(code, 200, "{body}");
    let keep = Load::start(baton.port, "keepalive", 2, 300);
    let close = Load::start(baton.port, "close", 2, 200);
    baton.paced_reloads(
        5,
        Duration::from_millis(500),
        Duration::from_secs(15),
        |_| Vec::new(),
        |_| {},
    );
    assert_no_failures(&keep.stop(), 100);
    assert_no_failures(&close.stop(), 100);
    baton
}

#[test]
fn node_reloads_under_load_with_http_readiness() {
    let _g = serial();
    let app = repo_dir().join("tests/apps/server.js");
    let baton = reloads_under_load(
        "node",
        &app,
        2,
        "kind = \"http\"\npath = \"/\"\ninterval = \"50ms\"",
    );
    let (_, body) = http_get(baton.port, "/", Duration::from_secs(10)).expect("GET");
    assert!(body.starts_with("hello from node"), "{body}");
    assert!(baton.log_text().contains("readiness check passed"));
}

/// The same app with `kind = "accepting"`: no probe socket, so it gets exactly one socket (fd
/// 3, as `listen({fd: 3})` apps expect), and it is ready once libuv has fd 3 in its epoll set.
/// More workers than CPUs, reloads under load: nothing lost.
#[test]
fn node_reloads_under_load_with_accepting_readiness() {
    let _g = serial();
    let app = repo_dir().join("tests/apps/server.js");
    let n = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
    let baton = reloads_under_load("node-accepting", &app, n, "kind = \"accepting\"");
    let pid = baton.serving_pids()[0];
    assert_eq!(env_of(pid, "LISTEN_FDS").as_deref(), Some("1"));
    let log = baton.log_text();
    assert!(log.contains("serving 1 socket(s)"), "{log}");
    assert!(log.contains("readiness check passed"), "{log}");
}

/// The Node snippet of the README's "What your app must do", run as it is (with a one-line
/// handler): under reloads with keep-alive and per-request load, it loses nothing.
#[test]
fn the_readmes_node_snippet_drains_without_losing_a_request() {
    let _g = serial();
    let readme = std::fs::read_to_string(repo_dir().join("README.md")).expect("README");
    let start = readme.find("```js\n").expect("a js block in the README") + 6;
    let len = readme[start..].find("```").expect("end of the js block");
    let dir = scratch("node-readme");
    let app = dir.join("app.js");
    std::fs::write(
        &app,
        format!(
            "'use strict';\nconst app = (req, res) => res.end(`hello from ${{process.pid}}\\n`);\n{}",
            &readme[start..start + len]
        ),
    )
    .expect("write app.js");
    reloads_under_load("node-readme", &app, 2, "kind = \"accepting\"");
}
