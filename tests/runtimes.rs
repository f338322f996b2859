//! Real runtimes under the SHIPPED units, in a real systemd (the systemd harness,
//! `tests/sdbox/`): Node 20, gunicorn 27 and uvicorn (CPython 3.11, in a venv under /opt), a
//! static Go binary and OpenJDK 17, each exactly as the README's recipe runs it. The units in
//! `units/` are installed unchanged (only the socket's address is set, with a drop-in), so the
//! apps get the units' whole sandbox: the syscall filter, ProtectSystem=strict, ProtectHome,
//! PrivateTmp, no capabilities. Each test reloads under load and checks that no request failed,
//! that no process of the service died of SIGSYS, and that every reload served a new generation.
//!
//! Needs root, the release binaries, and what `tests/setup.sh` installs (nodejs, golang-go,
//! openjdk-17-jdk-headless, the venv /opt/baton-tests/venv with gunicorn and uvicorn):
//!
//! ```text
//! bash tests/setup.sh && cargo build --release --examples --bins
//! cargo test --release --test runtimes -- --nocapture
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

#[path = "sdbox/harness.rs"]
mod harness;
use harness::*;

const APPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps");
/// The Python venv of tests/setup.sh (outside /home and /root: ProtectHome=yes hides those).
const VENV: &str = "/opt/baton-tests/venv";
/// Where the apps are deployed inside the container.
const APP_DIR: &str = "/opt/app";

/// How many reloads each test makes under load.
const RELOADS: u64 = 3;
/// Time between two reloads.
const PACE: Duration = Duration::from_millis(700);

// ------------------------------------------------------------------------------------------
// apps

/// One app as its README recipe runs it.
struct App {
    /// Runtime name: the body of its answers starts with `hello from {runtime} pid`.
    runtime: &'static str,
    /// The baton config (`/etc/baton/NAME.toml`).
    config: String,
    /// Workers per generation (`instances` in the config).
    instances: usize,
}

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Runs a build command on the host; panics with its output when it fails.
fn build(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: cannot run {cmd:?}: {e} (tests/setup.sh installs the toolchains)")
    });
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// tests/apps/goserver built static (CGO_ENABLED=0) with Debian's golang-go, once per run.
fn go_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = tmp().join("goserver");
        build(
            "go build",
            Command::new("go")
                .args(["build", "-trimpath", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(format!("{APPS}/goserver"))
                .env("CGO_ENABLED", "0")
                .env("GOCACHE", tmp().join("gocache")),
        );
        out
    })
}

/// tests/apps/java/Server.java compiled with javac, once per run.
fn java_classes() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = tmp().join("java");
        build(
            "javac",
            Command::new("javac")
                .arg("-d")
                .arg(&out)
                .arg(format!("{APPS}/java/Server.java")),
        );
        out
    })
}

// ------------------------------------------------------------------------------------------
// set-up inside the container

/// Copies baton, the shipped units, and the apps in; points `socket` at `port` (drop-in).
fn install(bx: &SdBox, socket: &str, port: u16) {
    bx.install_baton_and_units();
    bx.listen_on(socket, port);
    for f in ["server.js", "app.py", "asgi.py"] {
        bx.cp(&Path::new(APPS).join(f), &format!("{APP_DIR}/{f}"));
    }
    bx.sh_ok("systemctl daemon-reload");
}

/// Lines of the journal of `unit` that report a death by SIGSYS (the syscall filter).
fn sigsys_lines(bx: &SdBox, unit: &str) -> Vec<String> {
    bx.journal(unit)
        .lines()
        .filter(|l| l.contains("SIGSYS") || l.contains("status=31/SYS"))
        .map(str::to_string)
        .collect()
}

/// Starts `unit` (`api` or `baton@NAME`) on `port` with `app`, reloads it RELOADS times under
/// keep-alive and close load, stops it, and checks what an operator would: every request
/// answered, every reload served a new generation, nothing died of SIGSYS. Returns the
/// keep-alive load's report.
fn serve_and_reload(bx: &SdBox, unit: &str, port: u16, app: &App) -> Value {
    let name = unit.strip_prefix("baton@").unwrap_or(unit);
    let socket = format!("{unit}.socket");
    let service = format!("{unit}.service");
    let control = format!("/run/baton/{name}/control.sock");
    install(bx, &socket, port);
    bx.write(&format!("/etc/baton/{name}.toml"), &app.config);
    let out = bx.systemctl(&["start", &socket]);
    assert!(out.ok(), "systemctl start {socket}: {out}");
    let mut c = Checks::new();

    // the first request starts the service (socket activation) and is answered by the app
    let first = http_get(port, "/", Duration::from_secs(30));
    let want = format!("hello from {} pid", app.runtime);
    let started = c.check(
        matches!(&first, Ok((200, b)) if b.starts_with(&want)),
        format!(
            "the first request is answered by {}: {first:?}",
            app.runtime
        ),
    );
    if started {
        bx.wait_state(&service, "active", Duration::from_secs(30));
        let keep = Load::start(port, "keepalive", 4, 200);
        let close = Load::start(port, "close", 2, 100);
        for i in 1..=RELOADS {
            // paced, so that every generation takes traffic
            std::thread::sleep(PACE);
            let out = bx.systemctl(&["reload", unit]);
            c.check(out.ok(), format!("systemctl reload {unit} #{i}: {out}"));
        }
        let (keep, close) = (keep.stop(), close.stop());
        for r in [&keep, &close] {
            c.check(
                r["failed"] == 0 && r["ok"].as_u64().unwrap_or(0) > 200,
                format!(
                    "loadgen saw 0 failed requests: ok={} failed={} {} errors={}",
                    r["ok"], r["failed"], r["failures"], r["errors"]
                ),
            );
        }
        let pids = answered_by(&keep).len() + answered_by(&close).len();
        c.check(
            pids > app.instances,
            format!("later generations answered too ({pids} pids answered)"),
        );
        match bx.baton_status(&["--control", &control]) {
            Some(s) => {
                c.check(
                    s["serving_generation"] == RELOADS + 1 && s["reloads_ok"] == RELOADS,
                    format!(
                        "generation {} serves after {RELOADS} good reloads: serving={} ok={}",
                        RELOADS + 1,
                        s["serving_generation"],
                        s["reloads_ok"]
                    ),
                );
                c.check(
                    serving_workers(&s).len() == app.instances,
                    format!("{} workers serve: {:?}", app.instances, serving_workers(&s)),
                );
            }
            None => {
                c.check(false, format!("baton status --control {control} answers"));
            }
        }
        c.check(
            bx.show(&service, "NRestarts") == "0",
            format!("{service} was never restarted"),
        );
        let out = bx.systemctl(&["stop", unit]);
        c.check(out.ok(), format!("systemctl stop {unit}: {out}"));
        let result = bx.show(&service, "Result");
        c.check(
            result == "success",
            format!("{service} stopped cleanly (Result={result})"),
        );
        c.finish(bx, &[&service]);
        let sigsys = sigsys_lines(bx, &service);
        assert!(sigsys.is_empty(), "killed by SIGSYS: {sigsys:?}");
        keep
    } else {
        let sigsys = sigsys_lines(bx, &service);
        c.check(
            sigsys.is_empty(),
            format!("no process of {service} died of SIGSYS: {sigsys:?}"),
        );
        c.finish(bx, &[&service]);
        unreachable!("a check failed above")
    }
}

// ------------------------------------------------------------------------------------------
// the recipes

/// The README's Node recipe: `server.listen({fd: 3})` (one server per passed fd), `http`
/// readiness (the app answers on the private probe socket too). Three workers under the
/// packaged template. Fails with the units of 0.1 (`SystemCallFilter=@system-service` on
/// systemd 252): V8 calls pkey_alloc and is killed with SIGSYS.
#[test]
fn node_under_the_template() {
    let bx = SdBox::up("rt-node");
    let app = App {
        runtime: "node",
        instances: 3,
        config: format!(
            r#"command   = ["/usr/bin/node", "{APP_DIR}/server.js"]
instances = 3

[readiness]
kind    = "accepting"
timeout = "20s"

[drain]
timeout = "10s"
"#
        ),
    };
    serve_and_reload(&bx, "baton@node", free_port(), &app);
}

/// The README's gunicorn 27 recipe: gunicorn takes LISTEN_FDS itself and sends READY=1 from
/// its master (`notify`); `--no-control-socket`, since its default control socket is under
/// $HOME (hidden by ProtectHome=yes) and would be one path for two generations.
#[test]
fn gunicorn_under_api_service() {
    let bx = SdBox::up("rt-gunicorn");
    let app = App {
        runtime: "gunicorn",
        instances: 1,
        config: format!(
            r#"command   = ["{VENV}/bin/gunicorn", "--no-control-socket", "--workers", "2",
             "--graceful-timeout", "10", "--chdir", "{APP_DIR}", "app:application"]
instances = 1

[readiness]
kind    = "notify"
timeout = "30s"

[drain]
timeout = "15s"
"#
        ),
    };
    serve_and_reload(&bx, "api", free_port(), &app);
}

/// The README's uvicorn recipe: uvicorn on fd 3 (`python asgi.py`: uvicorn's Server with a drain
/// that keeps kept-alive requests; plain `uvicorn --fd 3` closes idle keep-alive connections at
/// SIGTERM and loses a request now and then). It serves fd 3 only and sends no READY=1: `delay`
/// readiness. Two workers under the packaged template. Also checks the keep-alive latency that
/// `NoDelay=true` in the socket unit buys (see `nodelay_*` below).
#[test]
fn uvicorn_under_the_template() {
    let bx = SdBox::up("rt-uvicorn");
    let app = App {
        runtime: "uvicorn",
        instances: 2,
        config: uvicorn_config(2, false),
    };
    let keep = serve_and_reload(&bx, "baton@uvicorn", free_port(), &app);
    let p50 = keep["latency_us"]["p50"].as_u64().unwrap_or(u64::MAX);
    assert!(
        p50 < 20_000,
        "keep-alive p50 {p50} us: with NoDelay=true it is well under 40 ms (the delayed ACK)"
    );
}

/// The uvicorn recipe: `command` is `uvicorn --fd 3 ...` (`cli`), or `python asgi.py`, which runs
/// the same app through uvicorn's Server with a drain that loses no kept-alive request.
fn uvicorn_config(instances: usize, cli: bool) -> String {
    let command = if cli {
        format!(
            r#"["{VENV}/bin/uvicorn", "--fd", "3", "--no-access-log", "--app-dir", "{APP_DIR}", "asgi:app"]"#
        )
    } else {
        format!(r#"["{VENV}/bin/python", "{APP_DIR}/asgi.py"]"#)
    };
    format!(
        r#"command   = {command}
instances = {instances}

[readiness]
kind    = "accepting"
timeout = "20s"

[drain]
timeout = "10s"
"#
    )
}

/// The README's Go recipe: a static net/http server that takes fd 3 with os.NewFile +
/// net.FileListener (tests/apps/goserver, one server per passed fd; `accepting` readiness).
#[test]
fn go_under_api_service() {
    let bx = SdBox::up("rt-go");
    bx.cp(go_binary(), &format!("{APP_DIR}/goserver"));
    let app = App {
        runtime: "go",
        instances: 2,
        config: format!(
            r#"command   = ["{APP_DIR}/goserver"]
instances = 2

[readiness]
kind    = "accepting"
timeout = "20s"

[drain]
timeout = "10s"
"#
        ),
    };
    serve_and_reload(&bx, "api", free_port(), &app);
}

/// OpenJDK 17 under the template: the JVM starts under the syscall filter and serves the
/// socket it inherits as stdin (`System.inheritedChannel()`, hence `<&3`); `accepting` readiness sees its thread
/// blocked in accept on it.
#[test]
fn jvm_under_the_template() {
    let bx = SdBox::up("rt-jvm");
    let classes = java_classes();
    bx.cp(
        &classes.join("Server.class"),
        &format!("{APP_DIR}/java/Server.class"),
    );
    let app = App {
        runtime: "java",
        instances: 1,
        config: format!(
            r#"command   = ["/bin/sh", "-c", "exec java -Xmx64m -cp {APP_DIR}/java Server <&3"]
instances = 1

[readiness]
kind    = "accepting"
timeout = "30s"

[drain]
timeout = "10s"
"#
        ),
    };
    serve_and_reload(&bx, "baton@java", free_port(), &app);
}

/// `NoDelay=true` in the shipped socket units: uvicorn `--fd 3` sets no TCP_NODELAY itself and
/// writes a response's head and body separately, so without it the body waits for the client's
/// delayed ACK (~40 ms) on every kept-alive request. Measures the keep-alive latency of one
/// connection with the shipped socket unit and with a drop-in `NoDelay=false`.
#[test]
fn nodelay_cuts_uvicorn_keepalive_latency() {
    const WINDOW: Duration = Duration::from_secs(3);
    let bx = SdBox::up("rt-nodelay");
    let port = free_port();
    install(&bx, "baton@uvicorn.socket", port);
    bx.write("/etc/baton/uvicorn.toml", &uvicorn_config(1, true));
    let measure = |bx: &SdBox| -> Value {
        let out = bx.systemctl(&["start", "baton@uvicorn.socket"]);
        assert!(out.ok(), "start baton@uvicorn.socket: {out}");
        let first = http_get(port, "/", Duration::from_secs(30));
        assert!(matches!(&first, Ok((200, _))), "first request: {first:?}");
        bx.wait_state("baton@uvicorn.service", "active", Duration::from_secs(30));
        let load = Load::start(port, "keepalive", 1, 50);
        std::thread::sleep(WINDOW); // the measurement window
        let r = load.stop();
        let out = bx.systemctl(&["stop", "baton@uvicorn.socket", "baton@uvicorn.service"]);
        assert!(out.ok(), "stop: {out}");
        r
    };
    let with = measure(&bx);
    bx.write(
        "/etc/systemd/system/baton@uvicorn.socket.d/nodelay-off.conf",
        "[Socket]\nNoDelay=false\n",
    );
    bx.sh_ok("systemctl daemon-reload");
    let without = measure(&bx);
    let p = |r: &Value, q: &str| r["latency_us"][q].as_u64().unwrap_or(u64::MAX);
    eprintln!(
        "  uvicorn keep-alive, 1 connection: NoDelay=true p50 {} us p99 {} us ({} requests); \
         NoDelay=false p50 {} us p99 {} us ({} requests)",
        p(&with, "p50"),
        p(&with, "p99"),
        with["ok"],
        p(&without, "p50"),
        p(&without, "p99"),
        without["ok"]
    );
    let mut c = Checks::new();
    c.check(
        with["failed"] == 0 && without["failed"] == 0,
        "no request failed",
    );
    c.check(
        p(&with, "p50") < 10_000,
        format!("p50 with the shipped NoDelay=true: {} us", p(&with, "p50")),
    );
    c.check(
        p(&without, "p50") > 30_000,
        format!(
            "p50 with NoDelay=false shows the delayed ACK: {} us",
            p(&without, "p50")
        ),
    );
    c.finish(&bx, &["baton@uvicorn.service"]);
}

/// `ProtectHome=yes` hides an app under /home (the journal says why), and the drop-in the
/// README gives for it, `ProtectHome=read-only`, makes the same app start.
#[test]
fn app_under_home_needs_the_protecthome_drop_in() {
    let bx = SdBox::up("rt-home");
    let port = free_port();
    install(&bx, "api.socket", port);
    bx.cp(&Path::new(APPS).join("server.js"), "/home/app/server.js");
    bx.write(
        "/etc/baton/api.toml",
        "command = [\"/usr/bin/node\", \"/home/app/server.js\"]\ninstances = 1\n\n\
         [readiness]\nkind = \"http\"\ntimeout = \"20s\"\n",
    );
    bx.sh_ok("systemctl start api.socket");
    let mut c = Checks::new();
    let first = http_get(port, "/", Duration::from_secs(20));
    c.check(
        !matches!(&first, Ok((200, _))),
        format!("the app under /home is not served under ProtectHome=yes: {first:?}"),
    );
    c.check(
        within(Duration::from_secs(20), || {
            bx.journal("api.service")
                .contains("Cannot find module '/home/app/server.js'")
        }),
        "the journal has node's reason (Cannot find module '/home/app/server.js')",
    );
    bx.write(
        "/etc/systemd/system/api.service.d/home.conf",
        "[Service]\nProtectHome=read-only\n",
    );
    bx.sh_ok(
        "systemctl daemon-reload && systemctl reset-failed api.service api.socket; \
         systemctl restart api.socket",
    );
    let again = http_get(port, "/", Duration::from_secs(20));
    c.check(
        matches!(&again, Ok((200, b)) if b.starts_with("hello from node pid")),
        format!("with the drop-in ProtectHome=read-only it is: {again:?}"),
    );
    c.finish(&bx, &["api.service"]);
}
