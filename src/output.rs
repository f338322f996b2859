//! Workers' stdout and stderr, line by line, into the journal with the worker's generation,
//! pid and instance attached.
//!
//! Under systemd (baton's own logs go to the journal), each worker gets a pipe for stdout and
//! one for stderr; baton reads them in its event loop and sends every line to journald with the
//! native protocol: `MESSAGE`, `PRIORITY` (a `<N>` prefix is honoured like systemd's
//! `SyslogLevelPrefix=`), `SYSLOG_IDENTIFIER` (the program's name), `BATON_GENERATION`,
//! `BATON_WORKER_PID`, `BATON_INSTANCE`, `BATON_STREAM`, and `OBJECT_PID` (so journald adds the
//! worker's `OBJECT_*` metadata). One pipe per worker and stream means lines of two workers can
//! never merge; a line longer than [`MAX_LINE`] is split; a partial last line is sent at EOF.
//! A pipe lives until EOF, not until its worker is reaped, so nothing written before an exit is
//! lost.
//!
//! Without the journal, workers simply inherit baton's stdout/stderr and this module is idle.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

use crate::sys::{self, Pid};

/// Longest line sent as one entry; longer lines are split (journald's own LineMax is 48K).
pub const MAX_LINE: usize = 32 * 1024;

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Who wrote the lines of one pipe.
#[derive(Clone, Debug)]
pub struct Origin {
    pub generation: u64,
    pub pid: Pid,
    pub instance: u32,
    pub identifier: String,
    pub stream: Stream,
}

/// The read end of one worker stream.
pub struct Pipe {
    fd: OwnedFd,
    buf: Vec<u8>,
    pub origin: Origin,
}

/// A connection to journald's native socket.
pub struct Journal {
    sock: UnixDatagram,
}

impl Journal {
    pub fn connect() -> io::Result<Journal> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(JOURNAL_SOCKET)?;
        Ok(Journal { sock })
    }

    fn send(&self, origin: &Origin, line: &[u8]) {
        let (priority, text) = split_priority(line);
        let mut msg = Vec::with_capacity(text.len() + 256);
        // MESSAGE may contain anything but a newline here (lines are split on '\n'), so the
        // simple KEY=VALUE form is safe for it too.
        msg.extend_from_slice(b"MESSAGE=");
        msg.extend_from_slice(text);
        msg.push(b'\n');
        let fields = format!(
            "PRIORITY={priority}\nSYSLOG_IDENTIFIER={}\nBATON_GENERATION={}\nBATON_WORKER_PID={}\nBATON_INSTANCE={}\nBATON_STREAM={}\nOBJECT_PID={}\n",
            origin.identifier,
            origin.generation,
            origin.pid,
            origin.instance,
            origin.stream.name(),
            origin.pid
        );
        msg.extend_from_slice(fields.as_bytes());
        if let Err(e) = self.sock.send(&msg) {
            // the journal is gone or full: keep the line on baton's stderr rather than lose it
            eprintln!(
                "[generation {} pid {}] {} (journal: {e})",
                origin.generation,
                origin.pid,
                String::from_utf8_lossy(text)
            );
        }
    }
}

/// `<N>` at the start of a line sets its priority (0..=7), as systemd does for services.
fn split_priority(line: &[u8]) -> (u8, &[u8]) {
    if line.len() >= 3 && line[0] == b'<' && line[2] == b'>' && (b'0'..=b'7').contains(&line[1]) {
        (line[1] - b'0', &line[3..])
    } else {
        (6, line)
    }
}

/// A new pipe for one stream of a worker: returns the reader (for baton) and the writer (for
/// the child's fd 1 or 2; the caller drops it after spawning).
pub fn pipe(origin: Origin) -> io::Result<(Pipe, OwnedFd)> {
    let (r, w) = sys::output_pipe()?;
    Ok((
        Pipe {
            fd: r,
            buf: Vec::new(),
            origin,
        },
        w,
    ))
}

impl AsFd for Pipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Pipe {
    /// Read what is available and send every complete line. Returns false at EOF (after
    /// sending a partial last line), when the pipe can be dropped.
    pub fn pump(&mut self, journal: &Journal) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match sys::read(self.fd.as_fd(), &mut chunk) {
                Ok(0) => {
                    self.flush_lines(journal);
                    if !self.buf.is_empty() {
                        let rest = std::mem::take(&mut self.buf);
                        journal.send(&self.origin, &rest);
                    }
                    return false;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.flush_lines(journal);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    fn flush_lines(&mut self, journal: &Journal) {
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buf[start..start + pos];
            for part in line.chunks(MAX_LINE) {
                journal.send(&self.origin, part);
            }
            if line.is_empty() {
                journal.send(&self.origin, b"");
            }
            start += pos + 1;
        }
        self.buf.drain(..start);
        while self.buf.len() >= MAX_LINE {
            let part: Vec<u8> = self.buf.drain(..MAX_LINE).collect();
            journal.send(&self.origin, &part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_prefix() {
        assert_eq!(split_priority(b"<3>disk full"), (3, &b"disk full"[..]));
        assert_eq!(split_priority(b"<9>x"), (6, &b"<9>x"[..]));
        assert_eq!(split_priority(b"plain"), (6, &b"plain"[..]));
        assert_eq!(split_priority(b""), (6, &b""[..]));
    }
}
