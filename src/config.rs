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
//!
//! [env]                                    # extra environment for workers
//! PYTHONUNBUFFERED = "1"
//!
//! [sockets]                                # used only when systemd passed no sockets
//! http = "127.0.0.1:8080"                  # "IPv4:port", "[IPv6]:port", "unix:/path" or "/path"
//!
//! [readiness]
//! kind          = "notify"                 # notify | accepting | http | tcp | exec | delay
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

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

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

/// Longest accepted duration, for every duration key: one day. Longer timeouts, intervals
/// or backoffs are mistakes, and the supervisor adds these durations to clock readings.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);

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
    /// Extra environment for the workers.
    pub env: BTreeMap<String, String>,
    /// Fallback sockets (used only when systemd passed none), in the order
    /// they appear in the file. `LISTEN_FDNAMES` follows this order.
    pub sockets: Vec<SocketSpec>,
    pub readiness: Readiness,
    pub drain: Drain,
    pub restart: Restart,
}

/// One named socket from `[sockets]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub name: String,
    pub addr: SocketAddrSpec,
}

/// Address of a socket from `[sockets]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SocketAddrSpec {
    Tcp(SocketAddr),
    /// Absolute filesystem path of a unix stream socket.
    Unix(PathBuf),
}

impl fmt::Display for SocketAddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddrSpec::Tcp(a) => write!(f, "{a}"),
            SocketAddrSpec::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FromStr for SocketAddrSpec {
    type Err = String;

    /// Accepts `IPv4:port`, `[IPv6]:port`, `unix:/abs/path` and `/abs/path`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let unix = s
            .strip_prefix("unix:")
            .or(if s.starts_with('/') { Some(s) } else { None });
        if let Some(path) = unix {
            if !path.starts_with('/') {
                return Err(format!(
                    "unix socket path {path:?} must be absolute (like \"unix:/run/app.sock\")"
                ));
            }
            if path.contains('\0') {
                return Err("unix socket path contains a NUL byte".to_string());
            }
            if path.len() > MAX_UNIX_PATH {
                return Err(format!(
                    "unix socket path is too long ({} bytes, at most {MAX_UNIX_PATH})",
                    path.len()
                ));
            }
            return Ok(SocketAddrSpec::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(SocketAddrSpec::Tcp)
            .map_err(|_| {
                format!(
                    "invalid socket address {s:?}: expected \"IPv4:port\" (like \"127.0.0.1:8080\"), \
                     \"[IPv6]:port\" (like \"[::1]:8080\") or \"unix:/path\""
                )
            })
    }
}

/// How a worker proves it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub kind: ReadinessKind,
    /// Maximum time for a worker to become ready.
    pub timeout: Duration,
    /// Once all workers of a new generation are ready, how long it must stay
    /// up before the old generation is retired.
    pub stable: Duration,
    /// The nice value a worker starts at; it runs at its normal priority once it is ready.
    /// So a starting generation takes the CPU the serving one leaves idle, rather than the
    /// CPU it needs to answer requests. 0 starts workers at their normal priority.
    pub startup_nice: i32,
    /// At most this many workers of a generation that starts while another one serves are
    /// starting (spawned, not yet ready) at once; the next one is spawned when one is ready.
    /// Starting a process is CPU work that delays the serving generation's requests however
    /// low its priority (much of it runs in the kernel), so it is paced rather than piled up.
    /// `None`: as many as there are CPUs baton may run on. The first generation, with no
    /// requests to protect, starts all its workers at once.
    pub max_starting: Option<u32>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            kind: ReadinessKind::Notify,
            timeout: DEFAULT_READY_TIMEOUT,
            stable: Duration::ZERO,
            startup_nice: DEFAULT_STARTUP_NICE,
            max_starting: None,
        }
    }
}

/// The readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadinessKind {
    /// The worker sends `READY=1` over `NOTIFY_SOCKET`.
    Notify,
    /// An HTTP `GET path` probe against the worker's socket succeeds.
    Http {
        path: String,
        interval: Duration,
        probe_timeout: Duration,
        successes: u32,
    },
    /// A TCP connection to the worker's socket succeeds.
    Tcp {
        interval: Duration,
        probe_timeout: Duration,
        successes: u32,
    },
    /// The check command (`argv`, no shell) exits with status 0.
    Exec {
        argv: Vec<String>,
        interval: Duration,
        probe_timeout: Duration,
        successes: u32,
    },
    /// The worker is considered ready after a fixed delay.
    Delay { delay: Duration },
    /// The worker's process tree waits for connections on every passed socket (a thread
    /// blocked in accept/poll/select on it, or the socket in one of its epoll sets), as seen
    /// in /proc every `interval`. Needs no app change.
    Accepting { interval: Duration },
}

impl ReadinessKind {
    /// The `kind` string of this check (`"notify"`, `"http"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ReadinessKind::Notify => "notify",
            ReadinessKind::Http { .. } => "http",
            ReadinessKind::Tcp { .. } => "tcp",
            ReadinessKind::Exec { .. } => "exec",
            ReadinessKind::Delay { .. } => "delay",
            ReadinessKind::Accepting { .. } => "accepting",
        }
    }
}

impl fmt::Display for ReadinessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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

/// A signal allowed as drain signal: libc number plus canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StopSignal {
    number: i32,
    name: &'static str,
}

const SIGNALS: &[StopSignal] = &[
    StopSignal::TERM,
    StopSignal {
        number: libc::SIGQUIT,
        name: "SIGQUIT",
    },
    StopSignal {
        number: libc::SIGINT,
        name: "SIGINT",
    },
    StopSignal {
        number: libc::SIGHUP,
        name: "SIGHUP",
    },
    StopSignal {
        number: libc::SIGUSR1,
        name: "SIGUSR1",
    },
    StopSignal {
        number: libc::SIGUSR2,
        name: "SIGUSR2",
    },
    StopSignal {
        number: libc::SIGWINCH,
        name: "SIGWINCH",
    },
];

impl StopSignal {
    /// SIGTERM, the default.
    pub const TERM: StopSignal = StopSignal {
        number: libc::SIGTERM,
        name: "SIGTERM",
    };

    /// The libc signal number.
    pub fn number(&self) -> i32 {
        self.number
    }

    /// The canonical name, like `"SIGTERM"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Looks a name up: case-insensitive, with or without `SIG`.
    pub fn from_name(name: &str) -> Option<StopSignal> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        SIGNALS.iter().copied().find(|s| &s.name[3..] == bare)
    }
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal::TERM
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl FromStr for StopSignal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        StopSignal::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|s| s.name).collect();
            format!(
                "unknown or unsupported signal {s:?}, expected one of {}",
                names.join(", ")
            )
        })
    }
}

/// The notify socket's path, next to the control socket: `control` with the extension
/// `.notify` (`/run/baton/api/control.sock` → `/run/baton/api/control.notify`).
pub fn notify_path(control: &Path) -> PathBuf {
    control.with_extension("notify")
}

/// Whether `control` can be the control socket's path next to `sockets`: its derived notify
/// path (see [`notify_path`]) must differ from it and fit a socket address, and neither may
/// be one of the `[sockets]` unix paths (baton would replace the service's socket).
pub fn check_control_path(control: &Path, sockets: &[SocketSpec]) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let notify = notify_path(control);
    let len = |p: &Path| p.as_os_str().as_bytes().len();
    if len(control) > MAX_UNIX_PATH {
        return Err(format!(
            "control socket path {} is too long ({} bytes, at most {MAX_UNIX_PATH})",
            control.display(),
            len(control)
        ));
    }
    if notify == control {
        return Err(format!(
            "the control socket path {} would also be the notify socket's (the control path \
             with the extension .notify): use another extension, like .sock",
            control.display()
        ));
    }
    if len(&notify) > MAX_UNIX_PATH {
        return Err(format!(
            "the notify socket path derived from it, {}, is too long ({} bytes, at most \
             {MAX_UNIX_PATH}): choose a shorter control path",
            notify.display(),
            len(&notify)
        ));
    }
    for s in sockets {
        if let SocketAddrSpec::Unix(p) = &s.addr {
            let what = if *p == control {
                "the control socket"
            } else if *p == notify {
                "the notify socket (the control path with the extension .notify)"
            } else {
                continue;
            };
            return Err(format!(
                "`sockets.{}` ({}) is at the path of {what}: baton would replace it",
                s.name,
                p.display()
            ));
        }
    }
    Ok(())
}

/// A configuration error, located in the file where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name (or origin) of the configuration.
    pub file: String,
    /// 1-based line, when the error can be located.
    pub line: Option<usize>,
    /// 1-based column (in characters), when the error can be located.
    pub column: Option<usize>,
    /// Dotted key, like `readiness.timeout`, when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

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
/// The `accepting` check costs a few reads in /proc: it looks more often.
const DEFAULT_ACCEPTING_INTERVAL: Duration = Duration::from_millis(50);
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
        Config::parse_bytes(&bytes, &origin)
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

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// Parses a duration like `"30s"`, `"250ms"`, `"1m30s"`, `"1.5s"`, `"500us"`
/// or `"0"`. Units: `ns`, `us`/`µs`, `ms`, `s`, `m`/`min`, `h`, `d`.
/// Components may be separated by spaces.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; use a string like \"30s\"".to_string());
    }
    if t.starts_with('-') {
        return Err(format!("negative duration {s:?} is not allowed"));
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();

        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format!(
                "invalid duration {s:?}: expected a number followed by a unit, like \"30s\" or \"1.5s\""
            ));
        }
        if unit.is_empty() {
            return Err(format!(
                "invalid duration {s:?}: missing unit after {num:?} (use ns, us, ms, s, m, h or d, like \"30s\")"
            ));
        }
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" | "min" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h or d)"
                ))
            }
        };
        let overflow = || format!("duration {s:?} is too large");
        let int_val: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| overflow())?
        };
        // At most 18 fractional digits matter (10^18 * scale fits in u128).
        let frac = &frac[..frac.len().min(18)];
        let frac_val: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| overflow())?
        };
        let frac_ns = frac_val * scale / 10u128.pow(frac.len() as u32);
        total = int_val
            .checked_mul(scale)
            .and_then(|v| v.checked_add(frac_ns))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(overflow)?;
    }
    let secs =
        u64::try_from(total / 1_000_000_000).map_err(|_| format!("duration {s:?} is too large"))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

// ---------------------------------------------------------------------------
// Raw (serde) structures
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawConfig {
    command: Option<Spanned<RawArgv>>,
    instances: Option<Spanned<i64>>,
    control: Option<Spanned<String>>,
    cwd: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    sockets: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    readiness: RawReadiness,
    #[serde(default)]
    drain: RawDrain,
    #[serde(default)]
    restart: RawRestart,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawReadiness {
    kind: Option<Spanned<String>>,
    timeout: Option<Spanned<RawDuration>>,
    path: Option<Spanned<String>>,
    interval: Option<Spanned<RawDuration>>,
    probe_timeout: Option<Spanned<RawDuration>>,
    successes: Option<Spanned<i64>>,
    exec: Option<Spanned<RawArgv>>,
    delay: Option<Spanned<RawDuration>>,
    stable: Option<Spanned<RawDuration>>,
    startup_nice: Option<Spanned<i64>>,
    max_starting: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawDrain {
    signal: Option<Spanned<String>>,
    timeout: Option<Spanned<RawDuration>>,
    nice: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawRestart {
    backoff_initial: Option<Spanned<RawDuration>>,
    backoff_max: Option<Spanned<RawDuration>>,
}

/// An argv array; a plain string is rejected with a hint.
struct RawArgv(Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for RawArgv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawArgv;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings (argv)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawArgv, E> {
                Err(E::custom(format!(
                    "expected an array of strings, found the string {v:?}; \
                     write the argv as an array like [\"/usr/bin/app\", \"--flag\"] (no shell is used)"
                )))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawArgv, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    v.push(s);
                }
                Ok(RawArgv(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration as written: a string, or a number (rejected with a hint).
enum RawDuration {
    Str(String),
    Int(i64),
    Float(f64),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Str(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::Float(v))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Conversion and validation
// ---------------------------------------------------------------------------

struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = line_col(self.text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            file: self.origin.to_string(),
            line,
            column,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// Converts a parser or serde error, recovering the dotted key.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let mut message = e.message().to_string();
        // The parser's recursion limit (a key or header with hundreds of dots) comes without
        // a location: it is the line with the most deeply dotted key.
        let span = e.span().or_else(|| {
            let line = deepest_dotted_line(self.text)?;
            message = format!("{message}: the key is nested too deeply");
            let start: usize = self
                .text
                .split_inclusive('\n')
                .take(line - 1)
                .map(str::len)
                .sum();
            Some(start..start)
        });
        let (line, column) = match &span {
            Some(span) => {
                let (l, c) = line_col(self.text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        // The error knows the path of tables it went through, but only shows
        // it (as a trailing "in `a.b`" line) when rendered without the input.
        let mut bare = e.clone();
        bare.set_input(None);
        let rendered = bare.to_string();
        let mut path: Vec<String> = rendered
            .strip_prefix(&message)
            .and_then(|r| r.strip_prefix("\nin `"))
            .and_then(|r| r.strip_suffix("`\n"))
            .filter(|p| !p.is_empty())
            .map(|p| vec![p.to_string()])
            .unwrap_or_default();
        if let Some(field) = backticked_after(&message, "unknown field `") {
            path.push(field.to_string());
        }
        let key = if path.is_empty() {
            span.and_then(|s| key_at(self.text, s.start))
        } else {
            Some(path.join("."))
        };
        // a key as long as a line is shown by its start
        let key = key.map(|k| match k.char_indices().nth(80) {
            Some((i, _)) => format!("{}…", &k[..i]),
            None => k,
        });
        ConfigError {
            file: self.origin.to_string(),
            line,
            column,
            key,
            message,
        }
    }

    fn convert(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let command = match raw.command {
            None => {
                return Err(ConfigError {
                    file: self.origin.to_string(),
                    line: None,
                    column: None,
                    key: Some("command".to_string()),
                    message: "missing required key `command` (the worker argv, like \
                              command = [\"/usr/bin/app\", \"--flag\"])"
                        .to_string(),
                })
            }
            Some(c) => self.argv(&c, "command")?,
        };

        let instances = match raw.instances {
            None => 1,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if (1..=MAX_INSTANCES).contains(&v) => v,
                _ => {
                    return Err(self.err(
                        Some(n.span()),
                        "instances",
                        format!(
                            "instances must be between 1 and {MAX_INSTANCES}, got {}",
                            n.get_ref()
                        ),
                    ))
                }
            },
        };

        let raw_control_span = raw.control.as_ref().map(|c| c.span());
        let control = match raw.control {
            None => None,
            Some(c) => {
                let p = self.path(&c, "control")?;
                if c.get_ref().len() > MAX_UNIX_PATH {
                    return Err(self.err(
                        Some(c.span()),
                        "control",
                        format!(
                            "control socket path is too long ({} bytes, at most {MAX_UNIX_PATH})",
                            c.get_ref().len()
                        ),
                    ));
                }
                Some(p)
            }
        };
        let cwd = match raw.cwd {
            None => None,
            Some(c) => Some(self.path(&c, "cwd")?),
        };

        let mut env = BTreeMap::new();
        for (name, value) in raw.env {
            let key = format!("env.{name}");
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(self.err(
                    Some(value.span()),
                    key,
                    "environment variable names must be non-empty and contain no '=' or NUL",
                ));
            }
            if value.get_ref().contains('\0') {
                return Err(self.err(
                    Some(value.span()),
                    key,
                    "environment values must not contain NUL",
                ));
            }
            if SET_BY_BATON.contains(&name.as_str()) {
                return Err(self.err(
                    Some(value.span()),
                    key,
                    "baton sets this variable for every worker (socket activation and notify)",
                ));
            }
            env.insert(name, value.into_inner());
        }

        let sockets = self.sockets(raw.sockets)?;
        if let (Some(path), Some(c)) = (&control, &raw_control_span) {
            check_control_path(path, &sockets)
                .map_err(|m| self.err(Some(c.clone()), "control", m))?;
        }
        let readiness = self.readiness(raw.readiness)?;

        let drain = Drain {
            signal: match raw.drain.signal {
                None => StopSignal::TERM,
                Some(s) => s
                    .get_ref()
                    .parse()
                    .map_err(|m: String| self.err(Some(s.span()), "drain.signal", m))?,
            },
            timeout: self.duration(&raw.drain.timeout, "drain.timeout", DEFAULT_DRAIN_TIMEOUT)?,
            nice: match &raw.drain.nice {
                None => None,
                v => Some(self.nice(v, "drain.nice", 0)?),
            },
        };

        let r = raw.restart;
        let backoff_initial = self.duration(
            &r.backoff_initial,
            "restart.backoff_initial",
            DEFAULT_BACKOFF_INITIAL,
        )?;
        let backoff_max =
            self.duration(&r.backoff_max, "restart.backoff_max", DEFAULT_BACKOFF_MAX)?;
        if backoff_initial.is_zero() {
            return Err(self.err(
                r.backoff_initial.as_ref().map(|s| s.span()),
                "restart.backoff_initial",
                "backoff_initial must be greater than zero",
            ));
        }
        if backoff_initial > backoff_max {
            let (span, key) = match (&r.backoff_initial, &r.backoff_max) {
                (Some(s), _) => (Some(s.span()), "restart.backoff_initial"),
                (None, Some(s)) => (Some(s.span()), "restart.backoff_max"),
                (None, None) => (None, "restart.backoff_initial"),
            };
            return Err(self.err(
                span,
                key,
                format!(
                    "backoff_initial ({backoff_initial:?}) must not exceed backoff_max ({backoff_max:?})"
                ),
            ));
        }

        Ok(Config {
            command,
            instances,
            control,
            cwd,
            env,
            sockets,
            readiness,
            drain,
            restart: Restart {
                backoff_initial,
                backoff_max,
            },
        })
    }

    fn argv(&self, v: &Spanned<RawArgv>, key: &str) -> Result<Vec<String>, ConfigError> {
        let args = &v.get_ref().0;
        if args.is_empty() {
            return Err(self.err(
                Some(v.span()),
                key,
                format!("`{key}` must not be empty: give the program and its arguments, like [\"/usr/bin/app\"]"),
            ));
        }
        if args[0].get_ref().is_empty() {
            return Err(self.err(
                Some(args[0].span()),
                key,
                "the program (first element) must not be an empty string",
            ));
        }
        if let Some(a) = args.iter().find(|a| a.get_ref().contains('\0')) {
            return Err(self.err(Some(a.span()), key, "arguments must not contain NUL"));
        }
        Ok(args.iter().map(|a| a.get_ref().clone()).collect())
    }

    fn path(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let s = v.get_ref();
        if s.is_empty() {
            return Err(self.err(Some(v.span()), key, "path must not be empty"));
        }
        if s.contains('\0') {
            return Err(self.err(Some(v.span()), key, "path must not contain NUL"));
        }
        Ok(PathBuf::from(s))
    }

    fn sockets(
        &self,
        raw: BTreeMap<String, Spanned<String>>,
    ) -> Result<Vec<SocketSpec>, ConfigError> {
        // toml tables are sorted maps; restore file order from the spans.
        let mut entries: Vec<(String, Spanned<String>)> = raw.into_iter().collect();
        entries.sort_by_key(|(_, v)| v.span().start);
        let mut out: Vec<SocketSpec> = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            let key = format!("sockets.{name}");
            if name.is_empty()
                || name.len() > MAX_SOCKET_NAME
                || name.contains(':')
                || !name.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
            {
                return Err(self.err(
                    Some(value.span()),
                    key,
                    format!(
                        "invalid socket name {name:?}: names must be 1 to {MAX_SOCKET_NAME} printable \
                         ASCII characters without ':'"
                    ),
                ));
            }
            let addr: SocketAddrSpec = value
                .get_ref()
                .parse()
                .map_err(|m: String| self.err(Some(value.span()), key.clone(), m))?;
            if let Some(other) = out.iter().find(|s| s.addr == addr) {
                return Err(self.err(
                    Some(value.span()),
                    key,
                    format!("address {addr} is already used by socket `{}`", other.name),
                ));
            }
            out.push(SocketSpec { name, addr });
        }
        Ok(out)
    }

    fn readiness(&self, r: RawReadiness) -> Result<Readiness, ConfigError> {
        let timeout = self.duration(&r.timeout, "readiness.timeout", DEFAULT_READY_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(self.err(
                r.timeout.as_ref().map(|s| s.span()),
                "readiness.timeout",
                "readiness timeout must be greater than zero",
            ));
        }
        let stable = self.duration(&r.stable, "readiness.stable", Duration::ZERO)?;
        let startup_nice = self.nice(
            &r.startup_nice,
            "readiness.startup_nice",
            DEFAULT_STARTUP_NICE,
        )?;
        let max_starting = match &r.max_starting {
            None => None,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if (1..=MAX_INSTANCES).contains(&v) => Some(v),
                _ => {
                    return Err(self.err(
                        Some(n.span()),
                        "readiness.max_starting",
                        format!(
                            "max_starting must be from 1 to {MAX_INSTANCES}, got {}",
                            n.get_ref()
                        ),
                    ))
                }
            },
        };

        let kind_name = r.kind.as_ref().map_or("notify", |k| k.get_ref().as_str());
        let kind_span = r.kind.as_ref().map(|k| k.span());
        const KINDS: &str = "`notify`, `accepting`, `http`, `tcp`, `exec` or `delay`";
        // Which optional keys each kind accepts (besides timeout and stable).
        let allowed: &[&str] = match kind_name {
            "notify" => &[],
            "http" => &["path", "interval", "probe_timeout", "successes"],
            "tcp" => &["interval", "probe_timeout", "successes"],
            "exec" => &["exec", "interval", "probe_timeout", "successes"],
            "delay" => &["delay"],
            "accepting" => &["interval"],
            other => {
                return Err(self.err(
                    kind_span,
                    "readiness.kind",
                    format!("unknown readiness kind {other:?}, expected {KINDS}"),
                ))
            }
        };
        let present: [(&str, Option<Range<usize>>); 6] = [
            ("path", r.path.as_ref().map(|v| v.span())),
            ("interval", r.interval.as_ref().map(|v| v.span())),
            ("probe_timeout", r.probe_timeout.as_ref().map(|v| v.span())),
            ("successes", r.successes.as_ref().map(|v| v.span())),
            ("exec", r.exec.as_ref().map(|v| v.span())),
            ("delay", r.delay.as_ref().map(|v| v.span())),
        ];
        // Report the first offending key in file order.
        let mut offending: Vec<(&str, Range<usize>)> = present
            .into_iter()
            .filter_map(|(k, s)| s.map(|s| (k, s)))
            .filter(|(k, _)| !allowed.contains(k))
            .collect();
        offending.sort_by_key(|(_, s)| s.start);
        if let Some((k, span)) = offending.into_iter().next() {
            let users = match k {
                "path" => "kind = \"http\"",
                "exec" => "kind = \"exec\"",
                "delay" => "kind = \"delay\"",
                "interval" => "kind = \"accepting\", \"http\", \"tcp\" or \"exec\"",
                _ => "kind = \"http\", \"tcp\" or \"exec\"",
            };
            return Err(self.err(
                Some(span),
                format!("readiness.{k}"),
                format!("`{k}` is only valid with {users} (kind is \"{kind_name}\")"),
            ));
        }

        let default_interval = if kind_name == "accepting" {
            DEFAULT_ACCEPTING_INTERVAL
        } else {
            DEFAULT_INTERVAL
        };
        let interval = self.duration(&r.interval, "readiness.interval", default_interval)?;
        if interval.is_zero() {
            return Err(self.err(
                r.interval.as_ref().map(|s| s.span()),
                "readiness.interval",
                "interval must be greater than zero",
            ));
        }
        let probe_timeout = self.duration(
            &r.probe_timeout,
            "readiness.probe_timeout",
            DEFAULT_PROBE_TIMEOUT,
        )?;
        if probe_timeout.is_zero() {
            return Err(self.err(
                r.probe_timeout.as_ref().map(|s| s.span()),
                "readiness.probe_timeout",
                "probe_timeout must be greater than zero",
            ));
        }
        let successes = match &r.successes {
            None => 1,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(v) if v >= 1 => v,
                _ => {
                    return Err(self.err(
                        Some(n.span()),
                        "readiness.successes",
                        format!("successes must be at least 1, got {}", n.get_ref()),
                    ))
                }
            },
        };

        let kind = match kind_name {
            "notify" => ReadinessKind::Notify,
            "http" => {
                let path = match &r.path {
                    None => "/".to_string(),
                    Some(p) => {
                        let s = p.get_ref();
                        if !s.starts_with('/')
                            || s.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            return Err(self.err(
                                Some(p.span()),
                                "readiness.path",
                                format!(
                                    "http path {s:?} must start with '/' and contain no whitespace"
                                ),
                            ));
                        }
                        s.clone()
                    }
                };
                ReadinessKind::Http {
                    path,
                    interval,
                    probe_timeout,
                    successes,
                }
            }
            "tcp" => ReadinessKind::Tcp {
                interval,
                probe_timeout,
                successes,
            },
            "accepting" => ReadinessKind::Accepting { interval },
            "exec" => {
                let argv = match &r.exec {
                    Some(e) => self.argv(e, "readiness.exec")?,
                    None => {
                        return Err(self.err(
                            kind_span,
                            "readiness.exec",
                            "kind = \"exec\" requires `exec`, the argv of the check command \
                             (like exec = [\"/usr/bin/check\", \"arg\"])",
                        ))
                    }
                };
                ReadinessKind::Exec {
                    argv,
                    interval,
                    probe_timeout,
                    successes,
                }
            }
            _ => {
                let delay = match &r.delay {
                    Some(_) => self.duration(&r.delay, "readiness.delay", Duration::ZERO)?,
                    None => {
                        return Err(self.err(
                            kind_span,
                            "readiness.delay",
                            "kind = \"delay\" requires `delay` (like delay = \"2s\")",
                        ))
                    }
                };
                if delay > timeout {
                    return Err(self.err(
                        r.delay.as_ref().map(|s| s.span()),
                        "readiness.delay",
                        format!("delay ({delay:?}) exceeds the readiness timeout ({timeout:?})"),
                    ));
                }
                ReadinessKind::Delay { delay }
            }
        };
        Ok(Readiness {
            kind,
            timeout,
            stable,
            startup_nice,
            max_starting,
        })
    }

    /// A nice value for workers: 0 (their running priority) to 19.
    fn nice(&self, v: &Option<Spanned<i64>>, key: &str, default: i32) -> Result<i32, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) => match i32::try_from(*n.get_ref()) {
                Ok(v) if (0..=19).contains(&v) => Ok(v),
                _ => Err(self.err(
                    Some(n.span()),
                    key,
                    format!(
                        "{} must be a nice value from 0 to 19, got {}",
                        key.rsplit('.').next().unwrap_or(key),
                        n.get_ref()
                    ),
                )),
            },
        }
    }

    fn duration(
        &self,
        v: &Option<Spanned<RawDuration>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let found = match v.get_ref() {
            RawDuration::Str(s) => {
                let d = parse_duration(s).map_err(|m| self.err(Some(v.span()), key, m))?;
                if d > MAX_DURATION {
                    return Err(self.err(
                        Some(v.span()),
                        key,
                        format!(
                            "duration {s:?} is too long: durations are at most one day (\"24h\")"
                        ),
                    ));
                }
                return Ok(d);
            }
            RawDuration::Int(n) => format!("integer {n}"),
            RawDuration::Float(f) => format!("number {f}"),
        };
        Err(self.err(
            Some(v.span()),
            key,
            format!(
                "durations must be strings with a unit: use a string like \"30s\" (found {found})"
            ),
        ))
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..off].chars().count() + 1)
}

/// The text between `prefix` and the next backtick in `message`.
fn backticked_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    Some(&rest[..rest.find('`')?])
}

/// Best-effort dotted key for an error at `offset` (used for syntax errors):
/// the key assigned on that line, prefixed by the last `[table]` header, or
/// the header itself when the error is on a header line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let (line_no, _) = line_col(text, offset);
    let mut table = String::new();
    for (i, line) in text.lines().enumerate() {
        let header = table_header(line);
        if i + 1 == line_no {
            if let Some(h) = header {
                return Some(h);
            }
            let (k, _) = line.split_once('=')?;
            let k = k.trim();
            if k.is_empty() || k.starts_with('#') {
                return None;
            }
            return Some(if table.is_empty() {
                k.to_string()
            } else {
                format!("{table}.{k}")
            });
        }
        if let Some(h) = header {
            table = h;
        }
    }
    None
}

/// The 1-based line whose key (of a `[header]` or a `key = value`) has the most dots outside
/// quotes, if any line has one.
fn deepest_dotted_line(text: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let mut dots = 0;
        let mut quote: Option<char> = None;
        for c in line.trim_start().trim_start_matches('[').chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '.') => dots += 1,
                (None, '=' | ']' | '#') => break,
                _ => {}
            }
        }
        if dots > 0 && best.map_or(true, |(_, d)| dots > d) {
            best = Some((i + 1, dots));
        }
    }
    best.map(|(line, _)| line)
}

/// The name in a `[table]` or `[[table]]` header line.
fn table_header(line: &str) -> Option<String> {
    let l = line.trim();
    let l = match l.find(" #").or_else(|| l.find("\t#")) {
        Some(i) if !l[..i].contains(['"', '\'']) => l[..i].trim_end(),
        _ => l,
    };
    let inner = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]"));
    let inner = inner.or_else(|| l.strip_prefix('[').and_then(|r| r.strip_suffix(']')))?;
    let ok = !inner.trim().is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-. \"'".contains(c));
    ok.then(|| inner.trim().to_string())
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml")
    }

    fn err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    /// Asserts an error's line and key; returns the error for more checks.
    fn assert_err(text: &str, line: usize, key: &str) -> ConfigError {
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

    const MIN: &str = "command = [\"/bin/app\"]\n";

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
    fn probe_defaults() {
        let c = parse(&format!("{MIN}[readiness]\nkind = \"http\"\n")).unwrap();
        assert_eq!(
            c.readiness.kind,
            ReadinessKind::Http {
                path: "/".into(),
                interval: Duration::from_millis(200),
                probe_timeout: Duration::from_secs(1),
                successes: 1,
            }
        );
        let c = parse(&format!("{MIN}[readiness]\nkind = \"tcp\"\n")).unwrap();
        assert_eq!(
            c.readiness.kind,
            ReadinessKind::Tcp {
                interval: Duration::from_millis(200),
                probe_timeout: Duration::from_secs(1),
                successes: 1,
            }
        );
        let c = parse(&format!(
            "{MIN}[readiness]\nkind = \"exec\"\nexec = [\"/usr/bin/check\", \"arg\"]\ninterval = \"1s\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.readiness.kind,
            ReadinessKind::Exec {
                argv: vec!["/usr/bin/check".into(), "arg".into()],
                interval: Duration::from_secs(1),
                probe_timeout: Duration::from_secs(1),
                successes: 1,
            }
        );
        let c = parse(&format!(
            "{MIN}[readiness]\nkind = \"delay\"\ndelay = \"2s\"\nstable = \"1s\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.readiness.kind,
            ReadinessKind::Delay {
                delay: Duration::from_secs(2)
            }
        );
        assert_eq!(c.readiness.stable, Duration::from_secs(1));
        assert_eq!(c.readiness.kind.name(), "delay");
        assert_eq!(c.readiness.kind.to_string(), "delay");
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
    fn unknown_key_top_level() {
        let e = assert_err(
            &format!("{MIN}instances = 2\ncomand = [\"x\"]\n"),
            3,
            "comand",
        );
        assert!(e.message.contains("unknown field `comand`"), "{e}");
        assert_eq!(e.column, Some(1));
    }

    #[test]
    fn unknown_key_in_table() {
        let text = format!("{MIN}\n[readiness]\nkind = \"notify\"\ntimout = \"5s\"\n");
        let e = assert_err(&text, 5, "readiness.timout");
        assert!(e.message.contains("unknown field `timout`"), "{e}");
        assert!(e.message.contains("`timeout`"), "{e}");
        assert_eq!(
            e.to_string(),
            format!("test.toml:5:1: key `readiness.timout`: {}", e.message)
        );
        assert_err(
            &format!("{MIN}[drain]\nsignl = \"TERM\"\n"),
            3,
            "drain.signl",
        );
        assert_err(
            &format!("{MIN}[restart]\n\nmax = \"1s\"\n"),
            4,
            "restart.max",
        );
        assert_err(&format!("{MIN}[bogus]\nx = 1\n"), 2, "bogus");
        assert_err(
            &format!("{MIN}readiness = {{ kind = \"tcp\", nope = 1 }}\n"),
            2,
            "readiness.nope",
        );
    }

    #[test]
    fn type_errors_name_key() {
        let e = assert_err(&format!("{MIN}instances = \"2\"\n"), 2, "instances");
        assert!(e.message.contains("invalid type"), "{e}");
        assert_err(&format!("{MIN}[env]\nPORT = 8080\n"), 3, "env.PORT");
        assert_err(&format!("{MIN}[sockets]\nhttp = 8080\n"), 3, "sockets.http");
        assert_err(&format!("{MIN}readiness = 5\n"), 2, "readiness");
        assert_err("command = [\"a\", 1]\n", 1, "command");
        let e = assert_err("\n\ncommand = \"/bin/app --flag\"\n", 3, "command");
        assert!(e.message.contains("array"), "{e}");
    }

    #[test]
    fn syntax_errors_are_located() {
        let e = err(&format!("{MIN}[readiness]\ntimeout = \"5s\n"));
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.key.as_deref(), Some("readiness.timeout"), "{e}");
        let e = err(&format!(
            "{MIN}[drain]\ntimeout = \"1s\"\ntimeout = \"2s\"\n"
        ));
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(e.key.as_deref(), Some("drain.timeout"), "{e}");
        let e = err(&format!("{MIN}[drain\n"));
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn missing_command() {
        let e = err("instances = 2\n");
        assert_eq!(e.key.as_deref(), Some("command"));
        assert_eq!(e.line, None);
        assert!(
            e.to_string().starts_with("test.toml: key `command`: "),
            "{e}"
        );
        let e = err("");
        assert_eq!(e.key.as_deref(), Some("command"));
    }

    #[test]
    fn validation_errors_name_line_and_key() {
        // empty command
        assert_err("# c\ncommand = []\n", 2, "command");
        assert_err("command = [\"\", \"x\"]\n", 1, "command");
        // instances
        assert_err(&format!("{MIN}instances = 0\n"), 2, "instances");
        assert_err(&format!("{MIN}instances = 1025\n"), 2, "instances");
        assert_err(&format!("{MIN}instances = -3\n"), 2, "instances");
        assert_eq!(
            parse(&format!("{MIN}instances = 1024\n"))
                .unwrap()
                .instances,
            1024
        );
        // paths
        assert_err(&format!("{MIN}control = \"\"\n"), 2, "control");
        assert_err(
            &format!("{MIN}control = \"/{}\"\n", "x".repeat(120)),
            2,
            "control",
        );
        assert_err(&format!("{MIN}cwd = \"\"\n"), 2, "cwd");
        // nice values
        for (table, key, bad) in [
            ("readiness", "startup_nice", "20"),
            ("readiness", "startup_nice", "-1"),
            ("drain", "nice", "40"),
        ] {
            let e = assert_err(
                &format!("{MIN}[{table}]\n{key} = {bad}\n"),
                3,
                &format!("{table}.{key}"),
            );
            assert!(e.message.contains("0 to 19"), "{e}");
        }
        for bad in ["0", "-2", "1025"] {
            let e = assert_err(
                &format!("{MIN}[readiness]\nmax_starting = {bad}\n"),
                3,
                "readiness.max_starting",
            );
            assert!(e.message.contains("from 1 to 1024"), "{e}");
        }
        // env
        assert_err(&format!("{MIN}[env]\n\"A=B\" = \"1\"\n"), 3, "env.A=B");
        let e = assert_err(
            &format!("{MIN}[env]\nLISTEN_FDS = \"1\"\n"),
            3,
            "env.LISTEN_FDS",
        );
        assert!(e.message.contains("baton sets"), "{e}");
        assert_err(
            &format!("{MIN}[env]\nNOTIFY_SOCKET = \"/x\"\n"),
            3,
            "env.NOTIFY_SOCKET",
        );
        // sockets
        assert_err(
            &format!("{MIN}[sockets]\nhttp = \"localhost:80\"\n"),
            3,
            "sockets.http",
        );
        assert_err(
            &format!("{MIN}[sockets]\nhttp = \"127.0.0.1\"\n"),
            3,
            "sockets.http",
        );
        assert_err(
            &format!("{MIN}[sockets]\nu = \"unix:rel.sock\"\n"),
            3,
            "sockets.u",
        );
        assert_err(
            &format!("{MIN}[sockets]\n\"a:b\" = \"127.0.0.1:1\"\n"),
            3,
            "sockets.a:b",
        );
        let e = assert_err(
            &format!("{MIN}[sockets]\na = \"127.0.0.1:1\"\nb = \"127.0.0.1:1\"\n"),
            4,
            "sockets.b",
        );
        assert!(e.message.contains("`a`"), "{e}");
        // readiness kinds
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"http2\"\n"),
            3,
            "readiness.kind",
        );
        let e = assert_err(
            &format!("{MIN}[readiness]\nkind = \"exec\"\n"),
            3,
            "readiness.exec",
        );
        assert!(e.message.contains("requires `exec`"), "{e}");
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"exec\"\nexec = []\n"),
            4,
            "readiness.exec",
        );
        assert_err(
            &format!("{MIN}[readiness]\n\nkind = \"delay\"\n"),
            4,
            "readiness.delay",
        );
        let e = assert_err(
            &format!("{MIN}[readiness]\nkind = \"tcp\"\npath = \"/x\"\n"),
            4,
            "readiness.path",
        );
        assert!(e.message.contains("kind = \"http\""), "{e}");
        assert_err(
            &format!("{MIN}[readiness]\ninterval = \"1s\"\n"),
            3,
            "readiness.interval",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"delay\"\ndelay = \"1s\"\nsuccesses = 2\n"),
            5,
            "readiness.successes",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"http\"\nexec = [\"x\"]\n"),
            4,
            "readiness.exec",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"http\"\npath = \"healthz\"\n"),
            4,
            "readiness.path",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"tcp\"\nsuccesses = 0\n"),
            4,
            "readiness.successes",
        );
        assert_err(
            &format!("{MIN}[readiness]\ntimeout = \"0s\"\n"),
            3,
            "readiness.timeout",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"tcp\"\ninterval = \"0s\"\n"),
            4,
            "readiness.interval",
        );
        assert_err(
            &format!("{MIN}[readiness]\nkind = \"delay\"\ndelay = \"1m\"\ntimeout = \"5s\"\n"),
            4,
            "readiness.delay",
        );
        // interval > timeout is fine
        parse(&format!(
            "{MIN}[readiness]\nkind = \"tcp\"\ninterval = \"1m\"\ntimeout = \"5s\"\n"
        ))
        .unwrap();
        // drain
        let e = assert_err(
            &format!("{MIN}[drain]\nsignal = \"SIGKILL\"\n"),
            3,
            "drain.signal",
        );
        assert!(e.message.contains("SIGTERM"), "{e}");
        // restart
        let e = assert_err(
            &format!("{MIN}[restart]\nbackoff_initial = \"20s\"\nbackoff_max = \"10s\"\n"),
            3,
            "restart.backoff_initial",
        );
        assert!(e.message.contains("must not exceed"), "{e}");
        assert_err(
            &format!("{MIN}[restart]\nbackoff_max = \"10ms\"\n"),
            3,
            "restart.backoff_max",
        );
        assert_err(
            &format!("{MIN}[restart]\nbackoff_initial = \"0s\"\n"),
            3,
            "restart.backoff_initial",
        );
    }

    #[test]
    fn bad_duration() {
        let e = assert_err(
            &format!("{MIN}[drain]\ntimeout = \"30seconds\"\n"),
            3,
            "drain.timeout",
        );
        assert!(e.message.contains("unknown unit"), "{e}");
        assert_eq!(e.column, Some(11));
        assert_err(
            &format!("{MIN}[readiness]\ntimeout = \"abc\"\n"),
            3,
            "readiness.timeout",
        );
        assert_err(
            &format!("{MIN}[readiness]\nstable = \"5\"\n"),
            3,
            "readiness.stable",
        );
        assert_err(
            &format!("{MIN}[readiness]\nstable = \"-5s\"\n"),
            3,
            "readiness.stable",
        );
    }

    #[test]
    fn integer_duration_hint() {
        let e = assert_err(&format!("{MIN}[drain]\ntimeout = 30\n"), 3, "drain.timeout");
        assert!(e.message.contains("use a string like \"30s\""), "{e}");
        let e = assert_err(
            &format!("{MIN}[readiness]\nkind = \"delay\"\ndelay = 1.5\n"),
            4,
            "readiness.delay",
        );
        assert!(e.message.contains("use a string like \"30s\""), "{e}");
    }

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1m 30s"), Duration::from_secs(90));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("500us"), Duration::from_micros(500));
        assert_eq!(ok("500µs"), Duration::from_micros(500));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("1d"), Duration::from_secs(86400));
        assert_eq!(ok("2min"), Duration::from_secs(120));
        assert_eq!(ok("0.001ms"), Duration::from_nanos(1000));
        for bad in [
            "",
            "5",
            "s",
            "1.2.3s",
            "1x",
            "-1s",
            "1s-",
            "99999999999999999999999h",
            "1 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn signals() {
        for (name, num) in [
            ("TERM", libc::SIGTERM),
            ("SIGTERM", libc::SIGTERM),
            ("sigquit", libc::SIGQUIT),
            ("int", libc::SIGINT),
            ("SIGHUP", libc::SIGHUP),
            ("usr1", libc::SIGUSR1),
            ("SIGUSR2", libc::SIGUSR2),
            ("SigWinch", libc::SIGWINCH),
        ] {
            let s = StopSignal::from_name(name).unwrap();
            assert_eq!(s.number(), num);
            assert!(s.name().starts_with("SIG"));
            assert_eq!(s.to_string(), s.name());
        }
        assert!(StopSignal::from_name("KILL").is_none());
        assert!(StopSignal::from_name("SIG").is_none());
        assert!("15".parse::<StopSignal>().is_err());
        let c = parse(&format!("{MIN}[drain]\nsignal = \"winch\"\n")).unwrap();
        assert_eq!(c.drain.signal.name(), "SIGWINCH");
    }

    #[test]
    fn unix_socket_addr() {
        let c = parse(&format!(
            "{MIN}[sockets]\na = \"unix:/run/a.sock\"\nb = \"/run/b.sock\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.sockets[0].addr,
            SocketAddrSpec::Unix(PathBuf::from("/run/a.sock"))
        );
        assert_eq!(
            c.sockets[1].addr,
            SocketAddrSpec::Unix(PathBuf::from("/run/b.sock"))
        );
        assert_eq!(c.sockets[0].addr.to_string(), "unix:/run/a.sock");
        let long = format!("unix:/{}", "x".repeat(200));
        assert!(long.parse::<SocketAddrSpec>().is_err());
    }

    #[test]
    fn ipv6_socket_addr() {
        let c = parse(&format!("{MIN}[sockets]\nv6 = \"[::]:8443\"\n")).unwrap();
        let SocketAddrSpec::Tcp(a) = c.sockets[0].addr else {
            panic!("not tcp")
        };
        assert!(a.is_ipv6());
        assert_eq!(a.port(), 8443);
        assert!("[::1]".parse::<SocketAddrSpec>().is_err());
        assert!("::1:80".parse::<SocketAddrSpec>().is_err());
    }

    #[test]
    fn sockets_keep_file_order() {
        let c = parse(&format!(
            "{MIN}[sockets]\nzeta = \"127.0.0.1:1\"\nalpha = \"127.0.0.1:2\"\nmid = \"127.0.0.1:3\"\n"
        ))
        .unwrap();
        let names: Vec<&str> = c.sockets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
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

    #[test]
    fn error_is_std_error() {
        let e: Box<dyn std::error::Error + Send + Sync> = Box::new(err("instances = 1\n"));
        let a = anyhow::Error::from(err("instances = 1\n"));
        assert_eq!(e.to_string(), a.to_string());
    }

    /// Issue 13, item 3: a duration `check` accepts must never panic the supervisor.
    #[test]
    fn every_duration_key_is_at_most_a_day() {
        let keys = [
            ("readiness", "timeout", ""),
            ("readiness", "stable", ""),
            ("readiness", "interval", "kind = \"tcp\"\n"),
            ("readiness", "probe_timeout", "kind = \"tcp\"\n"),
            ("drain", "timeout", ""),
            ("restart", "backoff_initial", "backoff_max = \"1d\"\n"),
            ("restart", "backoff_max", ""),
        ];
        for (table, key, extra) in keys {
            for v in ["9223372036854775807s", "18446744073709551615s", "25h", "2d"] {
                let text = format!("{MIN}[{table}]\n{extra}{key} = \"{v}\"\n");
                let line = 3 + extra.lines().count();
                let e = assert_err(&text, line, &format!("{table}.{key}"));
                assert!(e.message.contains("at most one day"), "{e}");
            }
            let ok = format!("{MIN}[{table}]\n{extra}{key} = \"1d\"\n");
            parse(&ok).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Issue 13, item 5: the derived notify path is validated.
    #[test]
    fn derived_notify_path_is_validated() {
        assert_err(&format!("{MIN}control = \"/run/x.notify\"\n"), 2, "control");
        let e = assert_err(
            &format!("{MIN}control = \"/run/x.sock\"\n[sockets]\na = \"unix:/run/x.notify\"\n"),
            2,
            "control",
        );
        assert!(e.message.contains("sockets.a"), "{e}");
        assert_err(
            &format!("{MIN}control = \"/run/x.sock\"\n[sockets]\na = \"/run/x.sock\"\n"),
            2,
            "control",
        );
        let long = format!("/{}", "x".repeat(104));
        assert!(long.len() <= MAX_UNIX_PATH);
        assert_err(&format!("{MIN}control = \"{long}\"\n"), 2, "control");
    }

    /// Issue 13: invalid UTF-8 and over-deep dotted keys are located.
    #[test]
    fn invalid_utf8_and_deep_keys_are_located() {
        let e = Config::parse_bytes(b"command = [\"/bin/\xffapp\"]\n", "t.toml").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let deep = format!("{MIN}[{}]\nx = 1\n", vec!["a"; 300].join("."));
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let deep = format!("{MIN}{} = 1\n", vec!["a"; 300].join("."));
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
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
