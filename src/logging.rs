//! Where baton's own events go: the journal (with structured `BATON_*` fields) when it runs
//! under systemd, readable lines on stderr otherwise.
//!
//! Events carry fields named `baton_generation`, `baton_worker_pid`, `baton_instance` and
//! `baton_event`; journald stores them upper-cased (`BATON_GENERATION=7`), so
//! `journalctl -u api BATON_GENERATION=7` selects one generation.
//!
//! With `BATON_EVENTS=FILE` in its environment (what `baton verify` sets for the `baton run`
//! it starts), every event is also appended to FILE as one JSON object per line, with its
//! fields, its level and `mono_us` (CLOCK_MONOTONIC in µs, the clock of every process of the
//! machine): a channel a tool can read without parsing text, apart from the workers' output.
//! Workers never inherit the variable.
//!
//! The journal layer is baton's own ([`JournalLayer`], journald's native protocol) rather than
//! tracing-journald's, whose socket blocks: a journald that stops reading must not stop the
//! event loop. A line journald cannot take at once is dropped and counted, and the next line
//! that goes through is preceded by one that says how many were lost.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Sends every event to journald, without blocking.
pub struct JournalLayer {
    shared: Arc<Shared>,
}

struct Shared {
    sock: UnixDatagram,
    /// Lines journald could not take since the last note about them went through.
    dropped: AtomicU64,
}

/// The journal layer in use, for [`report_dropped`].
static JOURNAL: OnceLock<Arc<Shared>> = OnceLock::new();

impl JournalLayer {
    pub fn connect() -> std::io::Result<JournalLayer> {
        let shared = Arc::new(Shared {
            sock: crate::output::journal_socket()?,
            dropped: AtomicU64::new(0),
        });
        let _ = JOURNAL.set(shared.clone());
        Ok(JournalLayer { shared })
    }
}

impl Shared {
    /// Send the note about dropped lines, if any were; false if journald still cannot take it.
    fn report(&self) -> bool {
        let lost = self.dropped.load(Ordering::Relaxed);
        if lost == 0 {
            return true;
        }
        let note = format!(
            "PRIORITY=4\nSYSLOG_IDENTIFIER=baton\nBATON_EVENT=log_lines_dropped\n\
             MESSAGE={lost} of baton's log lines were dropped: journald did not read them\n"
        );
        match self.sock.send(note.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) => eprintln!(
                "baton: {lost} of baton's log lines were dropped: journald did not read them \
                 (journal: {e})"
            ),
            Ok(_) => {}
        }
        self.dropped.fetch_sub(lost, Ordering::Relaxed);
        true
    }

    /// Send one entry. Only a full queue (journald not reading) drops it, counted; any other
    /// failure (an entry too big, journald gone) puts the line on stderr instead.
    fn send(&self, msg: &[u8]) {
        if !self.report() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.sock.send(msg) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let text = String::from_utf8_lossy(msg);
                let message = text
                    .lines()
                    .find_map(|l| l.strip_prefix("MESSAGE="))
                    .unwrap_or("(an entry without a message)");
                eprintln!("baton: {message} (journal: {e})");
            }
        }
    }
}

/// Whether log lines were dropped and not reported yet: the event loop then calls
/// [`report_dropped`] again a little later, so that the note comes even if nothing else is
/// logged.
pub fn lines_dropped() -> bool {
    JOURNAL
        .get()
        .is_some_and(|j| j.dropped.load(Ordering::Relaxed) > 0)
}

/// Send the note about dropped lines, if journald takes it now.
pub fn report_dropped() {
    if let Some(j) = JOURNAL.get() {
        j.report();
    }
}

/// The fields of one event in journald's native format (`KEY=value` lines; a value with a
/// newline in the binary form).
#[derive(Default)]
struct Fields {
    out: Vec<u8>,
}

impl Fields {
    fn push(&mut self, name: &str, value: &str) {
        let key: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        let key = if key == "MESSAGE" || key.starts_with(|c: char| c.is_ascii_alphabetic()) {
            key
        } else {
            format!("F_{key}")
        };
        self.out.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            self.out.push(b'\n');
            self.out
                .extend_from_slice(&(value.len() as u64).to_le_bytes());
            self.out.extend_from_slice(value.as_bytes());
        } else {
            self.out.push(b'=');
            self.out.extend_from_slice(value.as_bytes());
        }
        self.out.push(b'\n');
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.push(field.name(), &text);
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        let mut fields = Fields::default();
        fields.push("PRIORITY", &priority.to_string());
        fields.push("SYSLOG_IDENTIFIER", "baton");
        event.record(&mut fields);
        self.shared.send(&fields.out);
    }
}

/// Appends every event to a file as one JSON line (`BATON_EVENTS`).
struct EventsLayer {
    file: std::sync::Mutex<std::fs::File>,
}

impl EventsLayer {
    /// The file named by `BATON_EVENTS`, opened for appending (created 0600, never through a
    /// symlink at its last component), if the variable is set; a file that cannot be opened
    /// is said on stderr once and no event goes there.
    fn from_env() -> Option<EventsLayer> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::var_os("BATON_EVENTS")?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        match file {
            Ok(file) => Some(EventsLayer {
                file: std::sync::Mutex::new(file),
            }),
            Err(e) => {
                eprintln!(
                    "baton: BATON_EVENTS={}: {e}: events are not written there",
                    std::path::Path::new(&path).display()
                );
                None
            }
        }
    }
}

/// An event's fields as JSON values (numbers stay numbers).
#[derive(Default)]
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.0.insert(field.name().into(), text.into());
    }
}

impl<S: Subscriber> Layer<S> for EventsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = JsonFields::default();
        fields
            .0
            .insert("mono_us".into(), crate::sys::monotonic_us().into());
        fields.0.insert(
            "level".into(),
            event
                .metadata()
                .level()
                .as_str()
                .to_ascii_lowercase()
                .into(),
        );
        event.record(&mut fields);
        let Ok(mut line) = serde_json::to_vec(&fields.0) else {
            return;
        };
        line.push(b'\n');
        // one write(2) per line (O_APPEND): a reader never sees half of one unless the disk
        // is full, and a failed write loses that event only
        if let Ok(mut f) = self.file.lock() {
            use std::io::Write;
            let _ = f.write_all(&line);
        }
    }
}

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
    let events = EventsLayer::from_env();
    if stderr_is_journal() {
        if let Ok(layer) = JournalLayer::connect() {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .with(events)
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
        .with(events)
        .try_init();
    false
}
