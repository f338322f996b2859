//! baton — zero-downtime reloads for socket-activated services.
//!
//! This file is the command line only: it parses arguments, finds the config and the control
//! socket, and hands over to the supervisor (`run`) or the control client (`reload`, `status`).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use baton::config::Config;
use baton::{
    check, client, config, control, history, logging, manual, sockets, supervisor, sys, units,
    worker,
};

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Zero-downtime reloads for socket-activated services",
    long_about = "baton takes the listening sockets from systemd (or binds them itself), hands them to a \
generation of worker processes with the socket-activation convention, and on reload starts the next \
generation on the same sockets, waits until it is ready, then drains the old one."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Target {
    /// Config file (TOML)
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Control socket (default: the config's `control`, else <runtime dir>/<config name>/control.sock;
    /// for reload, rollback, history and status without --config, the one
    /// <runtime dir>/*/control.sock)
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Supervise the configured app (the service's ExecStart)
    Run {
        #[command(flatten)]
        target: Target,
        /// Run the embedded demo config: two instances of the example worker found next to
        /// baton (examples/hello in a cargo build, ../lib/baton/hello-worker when installed)
        #[arg(long, conflicts_with = "config")]
        demo: bool,
        /// The demo's address: "IP:port", "[IPv6]:port" or "unix:/path" [default: 127.0.0.1:8080]
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// handover = "bind": an app's bind() of ADDR gets the socket NAME of [sockets]
        /// (`baton verify` runs an app that binds its production port on a private one)
        #[arg(long = "bind-as", value_name = "NAME=ADDR", hide = true, value_parser = named_address)]
        bind_as: Vec<(String, config::SocketAddrSpec)>,
    },
    /// Start a new generation and wait for the outcome (exit 0: serving; 1: rolled back)
    Reload {
        #[command(flatten)]
        target: Target,
        /// Give up waiting after this long (e.g. "2m"); default: wait until the rollout ends
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// Print baton's reply as JSON (timings in microseconds)
        #[arg(long)]
        json: bool,
    },
    /// Start a new generation from the release and config of an earlier one, as recorded in
    /// the history (by default the last good generation before the serving one), and wait for
    /// the outcome like reload (exit 0: serving; 1: not started, or rolled back)
    Rollback {
        #[command(flatten)]
        target: Target,
        /// The generation to start again (`baton history` lists them)
        #[arg(long, value_name = "GENERATION")]
        to: Option<u64>,
        /// Give up waiting after this long (e.g. "2m"); default: wait until the rollout ends
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// Print baton's reply as JSON (timings in microseconds)
        #[arg(long)]
        json: bool,
    },
    /// Show the last generations that served or failed: release, config digest, times,
    /// outcome and reason (from the history file of --config FILE when no baton answers);
    /// --releases lists only the releases a rollback may start again, for a deploy script
    History {
        #[command(flatten)]
        target: Target,
        /// Machine-readable output (with each generation's config text)
        #[arg(long)]
        json: bool,
        /// Print only the releases of the generations that served (those `baton rollback`
        /// may start again) whose directories are still there, one path per line, newest
        /// first, each once, as they are (no JSON escaping): what a deploy script must not
        /// prune
        #[arg(long, conflicts_with = "json")]
        releases: bool,
    },
    /// Show generations, workers, pids, state, restarts and uptime
    Status {
        #[command(flatten)]
        target: Target,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Print (or write) a socket + service unit pair for an app supervised by baton
    Units {
        /// Service name: NAME.socket and NAME.service
        name: String,
        /// Address systemd listens on (ListenStream=); repeatable
        #[arg(long, required = true, value_name = "ADDR")]
        listen: Vec<String>,
        /// The app's baton config
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Path of the baton binary in the units
        #[arg(long, value_name = "PATH", default_value = "/usr/bin/baton")]
        baton: PathBuf,
        /// Write NAME.socket and NAME.service into this directory instead of printing them
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Validate a config file: errors (exit 1) name the file, line and key; warnings (exit 0)
    /// say what would fail at run time, e.g. a command that is not found
    Check {
        /// The config file to check
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Also fail on what would fail at run time (command not found or not executable, cwd
        /// missing): for a check run as the service's own user, like the units' ExecStartPre
        #[arg(long)]
        strict: bool,
    },
    /// Run the app of a config under baton on private loopback sockets, reload it under load
    /// and stop it, then say what it gets wrong for zero-downtime deploys: one row per check
    /// (exit 0: no check failed; 1: one did; 2: it could not run)
    Verify {
        /// The app's baton config (its [sockets] are replaced by private ones)
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// How many reloads (1 to 50)
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
        reloads: u32,
        /// The path the load asks for
        #[arg(long, default_value = "/", value_name = "PATH", value_parser = http_path)]
        path: String,
        /// A path whose answer takes a while (a second or so): requests to it are in flight
        /// at every stop signal
        #[arg(long, value_name = "PATH", value_parser = http_path)]
        slow_path: Option<String>,
        /// The sockets, for a config without [sockets] (a socket unit holds them): what the
        /// unit listens on, as NAME=ADDRESS; repeatable
        #[arg(long, value_name = "NAME=ADDRESS", value_parser = named_address)]
        socket: Vec<(String, config::SocketAddrSpec)>,
        /// Keep the private directory (the app's output, baton's events, the config used)
        #[arg(long)]
        keep: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Write the man pages (`man`: baton.1, baton-SUBCOMMAND.1, baton.toml.5) or shell
    /// completions (`completions SHELL...`) into a directory; used by packaging/build.sh
    #[command(hide = true)]
    Generate {
        #[arg(value_parser = ["man", "completions"])]
        what: String,
        /// Shells for `completions`
        #[arg(required_if_eq("what", "completions"))]
        shells: Vec<clap_complete::Shell>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `NAME=ADDRESS`, the address as `[sockets]` writes it.
/// `--path`, `--slow-path`: what a request line carries as it is.
fn http_path(s: &str) -> Result<String, String> {
    match config::is_http_path(s) {
        true => Ok(s.to_string()),
        false => Err("a path starts with '/' and holds no whitespace (e.g. /slow?ms=1000)".into()),
    }
}

fn named_address(s: &str) -> Result<(String, config::SocketAddrSpec), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| "expected NAME=ADDRESS".to_string())?;
    Ok((name.to_string(), addr.parse()?))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            target,
            demo,
            listen,
            bind_as,
        } => {
            if listen.is_some() && !demo {
                eprintln!(
                    "baton: --listen is only for --demo (a config's address is in [sockets])"
                );
                return ExitCode::from(2);
            }
            run(
                target,
                demo.then(|| listen.unwrap_or_else(|| DEMO_LISTEN.into())),
                bind_as,
            )
        }
        Command::Reload {
            target,
            timeout,
            json,
        } => rollout(target, control::Request::Reload, timeout, json),
        Command::Rollback {
            target,
            to,
            timeout,
            json,
        } => rollout(target, control::Request::Rollback { to }, timeout, json),
        Command::History {
            target,
            json,
            releases,
        } => show_history(target, json, releases),
        Command::Status { target, json } => status(target, json),
        Command::Verify {
            config,
            reloads,
            path,
            slow_path,
            socket,
            keep,
            json,
        } => {
            let opts = baton::verify::Options {
                config: config.clone(),
                reloads,
                path,
                slow_path,
                sockets: socket,
                keep,
            };
            match baton::verify::run(&opts) {
                Err(e) => {
                    eprintln!("baton: verify: {e}");
                    ExitCode::from(2)
                }
                Ok(outcome) => match baton::verify::print(&outcome, &config, json) {
                    true => ExitCode::FAILURE,
                    false => ExitCode::SUCCESS,
                },
            }
        }
        Command::Units {
            name,
            listen,
            config,
            baton,
            output_dir,
        } => {
            if let Err(e) = units::validate(&name, &listen, &config, &baton) {
                eprintln!("baton units: {e}");
                return ExitCode::from(2);
            }
            let (socket, service) = units::render(&name, &listen, &config, &baton);
            match output_dir {
                None => {
                    println!("# ---- {name}.socket\n{socket}\n# ---- {name}.service\n{service}");
                    ExitCode::SUCCESS
                }
                Some(dir) => {
                    let write = |file: String, text: &str| {
                        std::fs::write(dir.join(&file), text)
                            .map_err(|e| format!("baton: writing {file}: {e}"))
                    };
                    match write(format!("{name}.socket"), &socket)
                        .and_then(|_| write(format!("{name}.service"), &service))
                    {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("{e}");
                            ExitCode::FAILURE
                        }
                    }
                }
            }
        }
        Command::Check { config, strict } => check(&config, strict),
        Command::Generate { what, shells, out } => generate(&what, &shells, &out),
    }
}

/// `baton check`: the config's errors, else its findings (`warning: …` lines, or errors with
/// `--strict` for those that would fail at run time) and a summary line.
fn check(path: &Path, strict: bool) -> ExitCode {
    let c = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("baton: {e}");
            return ExitCode::FAILURE;
        }
    };
    if c.control.is_none() {
        let default = default_control(Some(path));
        if let Err(e) = config::check_control_path(&default, &c.sockets) {
            eprintln!(
                "baton: {}: key `control` (not set: the default {}): {e}",
                path.display(),
                default.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let (notes, findings): (Vec<_>, Vec<_>) = check::findings(&c)
        .into_iter()
        .partition(|f| f.level == check::Level::Note);
    let errors = findings.iter().filter(|f| f.is_error(strict)).count();
    for f in &findings {
        let prefix = if f.is_error(strict) {
            "baton"
        } else {
            "warning"
        };
        eprintln!(
            "{prefix}: {}: key `{}`: {}",
            path.display(),
            f.key,
            f.message
        );
    }
    if errors > 0 {
        eprintln!(
            "baton: {}: {errors} error(s) (--strict: what would fail at run time)",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    // notes (what the config leaves to systemd) go with the ok line, not with the warnings
    for f in &notes {
        println!("note: {}: key `{}`: {}", path.display(), f.key, f.message);
    }
    let warnings = findings.len();
    println!(
        "{}: ok ({} x {:?}, readiness {}, {} socket(s)){}",
        path.display(),
        c.instances,
        c.command,
        c.readiness.kind.name(),
        c.sockets.len(),
        match warnings {
            0 => String::new(),
            1 => ", 1 warning".to_string(),
            n => format!(", {n} warnings"),
        }
    );
    ExitCode::SUCCESS
}

/// `baton generate`: man pages (baton.1, one page per visible subcommand, baton.toml.5) or completion
/// scripts (baton.bash, _baton, baton.fish), generated from the clap definition above.
fn generate(what: &str, shells: &[clap_complete::Shell], out: &Path) -> ExitCode {
    let cmd = <Cli as clap::CommandFactory>::command();
    // clap_complete would offer hidden subcommands (this one) too: complete a copy without them.
    let visible = clap::Command::new("baton")
        .version(env!("CARGO_PKG_VERSION"))
        .about(cmd.get_about().cloned().unwrap_or_default())
        .subcommand_required(true)
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let result = std::fs::create_dir_all(out).and_then(|()| match what {
        "man" => manual::write_man_pages(cmd, out),
        _ => shells.iter().try_for_each(|&shell| {
            clap_complete::generate_to(shell, &mut visible.clone(), "baton", out).map(drop)
        }),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: generate {what} into {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

/// The directory of baton's control sockets: `/run/baton` for root, `$XDG_RUNTIME_DIR/baton`
/// (or `/tmp/baton-<uid>`) for others.
fn runtime_dir() -> PathBuf {
    if sys::euid() == 0 {
        PathBuf::from("/run/baton")
    } else if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        PathBuf::from(x).join("baton")
    } else {
        PathBuf::from(format!("/tmp/baton-{}", sys::euid()))
    }
}

/// Where the control socket lives when neither `--control` nor `control =` says:
/// `<runtime dir>/<config stem>/control.sock` (the demo uses the stem "demo"). The template
/// unit `baton@NAME.service` has `RuntimeDirectory=baton/NAME` and reads
/// `/etc/baton/NAME.toml`, so `baton status --config /etc/baton/NAME.toml` finds its socket.
fn default_control(config: Option<&Path>) -> PathBuf {
    runtime_dir().join(config_name(config)).join("control.sock")
}

/// The name a config gives its baton's default paths: the file's stem ("demo" for the demo).
fn config_name(config: Option<&Path>) -> String {
    config
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "demo".into())
}

/// The directories of the default control path `<runtime dir>/<config name>/control.sock`
/// that must be private: the runtime dir and the config's directory in it.
fn default_dirs(control: &Path) -> Vec<PathBuf> {
    let parent = control.parent().map(Path::to_path_buf);
    parent
        .iter()
        .flat_map(|p| [p.parent().map(Path::to_path_buf), Some(p.clone())])
        .flatten()
        .collect()
}

/// A directory of a default control path must be baton's own (owned by its uid, no write
/// access for group or others), as tmux and ssh-agent require of theirs: another user who can
/// write there could replace the control socket with their own and answer `baton reload`.
/// `create`: make it (mode 0700, 0755 for root) when it does not exist.
fn private_dir(dir: &Path, create: bool) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = sys::euid();
    if create {
        let mode = if uid == 0 { 0o755 } else { 0o700 };
        match std::fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let unsafe_because = if !meta.file_type().is_dir() {
        Some("is not a directory (a symbolic link, or a file)".to_string())
    } else if meta.uid() != uid {
        Some(format!(
            "is owned by uid {}, not by uid {uid} (baton's own)",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "is writable by group or others (mode {:04o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match unsafe_because {
        None => Ok(()),
        Some(why) => Err(format!(
            "refusing the control socket directory {}: it {why}, so another user could replace \
             the control socket; remove it (or `chmod go-w` it if it is yours), set \
             XDG_RUNTIME_DIR, or pass --control PATH",
            dir.display()
        )),
    }
}

/// `--config FILE` does not parse: the baton that runs it can still be asked when FILE sets no
/// `control` of its own, at the default path its name gives. Then a reload gets baton's own
/// verdict on the file (which baton logs and counts, and `systemctl status` shows), and status
/// still shows what serves; with no baton there, the error is FILE's.
fn unparsed_config_control(
    target: &Target,
    e: &config::ConfigError,
) -> Result<PathBuf, ClientError> {
    use std::os::unix::fs::FileTypeExt;
    let is_socket =
        |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket());
    // the file's own `control = "…"` line, read as text (a second trial: with an explicit
    // control path, a config with a syntax error left rollback, status and history out of
    // reach); the client checks the server's uid as for any path
    let written = target
        .config
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| control_line(&text));
    if let Some(path) = written.filter(|p| is_socket(p)) {
        eprintln!(
            "baton: warning: {e}; asking the baton at {} (its `control` line)",
            path.display()
        );
        return Ok(path);
    }
    let path = default_control(target.config.as_deref());
    let private = default_dirs(&path)
        .iter()
        .all(|d| private_dir(d, false).is_ok());
    if !(is_socket(&path) && private) {
        return Err(ClientError::other(format!(
            "baton: {e} (pass --control PATH to ask its baton anyway)"
        )));
    }
    eprintln!(
        "baton: warning: {e}; asking the baton at {}",
        path.display()
    );
    Ok(path)
}

/// The path of a top-level `control = "…"` line of a config's text (before any `[table]`),
/// for a file that does not parse as a whole.
fn control_line(text: &str) -> Option<PathBuf> {
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            return None;
        }
        let Some(rest) = line.strip_prefix("control") else {
            continue;
        };
        let value = rest.trim_start().strip_prefix('=')?.trim();
        let value = value.strip_prefix('"')?;
        let end = value.find('"')?;
        let path = &value[..end];
        if path.starts_with('/') && !path.contains('\\') {
            return Some(PathBuf::from(path));
        }
        return None;
    }
    None
}

fn control_path(target: &Target, config: Option<&Config>) -> PathBuf {
    if let Some(c) = &target.control {
        return c.clone();
    }
    if let Some(c) = config.and_then(|c| c.control.clone()) {
        return c;
    }
    default_control(target.config.as_deref())
}

/// `baton status` / `baton reload` with neither `--config` nor `--control`: the one control
/// socket `<runtime dir>/*/control.sock`; none or several is an error that says what to pass.
/// The error says whether no baton was found at all (`baton status` exits 3 then).
fn discover_control() -> Result<PathBuf, ClientError> {
    use std::os::unix::fs::FileTypeExt;
    let dir = runtime_dir();
    private_dir(&dir, false).map_err(|e| ClientError::other(format!("baton: {e}")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("control.sock"))
                .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    let pattern = dir.join("*").join("control.sock");
    match found.len() {
        1 => {
            let path = found.remove(0);
            for d in default_dirs(&path) {
                private_dir(&d, false).map_err(|e| ClientError::other(format!("baton: {e}")))?;
            }
            Ok(path)
        }
        0 => Err(ClientError::not_running(format!(
            "baton: no control socket found: nothing matches {} (no `baton run` of this user \
             uses a default control path); pass --config FILE (the config `baton run` was started \
             with) or --control PATH",
            pattern.display()
        ))),
        _ => Err(ClientError::other(format!(
            "baton: {} control sockets match {}; say which with --config FILE or --control PATH:\n{}",
            found.len(),
            pattern.display(),
            found
                .iter()
                .map(|p| format!("  {}", p.display()))
                .collect::<Vec<_>>()
                .join("\n")
        ))),
    }
}

/// Why a client command found no control socket to talk to.
struct ClientError {
    /// No baton runs (as far as the default paths tell): `baton status` exits 3.
    not_running: bool,
    message: String,
}

impl ClientError {
    fn not_running(message: String) -> ClientError {
        ClientError {
            not_running: true,
            message,
        }
    }
    fn other(message: String) -> ClientError {
        ClientError {
            not_running: false,
            message,
        }
    }
}

/// The demo's address without `--listen`.
const DEMO_LISTEN: &str = "127.0.0.1:8080";

/// Where the example worker is, relative to the directory of the baton binary: a cargo build
/// (target/release/baton, target/release/examples/hello), then the packages' layout
/// (/usr/bin/baton, /usr/lib/baton/hello-worker).
const DEMO_WORKERS: [&str; 2] = ["examples/hello", "../lib/baton/hello-worker"];

/// The example worker for `baton run --demo`, found next to the running baton binary.
fn demo_worker() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot tell where baton is: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates: Vec<PathBuf> = DEMO_WORKERS.iter().map(|c| dir.join(c)).collect();
    candidates
        .iter()
        .find(|p| worker::resolve_program(&p.to_string_lossy(), None).is_ok())
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .ok_or_else(|| {
            format!(
                "the example worker is not next to {} (looked for {}); build it with \
                 `cargo build --release --bins --examples`, or run an installed package's baton",
                exe.display(),
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        })
}

/// `demo`: the demo's listen address (`--demo`), or `None` to run `--config`.
fn run(
    target: Target,
    demo: Option<String>,
    bind_as: Vec<(String, config::SocketAddrSpec)>,
) -> ExitCode {
    // Signals are blocked before anything else, so that every thread inherits the mask.
    let signals = match sys::SignalFd::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("baton: cannot set up signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    let journal = logging::init();
    let (config, config_text) = match (&target.config, demo) {
        (Some(path), _) => match Config::load_text(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(baton_event = "config_error", "{e}");
                return ExitCode::FAILURE;
            }
        },
        (None, Some(listen)) => {
            let listen: config::SocketAddrSpec = match listen.parse() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("baton: --listen: {e}");
                    return ExitCode::from(2);
                }
            };
            let worker = match demo_worker() {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("baton: --demo: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(
                "running the embedded demo config (`baton reload` in another terminal starts the \
                 next generation; Ctrl-C stops baton and its workers):\n{}",
                Config::demo_toml(&worker, &listen)
            );
            (
                Config::demo(&worker, &listen),
                Config::demo_toml(&worker, &listen),
            )
        }
        (None, None) => {
            eprintln!("baton: `run` needs --config FILE (or --demo for the embedded demo)");
            return ExitCode::from(2);
        }
    };
    // Before any thread exists: take LISTEN_FDS and clean the environment.
    let listeners = match sockets::Listeners::acquire(&config.sockets) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(baton_event = "socket_error", "{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let control_path = control_path(&target, Some(&config));
    let named_by = if target.control.is_some() {
        "--control"
    } else if config.control.is_some() {
        "key `control`"
    } else {
        for d in default_dirs(&control_path) {
            if let Err(e) = private_dir(&d, true) {
                tracing::error!(baton_event = "startup_error", "{e}");
                return ExitCode::FAILURE;
            }
        }
        "the default control path"
    };
    if let Err(e) = config::check_control_path(&control_path, &config.sockets) {
        tracing::error!(baton_event = "startup_error", "{named_by}: {e}");
        return ExitCode::FAILURE;
    }
    if let Some((name, _)) = bind_as
        .iter()
        .find(|(n, _)| !listeners.list.iter().any(|l| l.name == *n))
    {
        tracing::error!(
            baton_event = "startup_error",
            "--bind-as {name}=…: baton has no socket named `{name}`"
        );
        return ExitCode::FAILURE;
    }
    let setup = supervisor::Setup {
        // absolute, so that `baton status` names the file wherever it is asked from (and
        // `reload --config` can tell two files of one name apart)
        config_path: target.config.as_deref().map(absolute),
        config,
        config_text,
        state_dir: history::state_dir(&config_name(target.config.as_deref()), sys::euid() == 0),
        listeners,
        control_path,
        signals,
        capture_output: journal,
        bind_as,
    };
    let sup = match supervisor::Supervisor::new(setup) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(baton_event = "startup_error", "{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = sup.run();
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `path` made absolute against the current directory (not resolved: a reload reads the path
/// again, so a symlink flipped to another file is followed, as before).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The control socket for a client command: --control, else the config's `control`, else the
/// default derived from the config file name; with neither option, the one socket
/// [`discover_control`] finds.
fn client_control(target: &Target) -> Result<PathBuf, ClientError> {
    let cfg = match &target.config {
        Some(p) if target.control.is_none() => match Config::load(p) {
            Ok(c) => Some(c),
            Err(e) => return unparsed_config_control(target, &e),
        },
        None if target.control.is_none() => return discover_control(),
        _ => None,
    };
    let path = control_path(target, cfg.as_ref());
    if target.control.is_none() && cfg.as_ref().is_some_and(|c| c.control.is_none()) {
        for d in default_dirs(&path) {
            private_dir(&d, false).map_err(|e| ClientError::other(format!("baton: {e}")))?;
        }
    }
    Ok(path)
}

/// A server's error for a request it does not know: it is older than this client.
fn older_baton(e: &anyhow::Error, path: &Path, req: &control::Request) -> Option<String> {
    let text = format!("{e:#}");
    (text.contains("bad request") && text.contains("unknown variant")).then(|| {
        format!(
            "baton: {}: the baton at {} does not know this request: it is older than this \
             client ({}); restart it (under systemd: `systemctl restart`) to run the new one",
            req.name(),
            path.display(),
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// A reply line as it came (`--json`), or rendered as text by `render`.
fn print_reply(line: &str, json: bool, render: fn(&str) -> Result<String, String>) -> ExitCode {
    if json {
        print!("{line}");
        return ExitCode::SUCCESS;
    }
    match render(line) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("baton: unexpected reply: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `baton history` (`--releases`: only the releases a rollback may start again).
fn show_history(target: Target, json: bool, releases: bool) -> ExitCode {
    let path = match client_control(&target) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", e.message);
            return ExitCode::FAILURE;
        }
    };
    let req = control::Request::History;
    let line = match control::request(&path, &req, Some(Duration::from_secs(10)), |_| {}) {
        Ok(l) => l,
        Err(e) => {
            if let Some(m) = older_baton(&e, &path, &req) {
                eprintln!("{m}");
                return ExitCode::FAILURE;
            }
            match history_from_file(&target) {
                // no baton answers: what its file says (a new user's trial: the history was
                // out of reach just when baton was down)
                Some(Ok((file, line))) => {
                    eprintln!(
                        "baton: history: no baton answers at {} ({e:#}); this is the history \
                         file {file}",
                        path.display()
                    );
                    line
                }
                Some(Err(why)) => {
                    eprintln!("baton: history: {e:#}; and its file: {why}");
                    return ExitCode::FAILURE;
                }
                None => {
                    eprintln!("baton: history: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let render = match releases {
        true => releases_there,
        false => client::history_text,
    };
    print_reply(&line, json, render)
}

/// `baton history --releases`: the releases a rollback may start again, those whose directory
/// is still there (from a running baton's reply or from the file alike).
fn releases_there(line: &str) -> Result<String, String> {
    client::history_releases(line, &release_there)
}

/// Whether a recorded release is still a directory. Only a path that is gone (or not a
/// directory) is left out: one that cannot be looked at (a directory this user may not
/// search) is kept, so that a deploy script never prunes what it could not see.
fn release_there(path: &str) -> bool {
    match std::fs::metadata(path) {
        Ok(m) => m.is_dir(),
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
        ),
    }
}

/// The history of `--config FILE`'s baton read from its file, as a reply line, when no baton
/// answers: (the file, the line), why the file cannot be read, or `None` without `--config`.
fn history_from_file(target: &Target) -> Option<Result<(String, String), String>> {
    let config = target.config.as_deref()?;
    let dir = history::state_dir(&config_name(Some(config)), sys::euid() == 0)?;
    let file = dir.join(history::FILE);
    let shown = file.display().to_string();
    // not `exists()`: a symbolic link there, dangling or not, is for `load` to refuse
    if std::fs::symlink_metadata(&file).is_err() {
        return Some(Err(format!("{shown} does not exist")));
    }
    let records = match history::load_to_show(&file) {
        Ok(loaded) => {
            for why in &loaded.dropped {
                eprintln!("baton: history: {shown}: {why}");
            }
            loaded.records
        }
        Err(why) => return Some(Err(format!("{shown}: {why}"))),
    };
    let reply = control::HistoryReply {
        // no run is this one: each generation names its own
        run: 0,
        file: Some(shown.clone()),
        keep: records.len() as u32,
        generations: records,
        unwritten: None,
    };
    let line = serde_json::to_string(&reply).map_err(|e| e.to_string());
    Some(line.map(|l| (shown, format!("{l}\n"))))
}

/// `baton reload` and `baton rollback`: one request, progress lines, one reply.
fn rollout(target: Target, req: control::Request, timeout: Option<String>, json: bool) -> ExitCode {
    let what = req.name();
    let path = match client_control(&target) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", e.message);
            return ExitCode::FAILURE;
        }
    };
    let timeout = match timeout.as_deref().map(config::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("baton: --timeout: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(asked) = &target.config {
        if let Err(served) = serves_config(&path, asked) {
            eprintln!(
                "baton: {what} refused: the baton at {} serves {served}, not {} (both give the \
                 same default control path); it would {what} its own file. Use that \
                 --config, or give {} a `control` path of its own",
                path.display(),
                asked.display(),
                asked.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let progress = |text: &str| eprintln!("baton: {text}");
    match control::request(&path, &req, timeout, progress) {
        Ok(line) => match client::parse_reload(&line) {
            Ok(r) if json => {
                print!("{line}");
                if r.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Ok(r) if r.ok => {
                println!("{}", client::shown(&r.message));
                ExitCode::SUCCESS
            }
            Ok(r) => {
                // a rollback's reply says "rollback: …" (for --json and the log): said once
                let prefix = format!("{what}: ");
                let message = r.message.strip_prefix(&prefix).unwrap_or(&r.message);
                eprintln!("baton: {what} failed: {}", client::shown(message));
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("baton: unexpected reply: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            match older_baton(&e, &path, &req) {
                Some(m) => eprintln!("{m}"),
                None => eprintln!("baton: {what}: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// `reload --config FILE`: whether the baton at `control` serves FILE ([`client::serves`]);
/// `Err` names the file it serves. A baton that does not answer status is left to the reload
/// request itself, which reports why.
fn serves_config(control: &Path, asked: &Path) -> Result<(), String> {
    let status = control::Request::Status;
    match control::request(control, &status, Some(Duration::from_secs(10)), |_| {}) {
        Ok(line) => client::serves(&line, asked),
        Err(_) => Ok(()),
    }
}

fn status(target: Target, json: bool) -> ExitCode {
    let path = match client_control(&target) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", e.message);
            return ExitCode::from(if e.not_running { 3 } else { 1 });
        }
    };
    let line = match control::request(
        &path,
        &control::Request::Status,
        Some(Duration::from_secs(10)),
        |_| {},
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("baton: status: {e:#}");
            // 3 is "no baton answers"; a process of another user answered
            let foreign = e.downcast_ref::<control::ForeignServer>().is_some();
            return ExitCode::from(if foreign { 1 } else { 3 });
        }
    };
    print_reply(&line, json, client::status_text)
}
