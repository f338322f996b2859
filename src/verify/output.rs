//! The output of `baton run` and its workers under verify (they share one pipe): written to
//! `output.log` up to a cap, so a chatty app cannot fill the disk, and its last lines kept
//! in memory for the table's advice.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What `output.log` holds at most.
pub const CAP: u64 = 32 << 20;
/// Lines kept in memory, of each kind, and their length at most.
const KEPT: usize = 8;
const LINE: usize = 300;

#[derive(Default)]
struct Last {
    /// The app's lines on stderr (baton's log lines left out), newest last.
    app_err: VecDeque<String>,
    /// The app's lines on stdout, newest last.
    app_out: VecDeque<String>,
    /// Every line, newest last.
    all: VecDeque<String>,
}

/// The readers of the two pipes (stdout, stderr); they run until the last writer closes them
/// (or verify exits: a stray the app left may hold them, so nothing waits for them).
pub struct Output(Arc<Mutex<Last>>);

/// A line of baton's own log: `2026-12-02T21:00:10.610786Z  INFO …`, `… ERROR …`.
fn is_batons(line: &str) -> bool {
    let b = line.as_bytes();
    let Some(z) = line.find("Z ") else {
        return false;
    };
    let level = line[z + 1..].trim_start();
    b.len() > 20
        && b[4] == b'-'
        && b[10] == b'T'
        && z < 32
        && ["TRACE ", "DEBUG ", "INFO ", "WARN ", "ERROR "]
            .iter()
            .any(|l| level.starts_with(l))
}

fn push(q: &mut VecDeque<String>, line: &str) {
    if q.len() == KEPT {
        q.pop_front();
    }
    let mut end = line.len().min(LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    q.push_back(line[..end].to_string());
}

/// The file both readers append to, whole lines at a time, up to [`CAP`].
struct Sink {
    file: Mutex<File>,
    written: AtomicU64,
    dropped: AtomicBool,
}

impl Sink {
    fn write(&self, lines: &[u8]) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let written = self.written.load(Ordering::Relaxed);
        let room = CAP.saturating_sub(written) as usize;
        let keep = lines.len().min(room);
        if keep > 0 && file.write_all(&lines[..keep]).is_ok() {
            self.written.store(written + keep as u64, Ordering::Relaxed);
        }
        if keep < lines.len() && !self.dropped.swap(true, Ordering::Relaxed) {
            let _ = writeln!(
                file,
                "\n[baton verify: output beyond {} MiB is not written here]",
                CAP >> 20
            );
        }
    }
}

impl Output {
    /// Reads `stdout` and `stderr` (pipes' read ends) into `file`.
    pub fn start(stdout: OwnedFd, stderr: OwnedFd, file: File) -> Output {
        let last = Arc::new(Mutex::new(Last::default()));
        let sink = Arc::new(Sink {
            file: Mutex::new(file),
            written: AtomicU64::new(0),
            dropped: AtomicBool::new(false),
        });
        for (fd, is_err) in [(stdout, false), (stderr, true)] {
            let (last, sink) = (last.clone(), sink.clone());
            std::thread::spawn(move || read(File::from(fd), is_err, &sink, &last));
        }
        Output(last)
    }

    /// The last `n` lines of the app's own output (not baton's): of its stderr if it wrote
    /// any (where an app says why it failed, while its stdout may be chatter), else of its
    /// stdout.
    pub fn app_lines(&self, n: usize) -> Vec<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let q = match last.app_err.is_empty() {
            false => &last.app_err,
            true => &last.app_out,
        };
        q.iter().rev().take(n).rev().cloned().collect()
    }

    /// The last `n` lines of all the output.
    pub fn lines(&self, n: usize) -> Vec<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.all.iter().rev().take(n).rev().cloned().collect()
    }
}

/// One pipe: whole lines to the sink, the last ones to `last`.
fn read(mut pipe: File, is_err: bool, sink: &Sink, last: &Mutex<Last>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        partial.extend_from_slice(&buf[..n]);
        let end = match partial.iter().rposition(|b| *b == b'\n') {
            Some(end) => end + 1,
            // a line without an end for this long: written as it is
            None if partial.len() >= buf.len() => partial.len(),
            None => continue,
        };
        sink.write(&partial[..end]);
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        for line in String::from_utf8_lossy(&partial[..end]).lines() {
            if line.trim().is_empty() {
                continue;
            }
            if !is_batons(line) {
                match is_err {
                    true => push(&mut last.app_err, line),
                    false => push(&mut last.app_out, line),
                }
            }
            push(&mut last.all, line);
        }
        drop(last);
        partial.drain(..end);
    }
    if !partial.is_empty() {
        sink.write(&partial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baton_lines_are_told_from_the_apps() {
        assert!(is_batons(
            "2026-12-02T21:00:10.610786Z  INFO history none yet baton_event=\"history\""
        ));
        assert!(is_batons(
            "2026-12-02T21:29:07.123456Z ERROR generation 1 failed to start: worker 7 exited"
        ));
        assert!(is_batons(
            "2026-12-02T21:29:07Z  WARN worker 7 not ready after 5s"
        ));
        assert!(!is_batons(
            "2026-12-02T21:29:07Z: the app's own timestamped line"
        ));
        assert!(!is_batons("hello: pid=15186 crashing with exit code 3"));
        assert!(!is_batons(
            "Error: listen EADDRINUSE: address already in use :::9091"
        ));
    }

    /// A flood is cut at the cap in the file, and the app's last stderr line is still known
    /// (stdout's chatter after it, and baton's own lines, are not quoted).
    #[test]
    fn the_file_stops_at_the_cap_and_the_last_lines_are_kept() {
        let dir = std::env::temp_dir().join(format!("baton-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("output.log");
        let (r, w) = crate::sys::pipe().unwrap();
        let (er, ew) = crate::sys::pipe().unwrap();
        let out = Output::start(r, er, File::create(&path).unwrap());
        let (mut w, mut ew) = (File::from(w), File::from(ew));
        let line = format!("{}\n", "x".repeat(1023));
        ew.write_all(b"2026-12-02T21:29:07.123456Z ERROR baton's own line\n")
            .unwrap();
        for _ in 0..(CAP / 1024 + 100) {
            w.write_all(line.as_bytes()).unwrap();
        }
        // the app's stderr line, before its stdout's last chatter: the one quoted
        ew.write_all(b"Error: the last words\n").unwrap();
        w.write_all(line.as_bytes()).unwrap();
        drop((w, ew));
        // the reader sees EOF once every writer is gone: wait for its last line
        let t0 = std::time::Instant::now();
        while out.app_lines(1) != ["Error: the last words"] {
            assert!(t0.elapsed().as_secs() < 20, "{:?}", out.app_lines(2));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > CAP && size < CAP + 200, "{size}");
        assert_eq!(out.lines(1).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
