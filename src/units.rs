//! The systemd units baton ships and writes, rendered from one text: `baton units NAME --listen
//! ADDR --config FILE` prints a socket + service pair for a user's app, and the files in `units/`
//! are this renderer's output too (`api.*` is `baton units api`, `baton@.*` the template form; a
//! unit test fails when they differ). Also the validation of `baton units`' arguments. Pure text.

use std::fmt::Write;
use std::net::{SocketAddrV4, SocketAddrV6};
use std::path::Path;

/// Extra arguments of the units' `ExecStartPre=baton check`: `--strict` makes the findings that
/// would fail at run time (command not found, cwd missing) errors, checked as the service's own
/// user.
pub const CHECK_ARGS: &str = " --strict";

/// Extra arguments of `baton run` and `baton reload` in the units for service `name`: none when
/// the config is `NAME.toml`, whose default control socket `/run/baton/NAME/control.sock` is in
/// the units' `RuntimeDirectory=baton/NAME` (so `baton status --config` finds it); else that
/// path, named.
fn control_args(name: &str, config: &str) -> String {
    let stem = Path::new(config).file_stem().map(|s| s.to_string_lossy());
    if stem.as_deref() == Some(name) {
        String::new()
    } else {
        format!(" --control /run/baton/{name}/control.sock")
    }
}

/// What a pair of units is rendered for.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Unit name without the suffix: `api`, or `baton@` for the template.
    pub unit: String,
    /// The instance's name: the config's stem and the runtime directory (`api`, or `%i`).
    pub name: String,
    /// `ListenStream=` values.
    pub listen: Vec<String>,
    /// The baton config (absolute path).
    pub config: String,
    /// The baton binary (absolute path).
    pub baton: String,
    /// The first line of both files: how they were made.
    pub origin: String,
    /// The template form (`baton@.socket`, `baton@.service`)?
    pub template: bool,
}

impl Spec {
    /// The pair `baton units NAME --listen ... --config CONFIG --baton BATON` writes.
    pub fn app(name: &str, listen: &[String], config: &Path, baton: &Path) -> Spec {
        let config = config.display().to_string();
        let baton = baton.display().to_string();
        let mut cmd = format!("baton units {name}");
        for l in listen {
            let _ = write!(cmd, " --listen {l}");
        }
        let _ = write!(cmd, " --config {config}");
        if baton != "/usr/bin/baton" {
            let _ = write!(cmd, " --baton {baton}");
        }
        Spec {
            unit: name.to_string(),
            name: name.to_string(),
            listen: listen.to_vec(),
            config,
            baton,
            origin: format!("Written by `{cmd}`."),
            template: false,
        }
    }

    /// The packaged template: instance NAME reads /etc/baton/NAME.toml.
    #[cfg_attr(not(test), allow(dead_code))] // the test that writes units/
    pub fn template() -> Spec {
        Spec {
            unit: "baton@".into(),
            name: "%i".into(),
            // a placeholder (a unix socket), replaced in a drop-in per instance
            listen: vec!["/run/baton-%i.sock".into()],
            config: "/etc/baton/%i.toml".into(),
            baton: "/usr/bin/baton".into(),
            origin: "The template of the baton package: instance NAME reads /etc/baton/NAME.toml."
                .into(),
            template: true,
        }
    }

    /// `units/api.socket` and `units/api.service`: the example of the README.
    #[cfg_attr(not(test), allow(dead_code))] // the test that writes units/
    pub fn example() -> Spec {
        Spec::app(
            "api",
            &["127.0.0.1:8080".into()],
            Path::new("/etc/baton/api.toml"),
            Path::new("/usr/bin/baton"),
        )
    }

    /// Unit name with the instance, as used inside the files: `api`, `baton@%i`.
    fn unit_i(&self) -> String {
        if self.template {
            format!("{}%i", self.unit)
        } else {
            self.unit.clone()
        }
    }

    /// Unit and config as the comments show them: `api`, or `baton@NAME` for the template.
    fn shown(&self) -> (String, String) {
        if self.template {
            (
                format!("{}NAME", self.unit),
                self.config.replace("%i", "NAME"),
            )
        } else {
            (self.unit.clone(), self.config.clone())
        }
    }

    /// File names: (`api.socket`, `api.service`) or (`baton@.socket`, `baton@.service`).
    #[cfg_attr(not(test), allow(dead_code))] // the test that writes units/
    pub fn file_names(&self) -> (String, String) {
        (
            format!("{}.socket", self.unit),
            format!("{}.service", self.unit),
        )
    }

    /// The socket unit's text.
    pub fn socket(&self) -> String {
        let u = self.unit_i();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# {}.socket: the listening socket of {u}.service.",
            self.unit
        );
        let _ = writeln!(s, "# {}", self.origin);
        s.push_str(
            "# systemd owns the socket: it stays open while baton restarts (crash, kill -9, upgrade),\n\
             # so clients queue instead of being refused. The first connection starts the service.\n",
        );
        if self.template {
            s.push_str(
                "# Give every instance its own address in a drop-in:\n\
                 #   systemctl edit baton@NAME.socket\n\
                 #     [Socket]\n\
                 #     ListenStream=\n\
                 #     ListenStream=127.0.0.1:8081\n\
                 #   systemctl enable --now baton@NAME.socket\n",
            );
        } else {
            let _ = writeln!(s, "#   systemctl enable --now {u}.socket");
        }
        let _ = writeln!(
            s,
            "\n[Unit]\nDescription=Listening socket of {} (served by baton)\n",
            if self.template {
                "baton instance %i"
            } else {
                &u
            }
        );
        s.push_str("[Socket]\n");
        if self.template {
            s.push_str("# Placeholder address, replaced by the drop-in above.\n");
        }
        for addr in &self.listen {
            let _ = writeln!(s, "ListenStream={addr}");
        }
        s.push_str(
            "# Passed to baton in LISTEN_FDNAMES; baton hands it on to every worker under this name.\n\
             FileDescriptorName=http\n\
             # Connections wait in the accept queue while no worker accepts (baton starting or\n\
             # restarting); the kernel caps it at net.core.somaxconn (4096 on Linux >= 5.4).\n\
             Backlog=4096\n\
             # TCP_NODELAY; accepted connections inherit it. Without it an app that writes a response\n\
             # in two pieces (uvicorn) waits for the client's delayed ACK: ~40 ms per request on a\n\
             # kept-alive connection. Nothing on a unix socket (systemd logs \"TCP_NODELAY failed:\n\
             # Operation not supported\" for one; harmless).\n\
             NoDelay=true\n\
             \n\
             [Install]\n\
             WantedBy=sockets.target\n",
        );
        s
    }

    /// The service unit's text.
    pub fn service(&self) -> String {
        let u = self.unit_i();
        let (baton, config, name) = (&self.baton, &self.config, &self.name);
        let control = control_args(name, config);
        let (su, sc) = self.shown();
        let description = if self.template {
            "baton instance %i (zero-downtime reloads)".to_string()
        } else {
            format!("{u} behind baton (zero-downtime reloads)")
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# {}.service: baton supervising the app of {sc}.",
            self.unit
        );
        let _ = writeln!(s, "# {}", self.origin);
        let _ = writeln!(
            s,
            "#   systemctl reload {su}     # new generation; waits; fails if it was rolled back\n\
             #   systemctl status {su}     # Status: serving generation, last reload failure\n\
             #   baton status --config {sc}\n\
             #   journalctl -u {su} BATON_GENERATION=3\n\
             # Loosen the sandbox below for your app with `systemctl edit {su}` (see the README,\n\
             # \"What the units impose on the app\"), not by editing this file.\n\
             \n\
             [Unit]\n\
             Description={description}\n\
             Documentation=man:baton(1)\n\
             Requires={u}.socket\n\
             After={u}.socket\n\
             \n\
             [Service]\n\
             # READY=1 comes from baton once every worker of the first generation is ready.\n\
             # Workers notify baton's private socket, never systemd's: only baton may talk.\n\
             Type=notify\n\
             NotifyAccess=main\n\
             # Checks the config as the service's own user, in its sandbox, before baton starts.\n\
             ExecStartPre={baton} check{CHECK_ARGS} --config {config}\n\
             ExecStart={baton} run --config {config}{control}\n\
             # Synchronous on purpose: on systemd 252 (no Type=notify-reload) the reload job ends\n\
             # when ExecReload exits, so `systemctl reload` waits for the new generation and fails\n\
             # (with baton's reason in the journal) when it was rolled back.\n\
             ExecReload={baton} reload --config {config}{control}\n\
             # Bounds the start and every ExecReload (252 kills a reload that overruns it). baton\n\
             # extends it by [readiness] timeout + stable + 5s (EXTEND_TIMEOUT_USEC); keep it above\n\
             # that sum anyway.\n\
             TimeoutStartSec=90s\n\
             # Stop: SIGTERM to baton only; baton drains every worker, SIGKILLs their process groups\n\
             # at [drain] timeout, then exits. It asks for [drain] timeout + 5s (EXTEND_TIMEOUT_USEC),\n\
             # but keep TimeoutStopSec above [drain] timeout (default 30s) + a margin, else systemd's\n\
             # SIGKILL cuts in-flight requests. If baton itself dies (kill -9), `mixed` makes systemd\n\
             # SIGKILL whatever is left in the cgroup at once, so no worker outlives it.\n\
             KillMode=mixed\n\
             TimeoutStopSec=45s\n\
             Restart=on-failure\n\
             # /run/baton/{name}: the control socket (control.sock) and the workers' notify socket;\n\
             # removed when the service stops.\n\
             RuntimeDirectory=baton/{name}\n\
             # /var/lib/baton/{name}: baton's history of generations (history.json, what `baton\n\
             # history` shows and `baton rollback` starts again); kept across restarts.\n\
             StateDirectory=baton/{name}\n\
             LimitNOFILE=65536\n\
             # baton's event loop gets the CPU ahead of busy workers (a reload's swap is not delayed\n\
             # by the load it must not disturb); its workers do not keep it (each drops it just\n\
             # before it execs, to readiness.startup_nice until it is ready, then runs at nice 0).\n\
             Nice=-10\n\
             \n\
             # Sandbox. The workers (the app) inherit all of it.\n\
             NoNewPrivileges=yes\n\
             # Files the app creates are its user's only (0600; directories 0700).\n\
             UMask=0077\n\
             # The whole file system is read-only but /dev, /proc, /sys, /run/baton/{name} and\n\
             # /var/lib/baton/{name} (baton's own); give the app its state with\n\
             # ReadWritePaths=/var/lib/APP (or StateDirectory=APP).\n\
             ProtectSystem=strict\n\
             # /home, /root and /run/user are empty: no app, interpreter (pyenv, nvm) or venv there.\n\
             ProtectHome=yes\n\
             # A private /tmp and /var/tmp, emptied when the service stops.\n\
             PrivateTmp=yes\n\
             # /dev has only the pseudo devices (null, zero, random, urandom, tty, ...).\n\
             PrivateDevices=yes\n\
             ProtectKernelTunables=yes\n\
             ProtectKernelModules=yes\n\
             ProtectKernelLogs=yes\n\
             ProtectControlGroups=yes\n\
             ProtectClock=yes\n\
             ProtectHostname=yes\n\
             RestrictNamespaces=yes\n\
             RestrictRealtime=yes\n\
             RestrictSUIDSGID=yes\n\
             LockPersonality=yes\n\
             # No AF_NETLINK (listing network interfaces) or AF_PACKET.\n\
             RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
             SystemCallArchitectures=native\n\
             # @system-service plus @pkey: @system-service of systemd 252 (Debian 12) lacks the memory\n\
             # protection keys, and V8 (Node.js) calls pkey_alloc at start-up. Checked under this\n\
             # filter: Node 20, CPython 3.11 (gunicorn, uvicorn), a static Go binary, OpenJDK 17.\n\
             # seccomp: with handover = \"bind\" baton installs its bind()/listen() trap in each\n\
             # worker (a filter only ever restricts the process that installs it and its children).\n\
             SystemCallFilter=@system-service @pkey seccomp\n\
             # A call outside the filter fails with EPERM instead of killing the process (SIGSYS).\n\
             SystemCallErrorNumber=EPERM\n\
             # Root without capabilities: the sockets come from systemd, baton only signals its own\n\
             # children. Add CAP_NET_BIND_SERVICE if the config's [sockets] fallback must bind a\n\
             # port below 1024.\n\
             CapabilityBoundingSet=\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target"
        );
        s
    }
}

/// The pair (`NAME.socket`, `NAME.service`) of `baton units`, after [`validate`].
pub fn render(name: &str, listen: &[String], config: &Path, baton: &Path) -> (String, String) {
    let spec = Spec::app(name, listen, config, baton);
    (spec.socket(), spec.service())
}

/// Checks the arguments of `baton units`; the error says which one is wrong and what is allowed.
pub fn validate(name: &str, listen: &[String], config: &Path, baton: &Path) -> Result<(), String> {
    check_name(name)?;
    for l in listen {
        check_listen(l)?;
    }
    check_path("--config", config)?;
    check_path("--baton", baton)?;
    Ok(())
}

/// Longest NAME: with `.service` and `.socket` well under systemd's 255 bytes.
const MAX_NAME: usize = 64;

fn check_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid unit name {name:?}: {why}; a name is 1-{MAX_NAME} characters of A-Z a-z 0-9 \
             _ . - starting with a letter or digit (it names NAME.socket, NAME.service and \
             /run/baton/NAME)"
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME {
        return bad("it is too long");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return bad(&format!("{c:?} is not allowed"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or digit");
    }
    if name.contains("..") {
        return bad("\"..\" is not allowed");
    }
    if name.ends_with(".service") || name.ends_with(".socket") {
        return bad("give it without the .service/.socket suffix");
    }
    Ok(())
}

/// Longest unix socket path (sun_path holds 108 bytes with the terminating NUL).
const MAX_UNIX_PATH: usize = 107;

fn check_listen(addr: &str) -> Result<(), String> {
    let bad = |why: String| {
        Err(format!(
            "invalid --listen {addr:?}: {why}; give a port (8080), ip:port (127.0.0.1:8080), \
             [ipv6]:port ([::1]:8080) or the absolute path of a unix socket (/run/app.sock)"
        ))
    };
    if addr.starts_with('/') {
        if addr.len() > MAX_UNIX_PATH {
            return bad(format!(
                "a unix socket path has at most {MAX_UNIX_PATH} bytes, this one {}",
                addr.len()
            ));
        }
        if let Some(c) = addr.chars().find(|c| !path_char_ok(*c)) {
            return bad(format!("{c:?} is not allowed in the path"));
        }
        return Ok(());
    }
    if addr.bytes().all(|b| b.is_ascii_digit()) && !addr.is_empty() {
        return match addr.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => bad("a port is 1-65535".into()),
        };
    }
    let port = if addr.starts_with('[') {
        addr.parse::<SocketAddrV6>().map(|a| a.port())
    } else {
        addr.parse::<SocketAddrV4>().map(|a| a.port())
    };
    match port {
        Ok(0) => bad("port 0 is not allowed".into()),
        Ok(_) => Ok(()),
        Err(_) if addr.contains(':') && !addr.starts_with('[') && addr.matches(':').count() > 1 => {
            bad("an IPv6 address goes in brackets".into())
        }
        Err(_) => bad("not an address".into()),
    }
}

/// Characters a path may have in a unit file: no white space or control characters (they split or
/// end the value), no quotes, `\`, `%` (specifiers), `$` (variables) or `;`.
fn path_char_ok(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | '%' | '$' | ';'))
}

fn check_path(what: &str, path: &Path) -> Result<(), String> {
    let Some(text) = path.to_str() else {
        return Err(format!("{what} {}: not UTF-8", path.display()));
    };
    if !path.is_absolute() {
        return Err(format!(
            "{what} {text:?} is relative: systemd needs an absolute path (e.g. /etc/baton/api.toml)"
        ));
    }
    if let Some(c) = text.chars().find(|c| !path_char_ok(*c)) {
        return Err(format!(
            "{what} {text:?}: {c:?} is not allowed in a path written into a unit (no white space, \
             quotes, \\, %, $ or ;)"
        ));
    }
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!("{what} {text:?}: \"..\" is not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn renders_a_pair() {
        let (sock, svc) = render(
            "shop",
            &["127.0.0.1:9000".into(), "[::1]:9000".into()],
            Path::new("/etc/baton/shop.toml"),
            Path::new("/usr/bin/baton"),
        );
        assert!(sock.contains("ListenStream=127.0.0.1:9000\nListenStream=[::1]:9000\n"));
        assert!(sock.contains("\nNoDelay=true\n"));
        assert!(sock.contains("\nBacklog=4096\n"));
        assert!(svc.contains("\nRequires=shop.socket\n"));
        assert!(svc.contains("\nRuntimeDirectory=baton/shop\n"));
        assert!(svc.contains("\nStateDirectory=baton/shop\n"));
        assert!(svc.contains("\nExecReload=/usr/bin/baton reload --config /etc/baton/shop.toml\n"));
        // a config named otherwise: the control socket is named, in the runtime directory
        let (_, other) = render(
            "shop",
            &["127.0.0.1:9000".into()],
            Path::new("/srv/shop/baton.toml"),
            Path::new("/usr/bin/baton"),
        );
        assert!(other.contains(
            "\nExecReload=/usr/bin/baton reload --config /srv/shop/baton.toml --control \
             /run/baton/shop/control.sock\n"
        ));
        assert!(svc.contains(&format!(
            "\nExecStartPre=/usr/bin/baton check{CHECK_ARGS} --config /etc/baton/shop.toml\n"
        )));
        assert!(svc.contains("\nSystemCallFilter=@system-service @pkey seccomp\n"));
        assert!(svc.contains("Type=notify\n"));
        assert!(svc.starts_with(
            "# shop.service: baton supervising the app of /etc/baton/shop.toml.\n\
             # Written by `baton units shop --listen 127.0.0.1:9000 --listen [::1]:9000 --config \
             /etc/baton/shop.toml`.\n"
        ));
    }

    /// The template differs from an app's pair only where it must: names, the placeholder
    /// address and the drop-in hint. Everything the app is run with is the same text.
    #[test]
    fn template_and_app_share_the_service_settings() {
        let t = Spec::template();
        let a = Spec::example();
        let body = |s: &str, u: &str, n: &str, c: &str| {
            s.lines()
                .skip_while(|l| !l.starts_with("[Service]"))
                .collect::<Vec<_>>()
                .join("\n")
                .replace(c, "CONFIG")
                .replace(&format!("baton/{n}"), "baton/NAME")
                .replace(u, "UNIT")
        };
        assert_eq!(
            body(&t.service(), "baton@%i", "%i", "/etc/baton/%i.toml"),
            body(&a.service(), "api", "api", "/etc/baton/api.toml")
        );
        assert!(t.socket().contains("ListenStream=/run/baton-%i.sock\n"));
        assert!(t.service().contains("Requires=baton@%i.socket\n"));
        assert_eq!(
            t.file_names(),
            ("baton@.socket".into(), "baton@.service".into())
        );
    }

    /// units/* are this renderer's output, byte for byte. After changing the renderer, rewrite
    /// them with `BATON_WRITE_UNITS=1 cargo test --release --lib shipped_units`.
    #[test]
    fn shipped_units_are_the_renderers_output() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("units");
        let write = std::env::var_os("BATON_WRITE_UNITS").is_some();
        let mut stale = Vec::new();
        for spec in [Spec::example(), Spec::template()] {
            let (sock, svc) = spec.file_names();
            for (file, text) in [(sock, spec.socket()), (svc, spec.service())] {
                let path = dir.join(&file);
                if write {
                    std::fs::write(&path, &text).unwrap();
                }
                let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
                if on_disk != text {
                    stale.push(file);
                }
            }
        }
        assert!(
            stale.is_empty(),
            "units/{stale:?} differ from what src/units.rs renders: rewrite them with \
             `BATON_WRITE_UNITS=1 cargo test --release --lib shipped_units`"
        );
    }

    #[test]
    fn names_are_checked() {
        for ok in ["api", "shop-2", "a.b_c", "9lives"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "it is empty"),
            ("my app", "' ' is not allowed"),
            ("../etc", "'/' is not allowed"),
            ("a/b", "'/' is not allowed"),
            ("..", "must start with a letter or digit"),
            ("a..b", "\"..\" is not allowed"),
            ("-x", "must start with a letter or digit"),
            ("api@x", "'@' is not allowed"),
            ("a:b", "':' is not allowed"),
            ("a%i", "'%' is not allowed"),
            ("api.service", "without the .service/.socket suffix"),
            ("é", "'é' is not allowed"),
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(
                e.starts_with(&format!("invalid unit name {bad:?}: ")),
                "{e}"
            );
        }
        assert!(check_name(&"a".repeat(65))
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn listen_addresses_are_checked() {
        for ok in [
            "8080",
            "127.0.0.1:8080",
            "0.0.0.0:1",
            "[::1]:8080",
            "[::]:65535",
            "/run/app.sock",
        ] {
            assert_eq!(check_listen(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "not an address"),
            ("0", "a port is 1-65535"),
            ("70000", "a port is 1-65535"),
            ("localhost:80", "not an address"),
            ("127.0.0.1", "not an address"),
            ("127.0.0.1:0", "port 0"),
            ("127.0.0.1:99999", "not an address"),
            ("::1:80", "in brackets"),
            ("[::1]", "not an address"),
            ("http://x", "not an address"),
            ("run/app.sock", "not an address"),
            ("/run/my app.sock", "' ' is not allowed"),
            ("/run/a\nListenStream=1", "'\\n' is not allowed"),
        ] {
            let e = check_listen(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains("give a port (8080), ip:port"), "{e}");
        }
        let long = format!("/{}", "x".repeat(107));
        assert!(check_listen(&long)
            .unwrap_err()
            .contains("at most 107 bytes"));
    }

    #[test]
    fn paths_are_checked() {
        let ok = |p: &str| check_path("--config", Path::new(p));
        assert_eq!(ok("/etc/baton/api.toml"), Ok(()));
        assert!(ok("api.toml").unwrap_err().contains("is relative"));
        assert!(ok("./api.toml").unwrap_err().contains("is relative"));
        assert!(ok("/etc/my baton.toml")
            .unwrap_err()
            .contains("' ' is not allowed"));
        assert!(ok("/etc/%i.toml")
            .unwrap_err()
            .contains("'%' is not allowed"));
        assert!(ok("/etc/../x.toml").unwrap_err().contains("\"..\""));
        assert!(validate(
            "api",
            &["8080".into()],
            Path::new("/a.toml"),
            Path::new("baton")
        )
        .unwrap_err()
        .starts_with("--baton \"baton\" is relative"));
    }
}
