//! `handover = "bind"` under a real systemd (the harness of tests/systemd.rs): the packaged
//! template units unchanged (their `SystemCallFilter=` allows `seccomp`), the socket from
//! `baton@NAME.socket`, an app that binds its own port, `systemctl reload`.
//!
//! ```text
//! cargo build --release --bins --examples
//! cargo test --release --test systemd_bind -- --nocapture
//! ```

use std::time::Duration;

#[path = "sdbox/harness.rs"]
mod harness;
use harness::*;

/// A Python http.server on `PORT` (its own bind), answering with its pid.
const APP: &str = "import http.server, os\n\
class H(http.server.BaseHTTPRequestHandler):\n    \
def do_GET(self):\n        \
b = ('pid %d\\n' % os.getpid()).encode()\n        \
self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n\
http.server.HTTPServer(('', int(os.environ['PORT'])), H).serve_forever()\n";

#[test]
fn a_bind_mode_app_under_the_template_reloads_with_systemctl() {
    let bx = SdBox::up("bind");
    bx.install_baton_and_units();
    let port = free_port();
    bx.write("/opt/app/srv.py", APP);
    bx.write(
        "/etc/baton/bindapp.toml",
        &format!(
            "command = [\"/usr/bin/python3\", \"/opt/app/srv.py\"]\nhandover = \"bind\"\n\
             [env]\nPORT = \"{port}\"\n[readiness]\nkind = \"listen\"\ntimeout = \"10s\"\n"
        ),
    );
    bx.listen_on("baton@bindapp.socket", port);
    assert!(bx.systemctl(&["daemon-reload"]).ok());
    let out = bx.systemctl(&["start", "baton@bindapp.socket"]);
    assert!(out.ok(), "{out}");
    let pid = |what: &str| -> String {
        let (code, body) = http_get(port, "/", Duration::from_secs(30)).expect(what);
        assert_eq!(code, 200, "{what}: {body}");
        body
    };
    let first = pid("the first request (socket activation)");
    let out = bx.systemctl(&["reload", "baton@bindapp.service"]);
    assert!(
        out.ok(),
        "systemctl reload: {out}\n{}",
        bx.journal("baton@bindapp.service")
    );
    let second = pid("after the reload");
    let journal = bx.journal("baton@bindapp.service");
    assert_ne!(first, second, "a new worker serves\n{journal}");
    assert_eq!(
        journal.matches(": it got socket `http`").count(),
        2,
        "each generation's bind got systemd's socket\n{journal}"
    );
    assert!(
        journal.contains("ready (listen() on all 1 socket(s))"),
        "{journal}"
    );
    // where the environment refuses the filter, `baton check` (the units' ExecStartPre) says so
    let out = bx.sh(
        "systemd-run --quiet --wait --pipe -p SystemCallFilter=~seccomp -p SystemCallErrorNumber=EPERM \
         /usr/bin/baton check --strict --config /etc/baton/bindapp.toml",
    );
    assert!(!out.ok(), "{out}");
    assert!(
        out.to_string()
            .contains("handover = \"bind\" cannot trap the workers' bind() here"),
        "{out}"
    );
}

/// Issue 15's test under systemd: the Express server of a common zero-downtime guide
/// (tests/apps/express/guide.js, its port from `PORT`, as in tests/bind.rs) with 3 instances,
/// bind mode and listen readiness, under the shipped `api.socket` and `api.service`, unchanged;
/// five `systemctl reload`s under keep-alive and per-request load. Every reload succeeds and
/// the old workers are gone; no connection is refused and none times out (its SIGTERM handler
/// destroys busy connections: a request cut that way is the app's, and counted apart).
#[test]
fn the_guides_express_server_reloads_under_api_socket() {
    const MODULES: &str = "/opt/baton-tests/node/node_modules";
    assert!(
        std::path::Path::new(MODULES)
            .join("express/package.json")
            .exists(),
        "{MODULES}/express is missing: run tests/setup.sh"
    );
    const GUIDE: &str = include_str!("apps/express/guide.js");
    let code = GUIDE.replace("server.listen(3000,", "server.listen(process.env.PORT,");
    assert_ne!(code, GUIDE, "the guide's server.listen(3000, …)");
    let bx = SdBox::up("bind-express");
    bx.install_baton_and_units();
    let port = free_port();
    bx.write("/opt/app/server.js", &code);
    bx.write("/opt/app/package.json", "{ \"type\": \"module\" }\n");
    assert!(bx
        .sh(&format!("ln -s {MODULES} /opt/app/node_modules"))
        .ok());
    bx.write(
        "/etc/baton/api.toml",
        &format!(
            "command = [\"/usr/bin/node\", \"/opt/app/server.js\"]\ninstances = 3\n\
             handover = \"bind\"\n[env]\nPORT = \"{port}\"\n[readiness]\nkind = \"listen\"\n\
             timeout = \"20s\"\n[drain]\ntimeout = \"10s\"\n"
        ),
    );
    bx.listen_on("api.socket", port);
    assert!(bx.systemctl(&["daemon-reload"]).ok());
    let out = bx.systemctl(&["start", "api.socket", "api.service"]);
    assert!(out.ok(), "start api: {out}\n{}", bx.journal("api"));
    bx.wait_state("api.service", "active", Duration::from_secs(30));
    let first = express_health_pid(port);
    // each request takes the app 100 ms: 4 connections give about 40 per second
    let keep = Load::start(port, "keepalive", 4, 100);
    let close = Load::start(port, "close", 4, 100);
    for i in 1..=5 {
        // a reload every second or so, so that each generation serves a while under the load
        std::thread::sleep(Duration::from_millis(800));
        let out = bx.systemctl(&["reload", "api.service"]);
        assert!(
            out.ok(),
            "systemctl reload #{i}: {out}\n{}",
            bx.journal("api")
        );
    }
    let reports = [keep.stop(), close.stop()];
    let journal = bx.journal("api.service");
    for r in &reports {
        let f = &r["failures"];
        for kind in [
            "refused",
            "timeout",
            "connect_timeout",
            "connect_other",
            "bad_status",
        ] {
            assert_eq!(f[kind], 0, "{kind}: {r}\n{journal}");
        }
        assert!(
            r["ok"].as_u64().unwrap_or(0) >= 100,
            "too little traffic: {r}"
        );
    }
    let last = express_health_pid(port);
    assert_ne!(
        first, last,
        "a worker of the last generation answers\n{journal}"
    );
    assert!(
        !bx.sh(&format!("kill -0 {first}")).ok(),
        "generation 1's worker {first} is gone"
    );
    // 6 generations of 3 workers, each got systemd's socket through its own bind
    let binds = journal.matches(": it got socket `").count();
    assert!(binds >= 18, "{binds} worker_bind lines\n{journal}");
    assert!(journal.contains("listen() on all 1 socket(s)"), "{journal}");
}
