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
#[allow(unused_imports)] // the harness's load client is not used here
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
