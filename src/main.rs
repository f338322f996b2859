//! baton — zero-downtime reloads for socket-activated services.
//!
//! This file is the command line only: it parses arguments, finds the config and the control
//! socket, and hands over to the supervisor (`run`) or the control client (`reload`, `status`).

mod config;
mod control;
mod logging;
mod notify;
mod output;
mod readiness;
mod sockets;
mod supervisor;
mod sys;
mod units;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use config::Config;

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
    /// Control socket (default: from the config, else derived from the config file name)
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Supervise the configured app (the service's ExecStart)
    Run {
        #[command(flatten)]
        target: Target,
        /// Run the embedded demo config (example worker on 127.0.0.1:8080)
        #[arg(long, conflicts_with = "config")]
        demo: bool,
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
    /// Validate a config file and exit non-zero if it has an error
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Write the man pages (`man`) or shell completions (`completions SHELL...`) into a
    /// directory; used by packaging/build.sh
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { target, demo } => run(target, demo),
        Command::Reload {
            target,
            timeout,
            json,
        } => reload(target, timeout, json),
        Command::Status { target, json } => status(target, json),
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
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} x {:?}, readiness {}, {} socket(s))",
                    config.display(),
                    c.instances,
                    c.command,
                    c.readiness.kind.name(),
                    c.sockets.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("baton: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Generate { what, shells, out } => generate(&what, &shells, &out),
    }
}

/// `baton generate`: man pages (baton.1 and one page per visible subcommand) or completion
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
        "man" => clap_mangen::generate_to(cmd, out),
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

/// Where the control socket lives when neither `--control` nor `control =` says.
/// `/run/baton/<config stem>.sock` for root, `$XDG_RUNTIME_DIR/baton/…` (or
/// `/tmp/baton-<uid>/…`) for others; the demo uses the stem "demo".
fn default_control(config: Option<&Path>) -> PathBuf {
    let stem = config
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "demo".into());
    let dir = if sys::euid() == 0 {
        PathBuf::from("/run/baton")
    } else if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(x).join("baton")
    } else {
        PathBuf::from(format!("/tmp/baton-{}", sys::euid()))
    };
    dir.join(format!("{stem}.sock"))
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

fn run(target: Target, demo: bool) -> ExitCode {
    // Signals are blocked before anything else, so that every thread inherits the mask.
    let signals = match sys::SignalFd::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("baton: cannot set up signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    let journal = logging::init();
    let config = match (&target.config, demo) {
        (Some(path), _) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(baton_event = "config_error", "{e}");
                return ExitCode::FAILURE;
            }
        },
        (None, true) => {
            tracing::info!("running the embedded demo config:\n{}", Config::DEMO_TOML);
            Config::demo()
        }
        (None, false) => {
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
    let setup = supervisor::Setup {
        config_path: target.config.clone(),
        config,
        listeners,
        control_path,
        signals,
        capture_output: journal,
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

/// The control socket for a client command: --control, else the config's `control`, else the
/// default derived from the config file name.
fn client_control(target: &Target) -> Result<PathBuf, String> {
    let cfg = match &target.config {
        Some(p) if target.control.is_none() => {
            Some(Config::load(p).map_err(|e| format!("baton: {e}"))?)
        }
        _ => None,
    };
    Ok(control_path(target, cfg.as_ref()))
}

fn reload(target: Target, timeout: Option<String>, json: bool) -> ExitCode {
    let path = match client_control(&target) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
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
    match control::request(&path, &control::Request::Reload, timeout) {
        Ok(line) => match serde_json::from_str::<control::ReloadReply>(&line) {
            Ok(r) if json => {
                print!("{line}");
                if r.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Ok(r) if r.ok => {
                println!("{}", r.message);
                ExitCode::SUCCESS
            }
            Ok(r) => {
                eprintln!("baton: reload failed: {}", r.message);
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("baton: unexpected reply: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("baton: reload: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn status(target: Target, json: bool) -> ExitCode {
    let path = match client_control(&target) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let line = match control::request(
        &path,
        &control::Request::Status,
        Some(Duration::from_secs(10)),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("baton: status: {e:#}");
            return ExitCode::from(3);
        }
    };
    if json {
        print!("{line}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<control::Status>(&line) {
        Ok(s) => {
            print!("{}", render_status(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("baton: unexpected reply: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render_status(s: &control::Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "baton pid {} — {} — up {} — serving generation {} — reloads: {} ok, {} failed",
        s.pid,
        s.state,
        supervisor::fmt_duration(Duration::from_secs_f64(s.uptime_s)),
        s.serving_generation
            .map(|g| g.to_string())
            .unwrap_or_else(|| "-".into()),
        s.reloads_ok,
        s.reloads_failed
    );
    for sock in &s.sockets {
        let _ = writeln!(
            out,
            "socket {} fd {} {} ({})",
            sock.name, sock.fd, sock.address, sock.source
        );
    }
    if let Some(r) = &s.last_reload {
        let _ = writeln!(
            out,
            "last reload: {} in {} ms: {}",
            if r.ok { "ok" } else { "FAILED" },
            r.duration_ms,
            r.message
        );
    }
    let _ = writeln!(
        out,
        "\n{:<5} {:<9} {:<9} {:<9} {:<11} {:>8} {:>9}  STATUS",
        "GEN", "ROLE", "INSTANCE", "PID", "STATE", "RESTARTS", "UPTIME"
    );
    for g in &s.generations {
        for w in &g.workers {
            let _ = writeln!(
                out,
                "{:<5} {:<9} {:<9} {:<9} {:<11} {:>8} {:>9}  {}",
                g.generation,
                g.role,
                w.instance,
                w.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                w.state,
                w.restarts,
                w.uptime_s
                    .map(|u| supervisor::fmt_duration(Duration::from_secs(u as u64)))
                    .unwrap_or_else(|| "-".into()),
                w.status
                    .clone()
                    .or_else(|| w.last_exit.as_ref().map(|e| format!("last exit: {e}")))
                    .unwrap_or_default()
            );
        }
    }
    out
}
