//! The output of `baton run` and its workers under verify (they share one pipe): written to
//! `output.log` up to a cap, so a chatty app cannot fill the disk, and its last lines kept
//! in memory for the table's advice.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

/// What `output.log` holds at most.
pub const CAP: u64 = 32 << 20;
/// Lines kept in memory, of each kind, and their length at most.
const KEPT: usize = 8;
const LINE: usize = 300;

#[derive(Default)]
struct Last {
    /// The app's lines (not baton's log lines), newest last.
    app: VecDeque<String>,
    /// Every line, newest last.
    all: VecDeque<String>,
}

/// The reader of the pipe; it runs until the last writer closes it (or verify exits: a
/// stray the app left may hold it, so nothing waits for it).
pub struct Output(Arc<Mutex<Last>>);

/// A line of baton's own log: `2026-12-02T21:00:10.610786Z  INFO …`.
fn is_batons(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 29 && b[4] == b'-' && b[10] == b'T' && line.get(26..29) == Some("Z  ")
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

impl Output {
    pub fn start(read: OwnedFd, mut file: File) -> Output {
        let last = Arc::new(Mutex::new(Last::default()));
        let shared = last.clone();
        let mut pipe = File::from(read);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            let (mut written, mut dropped) = (0u64, 0u64);
            let mut partial: Vec<u8> = Vec::new();
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                let room = CAP.saturating_sub(written) as usize;
                let keep = chunk.len().min(room);
                if keep > 0 && file.write_all(&chunk[..keep]).is_ok() {
                    written += keep as u64;
                }
                if keep < chunk.len() {
                    if dropped == 0 {
                        let _ = writeln!(
                            file,
                            "\n[baton verify: output beyond {} MiB is not written here]",
                            CAP >> 20
                        );
                    }
                    dropped += (chunk.len() - keep) as u64;
                }
                partial.extend_from_slice(chunk);
                let Some(end) = partial.iter().rposition(|b| *b == b'\n') else {
                    // a line without an end: keep its start only
                    partial.truncate(LINE * 4);
                    continue;
                };
                let mut last = shared.lock().unwrap_or_else(|e| e.into_inner());
                for line in String::from_utf8_lossy(&partial[..end]).lines() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    if !is_batons(line) {
                        push(&mut last.app, line);
                    }
                    push(&mut last.all, line);
                }
                drop(last);
                partial.drain(..=end);
            }
        });
        Output(last)
    }

    /// The last `n` lines of the app's own output (not baton's).
    pub fn app_lines(&self, n: usize) -> Vec<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.app.iter().rev().take(n).rev().cloned().collect()
    }

    /// The last `n` lines of all the output.
    pub fn lines(&self, n: usize) -> Vec<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.all.iter().rev().take(n).rev().cloned().collect()
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
        assert!(!is_batons("hello: pid=15186 crashing with exit code 3"));
        assert!(!is_batons(
            "Error: listen EADDRINUSE: address already in use :::9091"
        ));
    }

    /// A flood is cut at the cap in the file, and its last lines are still known.
    #[test]
    fn the_file_stops_at_the_cap_and_the_last_lines_are_kept() {
        let dir = std::env::temp_dir().join(format!("baton-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("output.log");
        let (r, w) = crate::sys::pipe().unwrap();
        let out = Output::start(r, File::create(&path).unwrap());
        let mut w = File::from(w);
        let line = format!("{}\n", "x".repeat(1023));
        for _ in 0..(CAP / 1024 + 100) {
            w.write_all(line.as_bytes()).unwrap();
        }
        w.write_all(b"Error: the last words\n").unwrap();
        drop(w);
        // the reader sees EOF once every writer is gone: wait for its last line
        let t0 = std::time::Instant::now();
        while out.app_lines(1) != ["Error: the last words"] {
            assert!(t0.elapsed().as_secs() < 20, "{:?}", out.app_lines(2));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > CAP && size < CAP + 200, "{size}");
        assert_eq!(out.lines(1), ["Error: the last words"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
