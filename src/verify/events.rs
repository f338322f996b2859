//! baton's events as `baton verify` reads them: the JSON lines of the events file of the
//! `baton run` it started (`BATON_EVENTS`, see `logging`), read as they are appended.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

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

/// The events file, read from where the last read ended.
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    pub fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The events appended since the last call (none while the file does not exist yet).
    pub fn read_new(&mut self) -> Vec<Ev> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let mut out = Vec::new();
        // a line is complete once its newline is there
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            if let Some(e) = std::str::from_utf8(&line).ok().and_then(Ev::parse) {
                out.push(e);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_are_read_once_and_whole() {
        let path = std::env::temp_dir().join(format!("baton-ev-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut t = Tail::new(path.clone());
        assert!(t.read_new().is_empty(), "no file yet");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(
            br#"{"mono_us":5,"baton_event":"worker_start","baton_generation":1,"baton_worker_pid":42,"baton_instance":0,"level":"info","message":"m"}
{"mono_us":7,"baton_event":"worker_ex"#,
        )
        .unwrap();
        let got = t.read_new();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].worker, Some(42));
        assert_eq!(got[0].generation, Some(1));
        f.write_all(b"it\",\"baton_drain_ms\":3,\"level\":\"info\",\"message\":\"x\"}\nnot json\n")
            .unwrap();
        let got = t.read_new();
        assert_eq!(got.len(), 1);
        assert!(got[0].is("worker_exit"));
        assert_eq!(got[0].drain_ms, Some(3));
        assert!(t.read_new().is_empty());
        let _ = std::fs::remove_file(&path);
    }
}
