//! The config reference: every key of baton's config file, its type, default, allowed values,
//! an example and what it does, in one table ([`KEYS`], with the readiness kinds in [`KINDS`]).
//!
//! The man page `baton.toml(5)` ([`man_page`], written by `baton generate man`) and the
//! README's config reference ([`markdown`]; a test keeps the README equal to it) are rendered
//! from it, and its tests check it against the parser in `config/`: every key here is
//! accepted (with each kind it names, and no other), every key the parser accepts is here,
//! and each default written as a value is the parser's default.

/// One key of the config file.
pub struct Key {
    /// Dotted name: `instances`, `readiness.timeout`; `env.NAME` and `sockets.NAME` for the
    /// tables whose keys the user names.
    pub key: &'static str,
    /// The TOML type, as a user reads it: "integer", "duration" (a string like "30s"), …
    pub ty: &'static str,
    pub default: DefaultIs,
    /// The allowed values.
    pub allowed: &'static str,
    /// For `[readiness]` keys that only some kinds take: those kinds (empty: every kind).
    pub kinds: &'static [&'static str],
    /// A line as it is written in its table, like `timeout = "30s"`.
    pub example: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// The default of a key.
pub enum DefaultIs {
    /// The key must be given (for `readiness.exec` and `readiness.delay`: with their kind).
    Required,
    /// Absent means this TOML value (tested against the parser).
    Value(&'static str),
    /// Absent means this TOML value, which depends on `readiness.kind`: (kind, value) pairs.
    ByKind(&'static [(&'static str, &'static str)]),
    /// Absent means what this says (a computed value, or "none").
    Text(&'static str),
}

/// One readiness kind (`readiness.kind`).
pub struct Kind {
    pub name: &'static str,
    /// When a worker checked this way is ready.
    pub ready_when: &'static str,
}

pub const KINDS: &[Kind] = &[
    Kind {
        name: "notify",
        ready_when: "the worker (or a process it started, e.g. gunicorn's master or \
            `systemd-notify`) sends `READY=1` on baton's private `NOTIFY_SOCKET`; the sender is \
            identified by the kernel (SCM_CREDENTIALS), so only the worker's own process tree \
            counts",
    },
    Kind {
        name: "accepting",
        ready_when: "some process of the worker's tree waits for connections on every passed \
            socket, as /proc shows it (the socket in one of its epoll sets for reading, or a \
            thread blocked in accept, poll or select on it; matched by inode, so a `dup` \
            counts; or, for a server too busy to ever wait, such as a gunicorn sync worker \
            under full load, a connection it accepted from that socket in its hands); nothing \
            is sent to the app and it gets no extra socket; the first choice \
            for apps that take fd 3 and send no READY=1",
    },
    Kind {
        name: "listen",
        ready_when: "with `handover = \"bind\"` only: the worker's process tree listens on \
            every one of baton's sockets, each handed to it through its own `bind()`: it called \
            `listen()` on it (event-driven: baton answers that very call; the moment a server \
            starts accepting), or, for an app that skips `listen()` on a socket that already \
            listens (gunicorn checks `SO_ACCEPTCONN`, as for a socket from systemd), it waits \
            for connections on it as `accepting` sees it in /proc, looked at every 50 ms from \
            50 ms after a bind got the last socket until the worker is ready (an app that calls \
            `listen()` right after its bind is ready by that call, with no look); nothing is \
            sent to the app. Combine it with `stable` to catch an app that dies just after",
    },
    Kind {
        name: "http",
        ready_when: "`GET path` answers 2xx on a private socket given to that worker only (an \
            extra fd after the shared ones, named `baton-probe` in `LISTEN_FDNAMES`); only for \
            apps that serve every passed socket, like gunicorn or `listenfd`-based servers; not \
            with `handover = \"bind\"`, which passes no descriptor",
    },
    Kind {
        name: "tcp",
        ready_when: "a connection to that private socket (`baton-probe`, as for `http`) is \
            accepted; not with `handover = \"bind\"`",
    },
    Kind {
        name: "exec",
        ready_when: "the command `exec` exits 0; it runs in `cwd` with baton's environment \
            plus `BATON_WORKER_PID`, `BATON_GENERATION` and `BATON_INSTANCE`",
    },
    Kind {
        name: "delay",
        ready_when: "the worker stayed alive for `delay`",
    },
];

/// The tables of the file, in the order of the reference: (table, what it is for).
pub const TABLES: &[(&str, &str)] = &[
    ("", "The top level: the app and how many of it."),
    ("env", "Extra environment variables of every worker."),
    (
        "sockets",
        "The sockets baton binds itself when systemd passed none.",
    ),
    (
        "readiness",
        "How baton knows that a new worker is ready, and how fast a rollout starts workers.",
    ),
    ("drain", "How a retired worker is stopped."),
    ("restart", "How a crashed worker is started again."),
];

const PROBE_KINDS: &[&str] = &["http", "tcp", "exec"];

pub const KEYS: &[Key] = &[
    Key {
        key: "command",
        ty: "array of strings",
        default: DefaultIs::Required,
        allowed: "a non-empty argv; its first element is an absolute path, a path relative to \
            `cwd` (with a `/`, like `./bin/server`), or a name looked up in baton's `PATH`",
        kinds: &[],
        example: r#"command = ["/srv/api/bin/server", "--port-from-systemd"]"#,
        doc: "The worker: the program and its arguments, run without a shell. At the start of \
            each generation the program is looked up once and the symlinks in its directory \
            are resolved (`/srv/api/current/run.sh` runs as `/srv/api/releases/5/run.sh`), so \
            every worker of the generation, restarts included, runs the same release (see \
            `release`). `baton check` warns when the program is not found or not executable \
            (an error with `--strict`, as the shipped units run it).",
    },
    Key {
        key: "instances",
        ty: "integer",
        default: DefaultIs::Value("1"),
        allowed: "1 to 1024",
        kinds: &[],
        example: "instances = 2",
        doc: "Workers per generation. They all get the same sockets; the kernel hands each \
            connection to one of the processes waiting on it.",
    },
    Key {
        key: "control",
        ty: "string (path)",
        default: DefaultIs::Text(
            "`<runtime dir>/<NAME>/control.sock`, NAME being the config file's name without \
            `.toml`; the runtime dir is `/run/baton` for root, else `$XDG_RUNTIME_DIR/baton` \
            (or `/tmp/baton-<uid>`)",
        ),
        allowed: "a path of at most 107 bytes",
        kinds: &[],
        example: r#"control = "/run/baton/api/control.sock""#,
        doc: "The control socket: `baton run` listens on it (mode 0600, only its own uid may \
            connect); `baton reload` and `baton status` talk to it. The socket the workers send \
            `READY=1` to is next to it (`control.notify`). The default is in the directory \
            that `baton@NAME.service` gets from `RuntimeDirectory=baton/NAME`, so \
            `baton status --config /etc/baton/NAME.toml` finds it; most configs leave the key \
            out.",
    },
    Key {
        key: "cwd",
        ty: "string (path)",
        default: DefaultIs::Text(
            "baton's own working directory (under systemd: `WorkingDirectory=`, by default `/`)",
        ),
        allowed: "a directory",
        kinds: &[],
        example: r#"cwd = "/srv/api""#,
        doc: "The working directory of the workers and of the `exec` readiness check. A \
            relative `command` (like `./bin/server`) is found under it. Its symlinks are \
            resolved once at the start of each generation, like the command's. `baton check` \
            warns when it is missing or not a directory (an error with `--strict`).",
    },
    Key {
        key: "release",
        ty: "string (path)",
        default: DefaultIs::Text(
            "none: the release is the link `cwd` goes through, resolved; else the link of the \
            first argument of `command` that goes through one; else `cwd` when the program is \
            under it or is found in `PATH`; else the program's resolved directory",
        ),
        allowed: "an absolute path of a directory, typically the symlink a deploy flips",
        kinds: &[],
        example: r#"release = "/srv/api/current""#,
        doc: "The directory a generation pins, for an app whose program lives elsewhere \
            (`command = [\"/usr/bin/node\", \"/srv/api/current/dist/server.js\"]`). At the start \
            of each generation it is resolved once (`/srv/api/current` → \
            `/srv/api/releases/5`), and `cwd` and every argument of `command` and \
            `readiness.exec` that is a path under it are rewritten under the resolved \
            directory: every worker of the generation, restarts included, runs that release, \
            whatever the symlink points at later (after a failed reload: the broken release). \
            `baton status`, the reload's reply and every journal entry of the generation \
            (`BATON_RELEASE`) name it. A generation whose release cannot be resolved fails \
            with the reason (a reload is rolled back, the serving generation untouched). \
            Without it, the paths are pinned all the same (every argument that is a whole \
            absolute path is resolved); with it, they are all resolved from one reading of \
            the link, and the release the generation names is the one you chose. \
            `baton check` warns when it does not resolve to a directory (an error with \
            `--strict`), and advises when nothing is under it or when it is no link and goes \
            through none (every generation would name the same release).",
    },
    Key {
        key: "handover",
        ty: "string",
        default: DefaultIs::Value(r#""fds""#),
        allowed: "`fds`, `bind`",
        kinds: &[],
        example: r#"handover = "bind""#,
        doc: "How a worker gets baton's sockets. `fds`: socket activation, the sockets at fd \
            3, 4, … with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID`; the app must take \
            them. `bind`: for an app that binds its own port, unchanged (`server.listen(3000)`, \
            `http.ListenAndServe(\":8080\")`, `uvicorn --port`): baton traps the worker's \
            `bind()` and `listen()` with a seccomp filter (inherited by every process it \
            forks) and answers a bind of the port of one of its sockets (any address: wildcard, \
            loopback or the socket's own, either family; a unix socket by its path, a relative \
            one from the worker's `cwd`) with that socket, so every generation accepts on the \
            same socket; every other bind (an admin port of the app's own, port 0, a socket of \
            another type such as UDP on the same port) runs untouched, and `listen()` on a \
            handed socket leaves baton's backlog. With a unix socket at a path, `unlink()` is \
            trapped too: the app's removal of that path (gunicorn's before its bind, Node's at \
            close) is answered without removing it; every other unlink runs. The worker gets no descriptor and no `LISTEN_*` variable. \
            The filter needs no_new_privs: setuid and file capabilities grant nothing in the \
            worker's tree. x86-64 with Linux 5.9 or later; where the filter is refused, \
            `baton run` and each reload fail with the reason. Readiness `http` and `tcp` are \
            refused (they need the private probe socket): use `listen`.",
    },
    Key {
        key: "history",
        ty: "integer",
        default: DefaultIs::Value("10"),
        allowed: "1 to 100",
        kinds: &[],
        example: "history = 20",
        doc: "How many generations that served or failed baton keeps in its history: each \
            one's release, config (its text and a digest), start, swap and end times, and \
            outcome with its reason. When it is full, a generation that never served goes first \
            (the newest entry never), so failed reloads in a row do not push out the ones a \
            rollback can start again. It is written (atomically, mode 0600: the config may hold \
            secrets) to `history.json` in the state directory: `$STATE_DIRECTORY` \
            (`StateDirectory=baton/NAME` in the shipped units), else `/var/lib/baton/NAME` for \
            root and `$XDG_STATE_HOME/baton/NAME` (or `~/.local/state/baton/NAME`) for others, \
            NAME being the config file's name without `.toml`; so it survives a restart of \
            baton. `baton history` shows it, and `baton rollback` starts a new generation \
            from one of its entries (with 1, there is none to go back to: `baton check` says \
            so). A missing or unreadable file is a warning, never an \
            error, and so is a failed write (a full disk): serving goes on.",
    },
    Key {
        key: "env.NAME",
        ty: "string",
        default: DefaultIs::Text("none: the workers get baton's environment"),
        allowed: "any NAME without `=` or NUL, except the six variables baton sets: \
            `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, `NOTIFY_SOCKET`, `BATON_GENERATION`, \
            `BATON_INSTANCE`",
        kinds: &[],
        example: r#"PYTHONUNBUFFERED = "1""#,
        doc: "Sets (or replaces) the variable NAME in every worker's environment, which is \
            otherwise baton's own minus baton's systemd variables (`NOTIFY_SOCKET`, \
            `WATCHDOG_*`, `LISTEN_*`). It does not reach the `exec` check, and a `PATH` here \
            does not change where `command` is looked up.",
    },
    Key {
        key: "sockets.NAME",
        ty: "string (address)",
        default: DefaultIs::Text("none"),
        allowed: "`\"IPv4:port\"`, `\"[IPv6]:port\"`, `\"unix:/absolute/path\"` (or \
            `\"/absolute/path\"`), addresses that can all be bound at once (not one twice, \
            nor a wildcard and an address of its family on one port; `[::]` is bound \
            dual-stack, so it takes IPv4 too), port 0 not with `handover = \"bind\"`; NAME: 1 \
            to 255 printable ASCII characters without `:`",
        kinds: &[],
        example: r#"http = "127.0.0.1:8080""#,
        doc: "A socket baton binds itself (backlog 4096), used only when systemd passed none \
            (no socket unit, or `baton run` outside systemd); with a socket unit its \
            `ListenStream=` lines decide and this table is ignored. In file order they are the \
            workers' fd 3, 4, …, and NAME is each one's name in `LISTEN_FDNAMES`. Under systemd, in \
            a unit with `FileDescriptorStoreMax=` (the shipped units take their sockets from a \
            socket unit instead, and do not set it), baton stores them in the service's fd \
            store, so a restart of baton refuses no connection. At a unix path baton replaces \
            only a stale socket of its own uid (nobody listens: a connection is refused); a \
            live socket, another user's, or a file that is not a socket is an error, left in \
            place.",
    },
    Key {
        key: "readiness.kind",
        ty: "string",
        default: DefaultIs::Value(r#""notify""#),
        allowed: "`notify`, `accepting`, `listen` (only with `handover = \"bind\"`), `http`, \
            `tcp` (not with `handover = \"bind\"`), `exec`, `delay` (the readiness kinds, \
            described below)",
        kinds: &[],
        example: r#"kind = "notify""#,
        doc: "How baton checks each new worker on its own (a request through the shared port \
            could be answered by the old generation, so it proves nothing).",
    },
    Key {
        key: "readiness.timeout",
        ty: "duration",
        default: DefaultIs::Value(r#""30s""#),
        allowed: "more than 0",
        kinds: &[],
        example: r#"timeout = "30s""#,
        doc: "How long each worker has, from its own spawn, to be ready. A worker not ready \
            by then, or one that exits before the swap, fails its generation: a reload is \
            rolled back (the serving generation is not touched), a first generation makes \
            `baton run` exit 1.",
    },
    Key {
        key: "readiness.stable",
        ty: "duration",
        default: DefaultIs::Value(r#""0s""#),
        allowed: "0 or more",
        kinds: &[],
        example: r#"stable = "2s""#,
        doc: "Once every worker of a new generation is ready, how long they must all stay up \
            before the old generation is told to stop.",
    },
    Key {
        key: "readiness.path",
        ty: "string",
        default: DefaultIs::Value(r#""/""#),
        allowed: "starts with `/`, no whitespace",
        kinds: &["http"],
        example: r#"path = "/healthz""#,
        doc: "The path of the readiness `GET`.",
    },
    Key {
        key: "readiness.interval",
        ty: "duration",
        default: DefaultIs::ByKind(&[
            ("http", r#""200ms""#),
            ("tcp", r#""200ms""#),
            ("exec", r#""200ms""#),
            ("accepting", r#""50ms""#),
        ]),
        allowed: "more than 0",
        kinds: &["http", "tcp", "exec", "accepting"],
        example: r#"interval = "200ms""#,
        doc: "The time between two attempts of the check (for `accepting`: between two looks \
            at the worker's process tree).",
    },
    Key {
        key: "readiness.probe_timeout",
        ty: "duration",
        default: DefaultIs::Value(r#""1s""#),
        allowed: "more than 0",
        kinds: PROBE_KINDS,
        example: r#"probe_timeout = "1s""#,
        doc: "How long one attempt may take (the HTTP response, the TCP connection, the \
            `exec` command, which is killed when it overruns); an attempt that takes longer \
            failed.",
    },
    Key {
        key: "readiness.successes",
        ty: "integer",
        default: DefaultIs::Value("1"),
        allowed: "1 or more",
        kinds: PROBE_KINDS,
        example: "successes = 1",
        doc: "How many attempts in a row must succeed.",
    },
    Key {
        key: "readiness.exec",
        ty: "array of strings",
        default: DefaultIs::Required,
        allowed: "a non-empty argv, found like `command`",
        kinds: &["exec"],
        example: r#"exec = ["/srv/api/bin/healthcheck", "--local"]"#,
        doc: "The check command of `kind = \"exec\"` (no shell). `baton check` warns when its \
            program is not found (an error with `--strict`).",
    },
    Key {
        key: "readiness.delay",
        ty: "duration",
        default: DefaultIs::Required,
        allowed: "0 up to `readiness.timeout`",
        kinds: &["delay"],
        example: r#"delay = "2s""#,
        doc: "With `kind = \"delay\"`, how long a worker must stay alive to count as ready.",
    },
    Key {
        key: "readiness.startup_nice",
        ty: "integer",
        default: DefaultIs::Value("0"),
        allowed: "0 (off) to 19",
        kinds: &[],
        example: "startup_nice = 0",
        doc: "The nice value a worker starts at; its whole process group runs at nice 0 from \
            the moment it is ready, or after half of `readiness.timeout` at the latest. Giving \
            the priority back needs CAP_SYS_NICE (root has it); without it, workers start at \
            nice 0.",
    },
    Key {
        key: "readiness.max_starting",
        ty: "integer",
        default: DefaultIs::Text("the number of CPUs baton may run on"),
        allowed: "1 to 1024",
        kinds: &[],
        example: "max_starting = 4",
        doc: "While another generation serves, at most this many new workers are starting \
            (spawned, not yet ready) at once; the next one is spawned each time one is ready. \
            Each worker has the whole `readiness.timeout` from its own spawn, so a rollout lasts \
            about `instances / max_starting` start-ups. Raise it for apps whose start-up mostly \
            waits (on a database, a cache). The first generation starts all its workers at \
            once.",
    },
    Key {
        key: "drain.signal",
        ty: "string",
        default: DefaultIs::Value(r#""SIGTERM""#),
        allowed: "`SIGTERM`, `SIGQUIT`, `SIGINT`, `SIGHUP`, `SIGUSR1`, `SIGUSR2`, `SIGWINCH` \
            (any case, with or without `SIG`)",
        kinds: &[],
        example: r#"signal = "SIGTERM""#,
        doc: "The stop signal a retired worker gets (only the worker, not its process group): \
            the app's graceful shutdown.",
    },
    Key {
        key: "drain.timeout",
        ty: "duration",
        default: DefaultIs::Value(r#""30s""#),
        allowed: "0 or more",
        kinds: &[],
        example: r#"timeout = "30s""#,
        doc: "How long a stopped worker may drain before its whole process group gets \
            SIGKILL; whatever is left in the group when the worker exits is SIGKILLed at once. \
            Keep the unit's `TimeoutStopSec=` above it.",
    },
    Key {
        key: "drain.nice",
        ty: "integer",
        default: DefaultIs::Text(
            "10 when a generation has more workers than the CPUs baton may run on, else 0",
        ),
        allowed: "0 (off) to 19",
        kinds: &[],
        example: "nice = 10",
        doc: "While another generation serves, a retired worker's process group drains at \
            this nice value, so that its exit yields the CPU to the serving workers (its last \
            requests are slowed as well). When baton itself stops, workers drain at their \
            running priority.",
    },
    Key {
        key: "restart.backoff_initial",
        ty: "duration",
        default: DefaultIs::Value(r#""100ms""#),
        allowed: "more than 0, at most `restart.backoff_max`",
        kinds: &[],
        example: r#"backoff_initial = "100ms""#,
        doc: "A worker of the serving generation that exits without being told to (a crash) \
            is started again in its place after a delay: `backoff_initial` after the first \
            exit, twice the previous delay after each further one, up to `backoff_max`. A \
            worker that was ready and ran for at least `backoff_max` before it died starts the \
            sequence over. A new generation's worker that exits before the swap is not \
            restarted: it fails the reload.",
    },
    Key {
        key: "restart.backoff_max",
        ty: "duration",
        default: DefaultIs::Value(r#""10s""#),
        allowed: "at least `restart.backoff_initial`",
        kinds: &[],
        example: r#"backoff_max = "10s""#,
        doc: "The longest delay between two restarts of a crashing worker. Once its delay has \
            reached it, `baton status` shows the worker as `crash-loop`; baton goes on \
            restarting it at that pace.",
    },
];

/// A whole config as the README and the man page show it (tested to parse).
pub const EXAMPLE: &str = r#"# /etc/baton/api.toml
command   = ["/srv/api/bin/server", "--port-from-systemd"]   # argv, no shell
instances = 2
cwd       = "/srv/api"

[env]
RUST_LOG = "info"

[sockets]                  # only used when systemd passed no sockets
http = "127.0.0.1:8080"

[readiness]
kind    = "notify"
timeout = "30s"

[drain]
signal  = "SIGTERM"
timeout = "30s"
"#;

/// What every reader needs before the keys: the format, durations, errors.
const INTRO: &str = "The config is a TOML file, by convention `/etc/baton/NAME.toml` (the \
    template unit `baton@NAME.service` reads that one). Unknown keys are errors. Durations are \
    strings with a unit: `\"30s\"`, `\"250ms\"`, `\"1m30s\"`, `\"1.5s\"` (units `ns`, `us`, \
    `ms`, `s`, `m`, `h`, `d`; `\"0\"` alone needs none), at most one day (`\"24h\"`). `baton check --config FILE` validates \
    a file; every error names the file, the line and the dotted key. A reload re-reads the \
    file, and a file with an error aborts the reload before anything starts.";

impl Key {
    /// The table a key belongs to ("" for the top level).
    pub fn table(&self) -> &'static str {
        self.key.rsplit_once('.').map_or("", |(t, _)| t)
    }

    /// The key's name inside its table.
    pub fn name(&self) -> &'static str {
        self.key.rsplit_once('.').map_or(self.key, |(_, n)| n)
    }

    /// The default, as the reference writes it.
    fn default_text(&self) -> String {
        match &self.default {
            DefaultIs::Required if self.kinds.is_empty() => "required".into(),
            DefaultIs::Required => {
                format!("required with kind = \"{}\"", self.kinds.join("\", \""))
            }
            DefaultIs::Value(v) => format!("`{v}`"),
            DefaultIs::ByKind(pairs) => {
                let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
                for (kind, v) in pairs.iter() {
                    match groups.iter_mut().find(|(g, _)| g == v) {
                        Some((_, ks)) => ks.push(kind),
                        None => groups.push((v, vec![kind])),
                    }
                }
                groups
                    .iter()
                    .map(|(v, ks)| format!("`{v}` ({})", ks.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
            DefaultIs::Text(t) => t.to_string(),
        }
    }

    fn kinds_text(&self) -> Option<String> {
        (!self.kinds.is_empty()).then(|| {
            let ks: Vec<String> = self.kinds.iter().map(|k| format!("`{k}`")).collect();
            format!("only with kind {}", ks.join(", "))
        })
    }
}

#[cfg(test)]
fn table_heading(table: &str) -> String {
    if table.is_empty() {
        "top level".into()
    } else {
        format!("[{table}]")
    }
}

/// The README's config reference (Markdown; only a test needs it: it keeps the README equal).
#[cfg(test)]
pub fn markdown() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{INTRO}\n\n```toml\n{EXAMPLE}```");
    for (table, what) in TABLES {
        let heading = match *table {
            "" => "Top level".to_string(),
            t => format!("`[{t}]`"),
        };
        let _ = writeln!(out, "\n#### {heading}\n\n{what}\n");
        for k in KEYS.iter().filter(|k| k.table() == *table) {
            let mut facts = vec![k.ty.to_string(), format!("default: {}", k.default_text())];
            facts.push(format!("allowed: {}", k.allowed));
            facts.extend(k.kinds_text());
            let _ = writeln!(
                out,
                "* **`{}`** ({}). {} Example: `{}`",
                k.name(),
                facts.join("; "),
                k.doc,
                k.example
            );
        }
        if *table == "readiness" {
            let _ = writeln!(out, "\nThe kinds (`readiness.kind`), and the keys each one takes besides `timeout`, `stable`, `startup_nice` and `max_starting`:\n\n| kind | ready when | keys |\n|---|---|---|");
            for kind in KINDS {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} |",
                    kind.name,
                    kind.ready_when,
                    kind_keys(kind.name)
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    out
}

/// The `[readiness]` keys that only some kinds take and `kind` is one of.
pub fn kind_keys(kind: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.kinds.contains(&kind))
        .map(|k| k.name())
        .collect()
}

/// Text for a roff line: backslashes escaped, markdown code quotes turned into bold, and a
/// leading `.` or `'` protected.
fn roff(text: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '`' => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// Literal lines (an example) for roff: no font changes.
fn roff_literal(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// The man page baton.toml(5) (roff).
pub fn man_page(version: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".TH baton.toml 5 \"\" \"baton {version}\" \"File Formats Manual\"\n.SH NAME\nbaton.toml \\- configuration file of baton(1)\n.SH SYNOPSIS\n/etc/baton/NAME.toml\n.SH DESCRIPTION\n{}\n.SH EXAMPLE\n.PP\n.nf\n.RS 4\n{}.RE\n.fi",
        roff(INTRO),
        roff_literal(EXAMPLE)
    );
    for (table, what) in TABLES {
        let heading = if table.is_empty() {
            "TOP LEVEL".to_string()
        } else {
            format!("[{table}]")
        };
        let _ = writeln!(out, ".SH {heading}\n{}", roff(what));
        for k in KEYS.iter().filter(|k| k.table() == *table) {
            let _ = writeln!(
                out,
                ".TP\n\\fB{}\\fR (\\fI{}\\fR)\n{}\n.br\nDefault: {}.\n.br\nAllowed: {}.",
                roff(k.name()),
                roff(k.ty),
                roff(k.doc),
                roff(&k.default_text()),
                roff(k.allowed)
            );
            if let Some(t) = k.kinds_text() {
                let _ = writeln!(out, ".br\n{}.", roff(&capitalized(&t)));
            }
            let _ = writeln!(
                out,
                ".br\nExample: \\f(CR{}\\fR",
                roff_literal(k.example).trim_end()
            );
        }
    }
    let _ = writeln!(out, ".SH READINESS KINDS");
    for kind in KINDS {
        let keys = kind_keys(kind.name);
        let _ = writeln!(
            out,
            ".TP\n\\fB{}\\fR\nReady when {}.{}",
            kind.name,
            roff(kind.ready_when),
            if keys.is_empty() {
                String::new()
            } else {
                format!("\n.br\nKeys: {}.", roff(&keys.join(", ")))
            }
        );
    }
    let _ = writeln!(
        out,
        ".SH FILES\n.TP\n/etc/baton/NAME.toml\nThe config of the template unit baton@NAME.service.\n.SH SEE ALSO\nbaton(1), baton\\-check(1), systemd.socket(5), systemd.service(5), sd_listen_fds(3), sd_notify(3)"
    );
    out
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const MIN: &str = "command = [\"/bin/true\"]\n";

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "reference.toml").map_err(|e| e.to_string())
    }

    /// The smallest config with `[readiness] kind = kind` (and the keys the kind requires),
    /// plus `lines` in `table`.
    fn with(kind: Option<&str>, table: &str, lines: &[&str]) -> String {
        let mut readiness: Vec<String> = Vec::new();
        if let Some(kind) = kind {
            readiness.push(format!("kind = \"{kind}\""));
            for k in KEYS.iter().filter(|k| {
                k.table() == "readiness"
                    && matches!(k.default, DefaultIs::Required)
                    && k.kinds.contains(&kind)
            }) {
                if !lines.iter().any(|l| l.starts_with(k.name())) {
                    readiness.push(k.example.to_string());
                }
            }
        }
        let mut text = String::new();
        let mut top: Vec<&str> = if table.is_empty() {
            lines.to_vec()
        } else {
            vec![]
        };
        // `listen` works only in bind mode
        if kind == Some("listen") && !top.iter().any(|l| l.starts_with("handover")) {
            top.push(r#"handover = "bind""#);
        }
        if !top.iter().any(|l| l.starts_with("command")) {
            text.push_str(MIN);
        }
        for l in top {
            text.push_str(l);
            text.push('\n');
        }
        if table == "readiness" {
            readiness.extend(lines.iter().map(|l| l.to_string()));
        } else if !table.is_empty() {
            text.push_str(&format!("[{table}]\n{}\n", lines.join("\n")));
        }
        if !readiness.is_empty() {
            text.push_str(&format!("[readiness]\n{}\n", readiness.join("\n")));
        }
        text
    }

    #[test]
    fn every_key_is_accepted_with_its_example_and_each_kind_it_names() {
        for k in KEYS {
            let kinds: Vec<Option<&str>> = if k.kinds.is_empty() {
                vec![None]
            } else {
                k.kinds.iter().map(|kind| Some(*kind)).collect()
            };
            for kind in kinds {
                let text = with(kind, k.table(), &[k.example]);
                parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", k.key));
            }
        }
        // the example names the key it documents
        for k in KEYS.iter().filter(|k| !k.key.ends_with(".NAME")) {
            assert!(
                k.example.starts_with(&format!("{} = ", k.name())),
                "{}: {}",
                k.key,
                k.example
            );
        }
        parse(EXAMPLE).unwrap();
    }

    #[test]
    fn kind_specific_keys_are_rejected_with_the_other_kinds() {
        for k in KEYS.iter().filter(|k| !k.kinds.is_empty()) {
            for kind in KINDS.iter().filter(|kind| !k.kinds.contains(&kind.name)) {
                let text = with(Some(kind.name), "readiness", &[k.example]);
                let e = parse(&text).expect_err(&format!("{} with kind {}", k.key, kind.name));
                assert!(e.contains(k.key), "{e}");
            }
        }
    }

    #[test]
    fn every_kind_the_reference_lists_is_parsed_and_no_other() {
        for kind in KINDS.iter() {
            parse(&with(Some(kind.name), "", &[])).unwrap();
        }
        // the parser's own list of kinds, from its error message
        let e = parse(&with(Some("no-such-kind"), "", &[])).unwrap_err();
        let named: Vec<&str> = backticked(e.split_once("expected").unwrap().1);
        let mut listed: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        listed.sort();
        let mut named = named.clone();
        named.sort();
        assert_eq!(named, listed, "{e}");
    }

    fn backticked(s: &str) -> Vec<&str> {
        s.split('`').skip(1).step_by(2).collect()
    }

    /// The fields the parser knows in a table, from its "unknown field" error.
    fn parser_fields(table: &str) -> Vec<String> {
        let text = with(None, table, &["no_such_key = 1"]);
        let e = parse(&text).unwrap_err();
        let expected = e
            .split_once("expected")
            .unwrap_or_else(|| panic!("{table}: {e}"))
            .1;
        backticked(expected).iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_key_the_parser_accepts_is_in_the_reference() {
        for (table, _) in TABLES
            .iter()
            .filter(|(t, _)| !["env", "sockets"].contains(t))
        {
            let mut parser: Vec<String> = parser_fields(table);
            // the top level's tables are keys of the parser too
            parser.retain(|f| !TABLES.iter().any(|(t, _)| t == f));
            parser.sort();
            let mut reference: Vec<String> = KEYS
                .iter()
                .filter(|k| k.table() == *table)
                .map(|k| k.name().to_string())
                .collect();
            reference.sort();
            assert_eq!(parser, reference, "keys of {}", table_heading(table));
        }
        // and the tables: the top level's fields that are not keys
        let mut tables: Vec<String> = parser_fields("")
            .into_iter()
            .filter(|f| !KEYS.iter().any(|k| k.key == f))
            .collect();
        tables.sort();
        let mut listed: Vec<String> = TABLES
            .iter()
            .filter(|(t, _)| !t.is_empty())
            .map(|(t, _)| t.to_string())
            .collect();
        listed.sort();
        assert_eq!(tables, listed);
    }

    #[test]
    fn defaults_written_as_values_are_the_parsers() {
        for k in KEYS {
            let pairs: Vec<(Option<&str>, &str)> = match &k.default {
                DefaultIs::Value(v) => match k.kinds.first() {
                    None => vec![(None, v)],
                    Some(_) => k.kinds.iter().map(|kind| (Some(*kind), *v)).collect(),
                },
                DefaultIs::ByKind(p) => p.iter().map(|(kind, v)| (Some(*kind), *v)).collect(),
                _ => continue,
            };
            for (kind, v) in pairs {
                // `kind` itself: its default is the config without it
                let kind = if k.key == "readiness.kind" {
                    None
                } else {
                    kind
                };
                let line = format!("{} = {v}", k.name());
                let without = parse(&with(kind, k.table(), &[])).unwrap();
                let set = parse(&with(kind, k.table(), &[&line])).unwrap();
                assert_eq!(without, set, "{}: the default is not {v}", k.key);
            }
        }
    }

    /// The README's reference is [`markdown`]. `BATON_UPDATE_README=1` rewrites it.
    #[test]
    fn readme_reference_is_generated_from_the_table() {
        const START: &str = "<!-- config reference: generated from src/reference.rs, do not edit (BATON_UPDATE_README=1 cargo test --lib reference) -->\n";
        const END: &str = "<!-- end of the config reference -->\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (before, rest) = readme
            .split_once(START)
            .expect("the README has the start marker");
        let (current, after) = rest.split_once(END).expect("the README has the end marker");
        let wanted = markdown();
        if current != wanted && std::env::var_os("BATON_UPDATE_README").is_some() {
            std::fs::write(&path, format!("{before}{START}{wanted}{END}{after}")).unwrap();
            return;
        }
        assert!(
            current == wanted,
            "README.md's config reference differs from src/reference.rs; run \
             BATON_UPDATE_README=1 cargo test --lib reference"
        );
    }

    #[test]
    fn man_page_has_every_key_and_kind() {
        let page = man_page("0");
        assert!(page.starts_with(".TH baton.toml 5 "), "{page}");
        for k in KEYS {
            assert!(
                page.contains(&format!("\\fB{}\\fR (", roff(k.name()))),
                "{}",
                k.key
            );
        }
        for kind in KINDS {
            assert!(
                page.contains(&format!(".TP\n\\fB{}\\fR\n", kind.name)),
                "{}",
                kind.name
            );
        }
        // no line a roff reader would take for a request by mistake
        for line in page.lines() {
            if let Some(req) = line.strip_prefix('.') {
                let name: String = req
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                assert!(
                    ["TH", "SH", "PP", "TP", "br", "nf", "fi", "RS", "RE"].contains(&name.as_str()),
                    "{line}"
                );
            }
        }
    }
}
