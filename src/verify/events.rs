//! baton's events as `baton verify` reads them: the JSON lines the `baton run` it started
//! writes to `BATON_EVENTS` (see `logging`), here a FIFO verify reads as they come.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use super::output::Spool;

/// One event of baton's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ev {
    /// CLOCK_MONOTONIC, µs.
    pub mono_us: u64,
    pub event: String,
    pub generation: Option<u64>,
    pub worker: Option<i32>,
    pub instance: Option<u32>,
    pub drain_ms: Option<u64>,
    /// The address a `worker_bind_other` names (`127.0.0.1:9090`, `unix:/path`).
    pub address: String,
    pub level: String,
    pub message: String,
}

impl Ev {
    /// One line of the events file; `None` for a line that is not one.
    pub fn parse(line: &str) -> Option<Ev> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let text = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(Ev {
            mono_us: num("mono_us")?,
            event: text("baton_event"),
            generation: num("baton_generation"),
            worker: num("baton_worker_pid").and_then(|p| i32::try_from(p).ok()),
            instance: num("baton_instance").and_then(|i| u32::try_from(i).ok()),
            drain_ms: num("baton_drain_ms"),
            address: text("baton_address"),
            level: text("level"),
            message: text("message"),
        })
    }

    pub fn is(&self, event: &str) -> bool {
        self.event == event
    }
}

/// baton's events as they come, from the FIFO `BATON_EVENTS` names: a thread reads it at
/// once, always, into memory (and a copy to `events.jsonl`, through a [`Spool`]), so that
/// neither a slow disk nor verify's own pace ever holds baton's event loop on a write.
pub struct Stream {
    rx: Receiver<Ev>,
    /// verify's own write end: the FIFO reads no end of file before baton opened it.
    hold: Option<File>,
    /// The FIFO, removed with the stream (a kept directory holds no FIFO to hang a `cat`).
    path: PathBuf,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Stream {
    /// A FIFO at `path` (which must not exist), read into memory and copied to `copy`.
    pub fn start(path: &Path, copy: Spool) -> io::Result<Stream> {
        crate::sys::mkfifo(path)?;
        // the read end first (not waiting for a writer), then the write end held
        let fifo = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        let hold = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        crate::sys::set_nonblocking(fifo.as_fd(), false)?;
        let (tx, rx) = channel();
        std::thread::spawn(move || read(fifo, &tx, &copy));
        Ok(Stream {
            rx,
            hold: Some(hold),
            path: path.to_path_buf(),
        })
    }

    /// The events that came since the last call.
    pub fn read_new(&mut self) -> Vec<Ev> {
        self.rx.try_iter().collect()
    }

    /// Once baton has exited: the events it wrote last (waiting `timeout` at most for them).
    pub fn read_rest(&mut self, timeout: Duration) -> Vec<Ev> {
        self.hold = None;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(e) => out.push(e),
                Err(_) => break,
            }
        }
        out
    }
}

/// The FIFO's reader: every whole line to `copy`, and parsed to `tx`; until every writer
/// has closed it.
fn read(mut fifo: File, tx: &Sender<Ev>, copy: &Spool) {
    let mut buf = vec![0u8; 64 << 10];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match fifo.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        partial.extend_from_slice(&buf[..n]);
        let Some(end) = partial.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        copy.write(&partial[..end + 1]);
        for line in partial[..end].split(|b| *b == b'\n') {
            if let Some(e) = std::str::from_utf8(line).ok().and_then(Ev::parse) {
                let _ = tx.send(e);
            }
        }
        partial.drain(..=end);
    }
    copy.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Lines come whole, in order, once; a line that is not an event is skipped; the copy
    /// holds them all; and the stream ends when the last writer is gone.
    #[test]
    fn lines_are_read_once_and_whole() {
        let dir = std::env::temp_dir().join(format!("baton-ev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (fifo, copy) = (dir.join("events"), dir.join("events.jsonl"));
        let spool = Spool::start(File::create(&copy).unwrap(), 1 << 20);
        let mut t = Stream::start(&fifo, spool).unwrap();
        assert!(t.read_new().is_empty(), "nothing written yet");
        // as baton opens it
        let mut f = OpenOptions::new().append(true).open(&fifo).unwrap();
        f.write_all(
            br#"{"mono_us":5,"baton_event":"worker_start","baton_generation":1,"baton_worker_pid":42,"baton_instance":0,"level":"info","message":"m"}
{"mono_us":7,"baton_event":"worker_ex"#,
        )
        .unwrap();
        let got = t.rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got.worker, Some(42));
        assert_eq!(got.generation, Some(1));
        f.write_all(b"it\",\"baton_drain_ms\":3,\"level\":\"info\",\"message\":\"x\"}\nnot json\n")
            .unwrap();
        drop(f);
        let got = t.read_rest(Duration::from_secs(5));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].is("worker_exit"));
        assert_eq!(got[0].drain_ms, Some(3));
        assert!(t.read_new().is_empty());
        drop(t);
        assert!(!fifo.exists(), "the FIFO is removed with its stream");
        // the copy is complete once the reader is done (its spool's thread then ends)
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&copy).unwrap().lines().count() < 3 {
            assert!(Instant::now() < deadline, "the copy is incomplete");
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
