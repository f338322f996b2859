//! Where baton's own events go: the journal (with structured `BATON_*` fields) when it runs
//! under systemd, readable lines on stderr otherwise.
//!
//! Events carry fields named `baton_generation`, `baton_worker_pid`, `baton_instance` and
//! `baton_event`; journald stores them upper-cased (`BATON_GENERATION=7`), so
//! `journalctl -u api BATON_GENERATION=7` selects one generation.

use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether stderr is connected to the journal (systemd sets JOURNAL_STREAM=dev:inode).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

fn level() -> Level {
    match std::env::var("BATON_LOG").as_deref() {
        Ok("debug") => Level::DEBUG,
        Ok("trace") => Level::TRACE,
        Ok("warn") => Level::WARN,
        Ok("error") => Level::ERROR,
        _ => Level::INFO,
    }
}

/// Install the global subscriber. Level from BATON_LOG (error|warn|info|debug|trace).
/// Returns true when baton logs to the journal (and should send workers' output there too).
pub fn init() -> bool {
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level());
    if stderr_is_journal() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier("baton".into());
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
            return true;
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .compact();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    false
}
