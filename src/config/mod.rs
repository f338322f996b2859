//! Configuration file for baton (TOML).
//!
//! Every key is documented in `reference.rs` (the man page baton.toml(5) and the README's
//! reference are generated from it); its tests check that table against this parser.
//!
//! The file is deserialized into private "raw" structs (every field that is
//! validated keeps its byte span through [`toml::Spanned`]) and then converted
//! and validated into the public types below. Every error, whether it comes
//! from the TOML parser, from serde or from validation, is a [`ConfigError`]
//! naming the file, the line and column, and the dotted key it concerns.
//!
//! ```toml
//! command   = ["./target/release/examples/hello", "--flag"]   # argv, required, no shell
//! instances = 2                            # 1..=1024, default 1
//! control   = "/run/baton/api/control.sock"  # optional control socket path
//! cwd       = "/srv/app"                   # optional working directory of workers
//! handover  = "fds"                        # fds (sockets at fd 3..) | bind (the app's bind())
//!
//! [env]                                    # extra environment for workers
//! PYTHONUNBUFFERED = "1"
//!
//! [sockets]                                # used only when systemd passed no sockets
//! http = "127.0.0.1:8080"                  # "IPv4:port", "[IPv6]:port", "unix:/path" or "/path"
//!
//! [readiness]
//! kind          = "notify"                 # notify | accepting | listen | http | tcp | exec | delay
//! timeout       = "30s"
//! path          = "/healthz"               # http only, default "/"
//! interval      = "200ms"                  # accepting (default 50ms), http, tcp, exec
//! probe_timeout = "1s"                     # http, tcp, exec
//! successes     = 1                        # http, tcp, exec
//! exec          = ["/usr/bin/check"]       # exec only (required)
//! delay         = "2s"                     # delay only (required)
//! stable        = "0s"                     # any kind
//! startup_nice  = 0                        # 0..=19, nice of a worker until it is ready
//! max_starting  = 4                        # 1..=1024 workers starting at once during a reload
//!                                          #   (default: the CPUs baton may run on)
//!
//! [drain]
//! signal  = "SIGTERM"
//! timeout = "30s"
//! nice    = 10                             # 0..=19, nice of a stopped worker while it drains
//!                                          #   (default: 10 with more workers than CPUs, else 0)
//!
//! [restart]
//! backoff_initial = "100ms"
//! backoff_max     = "10s"
//! ```
//!
//! The parts, each in its own file: `raw.rs` (the file as serde reads it), `validate.rs` (raw
//! into [`Config`]), `error.rs` ([`ConfigError`] and how errors are located), `readiness.rs`
//! (the readiness kinds), `socket.rs` (`[sockets]` and the control and notify paths),
//! `duration.rs` and `signal.rs`. Every public item is re-exported here: callers write
//! `config::X`.
//!
//! Must never act on a config: loading reads one file and returns a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod duration;
mod error;
mod raw;
mod readiness;
mod signal;
mod socket;
mod validate;

pub use duration::{parse_duration, MAX_DURATION};
pub use error::{ConfigError, TOP_LEVEL_KEYS};
pub use readiness::{is_http_path, Handover, Readiness, ReadinessKind};
pub use signal::StopSignal;
pub use socket::{check_control_path, notify_path, SocketAddrSpec, SocketSpec};

use error::{key_at, line_col};
use raw::RawConfig;
use validate::Ctx;

/// Variables baton sets in every worker's environment; `[env]` may not set them.
const SET_BY_BATON: [&str; 6] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "BATON_GENERATION",
    "BATON_INSTANCE",
];

/// Largest accepted `instances`.
pub const MAX_INSTANCES: u32 = 1024;

/// Longest path (in bytes) that fits `sockaddr_un.sun_path` with its NUL.
const MAX_UNIX_PATH: usize = 107;

/// Longest socket name accepted by `LISTEN_FDNAMES` / `FDNAME=`.
const MAX_SOCKET_NAME: usize = 255;

/// `history` when the key is absent, and its largest value.
pub const DEFAULT_HISTORY: u32 = 10;
pub const MAX_HISTORY: u32 = 100;

/// Largest accepted configuration file (1 MiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What a file that is not a regular file is, for messages.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Worker argv (`command[0]` is the program; no shell is involved). Never empty.
    pub command: Vec<String>,
    /// Workers per generation, `1..=1024`.
    pub instances: u32,
    /// Path of the control socket, if any.
    pub control: Option<PathBuf>,
    /// Working directory of the workers, if any.
    pub cwd: Option<PathBuf>,
    /// The directory a generation pins (absolute; typically a symlink a deploy flips, like
    /// `/srv/api/current`): resolved once per generation, and `cwd` and the arguments under it
    /// rewritten under the resolved directory (see [`crate::release`]).
    pub release: Option<PathBuf>,
    /// How a worker gets baton's sockets: at fd 3.. (`fds`) or through its own bind().
    pub handover: Handover,
    /// How many generations that served or failed the history keeps (`crate::history`).
    pub history: u32,
    /// Extra environment for the workers.
    pub env: BTreeMap<String, String>,
    /// Fallback sockets (used only when systemd passed none), in the order
    /// they appear in the file. `LISTEN_FDNAMES` follows this order.
    pub sockets: Vec<SocketSpec>,
    pub readiness: Readiness,
    pub drain: Drain,
    pub restart: Restart,
}

/// How an old generation is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub signal: StopSignal,
    /// Grace period after `signal` before SIGKILL (may be zero).
    pub timeout: Duration,
    /// The nice value a worker's process group gets with its stop signal while another
    /// generation serves (not when baton itself stops): its drain and exit then yield the CPU
    /// to the serving workers. 0 leaves it at its running priority. `None`: automatic, see
    /// [`Config::drain_nice`].
    pub nice: Option<i32>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            signal: StopSignal::TERM,
            timeout: DEFAULT_DRAIN_TIMEOUT,
            nice: None,
        }
    }
}

/// Restart backoff of crashed workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
        }
    }
}

const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
// Off by default: with the start-ups paced (`readiness.max_starting`), starting at nice 10
// made rollouts under load up to 17 times longer for no lower latency (BENCHMARKS.md).
const DEFAULT_STARTUP_NICE: i32 = 0;
/// `drain.nice` when the key is absent and a generation has more workers than CPUs: 64
/// workers on 2 CPUs under per-request load reloaded with half the p99 (BENCHMARKS.md).
/// With at most one worker per CPU it stays 0: a single draining worker's last requests
/// were slower at nice 10, and its exit costs little.
pub const AUTO_DRAIN_NICE: i32 = 10;
const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);
/// The `accepting` check costs a few reads in /proc: it looks more often (and `listen`
/// readiness looks at this pace for an app that never calls listen()).
pub const DEFAULT_ACCEPTING_INTERVAL: Duration = Duration::from_millis(50);
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The CPUs baton may run on (its affinity mask and cgroup CPU quota, as the standard library
/// reads them): what the defaults of `readiness.max_starting` and `drain.nice` scale with.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// `readiness.max_starting`, or by default the CPUs baton may run on.
    pub fn max_starting(&self) -> usize {
        self.readiness
            .max_starting
            .map_or_else(cpus, |n| n as usize)
    }

    /// `drain.nice`, or by default [`AUTO_DRAIN_NICE`] when a generation has more workers
    /// than baton has CPUs (their exits, all at once, would otherwise queue in front of the
    /// serving workers), else 0.
    pub fn drain_nice(&self) -> i32 {
        self.drain
            .nice
            .unwrap_or(if self.instances as usize > cpus() {
                AUTO_DRAIN_NICE
            } else {
                0
            })
    }

    /// The text [`Config::demo`] parses (printed by `baton run --demo`): two instances of
    /// the example worker `worker` sharing `listen`.
    pub fn demo_toml(worker: &Path, listen: &SocketAddrSpec) -> String {
        let quote = |s: String| toml::Value::String(s).to_string();
        format!(
            r#"# baton demo configuration
#
# Two instances of the example worker share {listen}.

command   = [{worker}]
instances = 2

[sockets]
# Used only when systemd passed no sockets.
http = {addr}

[readiness]
kind    = "notify"
timeout = "10s"

[drain]
signal  = "SIGTERM"
timeout = "10s"
"#,
            worker = quote(worker.display().to_string()),
            addr = quote(listen.to_string()),
        )
    }

    /// Reads and validates a file. The file is opened without blocking and must be a regular
    /// file of at most [`MAX_CONFIG_BYTES`] (a FIFO or a device at the path would stall a
    /// reload).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_text(path).map(|(c, _)| c)
    }

    /// [`Config::load`], and the text it parsed (what the history keeps of a generation).
    pub fn load_text(path: &Path) -> Result<(Config, String), ConfigError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let origin = path.display().to_string();
        let fail = |message: String| ConfigError {
            file: origin.clone(),
            line: None,
            column: None,
            key: None,
            message,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| fail(format!("cannot read configuration file: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("cannot read configuration file: {e}")))?;
        if !meta.is_file() {
            return Err(fail(format!(
                "the configuration must be a regular file, this is {}",
                file_kind(&meta)
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(format!("cannot read configuration file: {e}")))?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(fail(format!(
                "the configuration file is larger than {MAX_CONFIG_BYTES} bytes"
            )));
        }
        let config = Config::parse_bytes(&bytes, &origin)?;
        Ok((config, String::from_utf8(bytes).unwrap_or_default()))
    }

    /// Parses and validates the bytes of a file: text that is not UTF-8 is an error located
    /// at its first invalid byte.
    pub fn parse_bytes(bytes: &[u8], origin: &str) -> Result<Config, ConfigError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Config::parse(text, origin),
            Err(e) => {
                let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
                let (line, column) = line_col(valid, valid.len());
                Err(ConfigError {
                    file: origin.to_string(),
                    line: Some(line),
                    column: Some(column),
                    key: key_at(valid, valid.len()),
                    message: format!(
                        "the file is not valid UTF-8 (byte {} of the file)",
                        e.valid_up_to() + 1
                    ),
                })
            }
        }
    }

    /// Parses and validates text; `origin` is the file name used in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let ctx = Ctx { text, origin };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        ctx.convert(raw)
    }

    /// The embedded demo configuration (see [`Config::demo_toml`]).
    pub fn demo(worker: &Path, listen: &SocketAddrSpec) -> Config {
        Config::parse(&Config::demo_toml(worker, listen), "<demo>")
            .expect("the embedded demo config is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml")
    }

    pub(super) fn err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    /// Asserts an error's line and key; returns the error for more checks.
    pub(super) fn assert_err(text: &str, line: usize, key: &str) -> ConfigError {
        let e = err(text);
        assert_eq!(e.line, Some(line), "line of {e}");
        assert_eq!(e.key.as_deref(), Some(key), "key of {e}");
        assert_eq!(e.file, "test.toml");
        assert!(e.column.is_some(), "column of {e}");
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("test.toml:{line}:")),
            "display: {shown}"
        );
        assert!(shown.contains(&format!("key `{key}`")), "display: {shown}");
        e
    }

    pub(super) const MIN: &str = "command = [\"/bin/app\"]\n";

    #[test]
    fn full_config() {
        let text = r#"
command   = ["./target/release/examples/hello", "--flag"]
instances = 2
control   = "/run/baton/api.sock"
cwd       = "/srv/app"

[env]
PYTHONUNBUFFERED = "1"
RUST_LOG = "info"

[sockets]
http = "127.0.0.1:8080"
admin = "[::1]:9090"
local = "unix:/run/app.sock"

[readiness]
kind     = "http"
timeout  = "45s"
path     = "/healthz"
interval = "250ms"
probe_timeout = "2s"
successes = 3
stable   = "5s"
startup_nice = 5
max_starting = 3

[drain]
signal  = "quit"
timeout = "1m30s"
nice    = 15

[restart]
backoff_initial = "50ms"
backoff_max     = "1m"
"#;
        let c = parse(text).unwrap();
        assert_eq!(
            c,
            Config {
                command: vec!["./target/release/examples/hello".into(), "--flag".into()],
                instances: 2,
                control: Some("/run/baton/api.sock".into()),
                cwd: Some("/srv/app".into()),
                release: None,
                handover: Handover::Fds,
                history: DEFAULT_HISTORY,
                env: [("PYTHONUNBUFFERED", "1"), ("RUST_LOG", "info")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                sockets: vec![
                    SocketSpec {
                        name: "http".into(),
                        addr: SocketAddrSpec::Tcp("127.0.0.1:8080".parse().unwrap()),
                    },
                    SocketSpec {
                        name: "admin".into(),
                        addr: SocketAddrSpec::Tcp("[::1]:9090".parse().unwrap()),
                    },
                    SocketSpec {
                        name: "local".into(),
                        addr: SocketAddrSpec::Unix("/run/app.sock".into()),
                    },
                ],
                readiness: Readiness {
                    kind: ReadinessKind::Http {
                        path: "/healthz".into(),
                        interval: Duration::from_millis(250),
                        probe_timeout: Duration::from_secs(2),
                        successes: 3,
                    },
                    timeout: Duration::from_secs(45),
                    stable: Duration::from_secs(5),
                    startup_nice: 5,
                    max_starting: Some(3),
                },
                drain: Drain {
                    signal: StopSignal::from_name("SIGQUIT").unwrap(),
                    timeout: Duration::from_secs(90),
                    nice: Some(15),
                },
                restart: Restart {
                    backoff_initial: Duration::from_millis(50),
                    backoff_max: Duration::from_secs(60),
                },
            }
        );
        assert_eq!(c.drain.signal.number(), libc::SIGQUIT);
        assert_eq!(c.drain.signal.to_string(), "SIGQUIT");
    }

    #[test]
    fn defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.command, vec!["/bin/app".to_string()]);
        assert_eq!(c.instances, 1);
        assert_eq!(c.control, None);
        assert_eq!(c.cwd, None);
        assert!(c.env.is_empty());
        assert!(c.sockets.is_empty());
        assert_eq!(c.readiness, Readiness::default());
        assert_eq!(c.readiness.kind, ReadinessKind::Notify);
        assert_eq!(c.readiness.timeout, Duration::from_secs(30));
        assert_eq!(c.readiness.stable, Duration::ZERO);
        assert_eq!(c.drain.signal, StopSignal::TERM);
        assert_eq!(c.drain.signal.number(), libc::SIGTERM);
        assert_eq!(c.drain.signal.name(), "SIGTERM");
        assert_eq!(c.drain.timeout, Duration::from_secs(30));
        assert_eq!(c.restart.backoff_initial, Duration::from_millis(100));
        assert_eq!(c.restart.backoff_max, Duration::from_secs(10));
        assert_eq!(c.max_starting(), cpus());
    }

    /// Absent, `drain.nice` follows the worker count: 10 with more workers than CPUs, else 0;
    /// a value, 0 included, is kept as written.
    #[test]
    fn drain_nice_default_follows_workers_per_cpu() {
        let with = |extra: &str| parse(&format!("{MIN}{extra}")).unwrap();
        let n = cpus();
        assert_eq!(with("").drain.nice, None);
        assert_eq!(with("").drain_nice(), 0, "one worker");
        assert_eq!(
            with(&format!("instances = {n}\n")).drain_nice(),
            0,
            "one per CPU"
        );
        let over = format!("instances = {}\n", n + 1);
        assert_eq!(with(&over).drain_nice(), AUTO_DRAIN_NICE, "more than CPUs");
        assert_eq!(with(&format!("{over}[drain]\nnice = 0\n")).drain_nice(), 0);
        assert_eq!(with("[drain]\nnice = 7\n").drain_nice(), 7);
    }

    #[test]
    fn inline_tables_work() {
        let c = parse(&format!(
            "{MIN}readiness = {{ kind = \"tcp\", interval = \"5s\", timeout = \"2s\" }}\n"
        ))
        .unwrap();
        assert!(
            matches!(c.readiness.kind, ReadinessKind::Tcp { interval, .. } if interval == Duration::from_secs(5))
        );
    }

    #[test]
    fn demo_parses() {
        let listen: SocketAddrSpec = "127.0.0.1:8080".parse().unwrap();
        let c = Config::demo(Path::new("/usr/lib/baton/hello-worker"), &listen);
        assert_eq!(c.command, vec!["/usr/lib/baton/hello-worker".to_string()]);
        assert_eq!(c.instances, 2);
        assert_eq!(
            c.sockets,
            vec![SocketSpec {
                name: "http".into(),
                addr: listen,
            }]
        );
        assert_eq!(c.readiness.kind, ReadinessKind::Notify);
        assert_eq!(c.readiness.timeout, Duration::from_secs(10));
        assert_eq!(c.drain.timeout, Duration::from_secs(10));
        assert_eq!(c.drain.signal, StopSignal::TERM);
        // any path and address survive the quoting
        let odd = Path::new("/opt/we\"ird\\dir/hello");
        let unix: SocketAddrSpec = "unix:/run/demo \"x\".sock".parse().unwrap();
        let c = Config::demo(odd, &unix);
        assert_eq!(c.command, vec![odd.display().to_string()]);
        assert_eq!(c.sockets[0].addr, unix);
    }

    #[test]
    fn load_reads_files_and_reports_io_errors() {
        let dir = std::env::temp_dir().join(format!("baton-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("baton.toml");
        std::fs::write(&path, "command = [\"/bin/true\"]\ninstances = 0\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert_eq!(e.file, path.display().to_string());
        assert_eq!(e.line, Some(2));
        std::fs::write(&path, "command = [\"/bin/true\"]\n").unwrap();
        assert_eq!(
            Config::load(&path).unwrap().command,
            vec!["/bin/true".to_string()]
        );
        let e = Config::load(&dir.join("missing.toml")).unwrap_err();
        assert_eq!(e.line, None);
        assert!(e.message.contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 13: a FIFO at the config path is refused at once, never read.
    #[test]
    fn config_must_be_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("baton-cfg-fifo-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let fifo = dir.join("fifo.toml");
        let _ = std::fs::remove_file(&fifo);
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = Config::load(&fifo).unwrap_err();
        assert!(e.message.contains("regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
