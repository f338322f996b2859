//! `loadgen`: a small HTTP/1.1 load client that counts *every* failed request.
//!
//! Used by the test suite (spawned as a process, its `--json` line read back)
//! and by benchmarks to show that a reload under `baton` loses no request.
//!
//! A thin command line over the library's load client, `baton::load`, whose module
//! documentation describes the engine: the two modes (`--mode keepalive|close`),
//! what counts as ok and the failure kinds (`refused`, `connect_timeout`,
//! `connect_other`, `reset`, `eof`, `timeout`, `bad_status`, `malformed`), what
//! `--retry-reused` sends again (counted in `retried`), `status_codes`, `pids`
//! (by `X-Worker-Pid`), and the absolute schedule of `--rate`. `--json` prints
//! its report as one JSON line; `--log` writes one CSV line per request from the
//! report's records (times in µs since the start).
//!
//! Stops on `--duration`, SIGTERM/SIGINT, or stdin EOF with `--stdin-stop`.
//! In-flight requests then finish (bounded by `--timeout`) and are counted.
//! `loadgen: started` is printed once on stderr when every worker has made
//! its first connection attempt.

use baton::load::{self, Handle, Report, Spec, Target};
use clap::{CommandFactory, Parser, ValueEnum};
use nix::sys::signal::{SigSet, Signal};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::ToSocketAddrs;
use std::thread;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "HTTP/1.1 load generator that counts every failed request")]
struct Args {
    /// TCP address of the server, host:port.
    #[arg(long, required_unless_present = "unix")]
    addr: Option<String>,
    /// Unix stream socket to connect to instead of TCP.
    #[arg(long)]
    unix: Option<String>,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    #[arg(long, value_enum, default_value_t = Mode::Keepalive)]
    mode: Mode,
    /// Number of worker threads (= concurrent connections).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Total requests per second across all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop after this long (e.g. 10s, 500ms, 2m); default: run until signalled.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Also stop when stdin reaches EOF.
    #[arg(long)]
    stdin_stop: bool,
    /// Connect timeout, and time allowed for a complete response after sending.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    timeout: Duration,
    /// Print one JSON line instead of a human-readable summary.
    #[arg(long)]
    json: bool,
    /// Write one CSV line per request: t_start_us,t_end_us,kind,status,latency_us,pid.
    #[arg(long)]
    log: Option<String>,
    /// Send a request once more, on a new connection, when the reused connection it went
    /// out on ends before any byte of its answer (RFC 9112 §9.3.1, as curl, browsers and
    /// Go's http.Transport do); counted in `retried`.
    #[arg(long)]
    retry_reused: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Mode {
    Keepalive,
    Close,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid duration `{s}`"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in `{s}` (use us, ms, s, m, h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration `{s}`: {e}"))
}

fn print_human(r: &Report) {
    let l = &r.latency_us;
    println!(
        "loadgen: {} requests in {:.2}s ({:.1} req/s): {} ok, {} failed\n\
         latency us: p50 {} p90 {} p99 {} max {} mean {:.0}",
        r.total, r.duration_s, r.rps, r.ok, r.failed, l.p50, l.p90, l.p99, l.max, l.mean
    );
    for (kind, n) in r.failures.iter().filter(|(_, n)| *n > 0) {
        println!("  {:<16} {n}", kind.name());
    }
    if !r.status_codes.is_empty() {
        println!("status codes: {:?}", r.status_codes);
    }
    if !r.pids.is_empty() {
        println!("answered by pid: {:?}", r.pids);
    }
    for e in &r.errors {
        println!("  {e}");
    }
    if r.retried > 0 {
        println!("retried on a new connection: {}", r.retried);
        for e in &r.retries {
            println!("  {e}");
        }
    }
}

/// Writes one CSV line per request: t_start_us,t_end_us,kind,status,latency_us,pid.
fn write_log(w: &mut impl Write, r: &Report) -> io::Result<()> {
    for rec in &r.records {
        let t_start = (rec.start - r.started).as_micros();
        let t_end = (rec.end - r.started).as_micros();
        let latency = (rec.end - rec.start).as_micros();
        let (kind, status) = (rec.outcome.name(), rec.status.unwrap_or(0));
        let pid = rec.pid.as_deref().unwrap_or_default().replace(',', ";");
        writeln!(w, "{t_start},{t_end},{kind},{status},{latency},{pid}")?;
    }
    w.flush()
}

fn usage_error(msg: String) -> ! {
    Args::command()
        .error(clap::error::ErrorKind::ValueValidation, msg)
        .exit()
}

/// Blocks SIGTERM/SIGINT in all threads (call before spawning any); the returned function
/// turns them, and stdin EOF if asked, into a stop of the run.
fn stop_sources(stdin_stop: bool) -> impl FnOnce(Handle) {
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGINT);
    if let Err(e) = sigs.thread_block() {
        eprintln!("loadgen: cannot block signals: {e}");
    }
    move |handle: Handle| {
        let on_signal = handle.clone();
        thread::spawn(move || {
            if sigs.wait().is_ok() {
                on_signal.stop();
            }
        });
        if stdin_stop {
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(io::stdin().read(&mut buf), Ok(n) if n > 0) {}
                handle.stop();
            });
        }
    }
}

fn main() {
    let args = Args::parse();
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        usage_error(format!("--rate must be >= 0, got {}", args.rate));
    }
    let (target, host) = match (&args.unix, &args.addr) {
        (Some(path), _) => (Target::Unix(path.into()), "localhost"),
        (None, Some(addr)) => match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(sa)) => (Target::Tcp(sa), addr.as_str()),
            _ => usage_error(format!("cannot resolve --addr {addr}")),
        },
        (None, None) => usage_error("one of --addr or --unix is required".into()),
    };
    let mut log_file = match args.log.as_deref().map(File::create) {
        Some(Ok(f)) => Some(BufWriter::new(f)),
        Some(Err(e)) => usage_error(format!("cannot create --log file: {e}")),
        None => None,
    };
    let stop_on = stop_sources(args.stdin_stop);

    let spec = Spec {
        host: Some(host.to_string()),
        path: args.path,
        mode: match args.mode {
            Mode::Keepalive => load::Mode::Keepalive,
            Mode::Close => load::Mode::Close,
        },
        concurrency: args.concurrency,
        rate: args.rate,
        duration: args.duration,
        timeout: args.timeout,
        retry_reused: args.retry_reused,
        record: log_file.is_some(),
        ..Spec::new(target)
    };
    let running = match load::start(spec) {
        Ok(running) => running,
        Err(e) => {
            eprintln!("loadgen: cannot spawn worker thread: {e}");
            std::process::exit(1);
        }
    };
    let handle = running.handle();
    stop_on(handle.clone());
    thread::spawn(move || {
        if handle.wait_started(None) {
            eprintln!("loadgen: started");
        }
        // each worker pid (`X-Worker-Pid`) at its first answer: a test waits for one
        let mut seen = 0;
        loop {
            let new = handle.pids_after(seen, None);
            if new.is_empty() {
                break;
            }
            for pid in &new {
                eprintln!("loadgen: answered by pid {pid}");
            }
            seen += new.len();
        }
    });

    // Until --duration is over or a stop source fires; in-flight requests then finish
    // (bounded by --timeout) and are counted.
    let r = running.wait();
    if let Some(w) = log_file.as_mut() {
        if let Err(e) = write_log(w, &r) {
            eprintln!("loadgen: writing --log failed: {e}");
        }
    }
    if args.json {
        match serde_json::to_string(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("loadgen: cannot serialize report: {e}"),
        }
    } else {
        print_human(&r);
    }
}
