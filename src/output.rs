//! Workers' stdout and stderr, line by line, into the journal with the worker's generation,
//! pid and instance attached.
//!
//! Under systemd (baton's own logs go to the journal), each worker gets a pipe for stdout and
//! one for stderr; baton reads them in its event loop and sends every line to journald with the
//! native protocol: `MESSAGE`, `PRIORITY` (a `<N>` prefix is honoured like systemd's
//! `SyslogLevelPrefix=`), `SYSLOG_IDENTIFIER` (the program's name), `BATON_GENERATION`,
//! `BATON_RELEASE` (the generation's release), `BATON_WORKER_PID`, `BATON_INSTANCE`, `BATON_STREAM`, and `OBJECT_PID` (so journald adds the
//! worker's `OBJECT_*` metadata). One pipe per worker and stream means lines of two workers can
//! never merge; a line longer than [`MAX_LINE`] is split; a partial last line is sent at EOF.
//! A pipe lives until EOF, not until its worker is reaped, so nothing written before an exit is
//! lost.
//!
//! A chatty worker must not freeze the event loop: a pipe is read at most [`READ_BUDGET`] bytes
//! per loop turn, and lines go to journald without blocking. When journald pushes back (its
//! socket's queue is full), the pipe keeps its unsent lines and is not read again until the
//! journal socket is writable, so the worker blocks on its own writes once the pipe is full:
//! backpressure, as journald's own stdout streams do. No line is dropped: one that journald
//! refuses for another reason goes to baton's stderr.
//!
//! Without the journal, workers simply inherit baton's stdout/stderr and this module is idle.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

use crate::sys::{self, Pid};

/// Longest line sent as one entry; longer lines are split (journald's own LineMax is 48K).
pub const MAX_LINE: usize = 32 * 1024;

/// At most this much is read from one pipe per loop turn.
pub const READ_BUDGET: usize = 64 * 1024;

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
    /// Its generation's release (`BATON_RELEASE`), with no newline in it.
    pub release: String,
    pub identifier: String,
    pub stream: Stream,
}

/// The read end of one worker stream.
pub struct Pipe {
    fd: OwnedFd,
    /// Read and not sent yet: complete lines waiting for journald, then a partial line.
    buf: Vec<u8>,
    /// The writer side is closed; what is left in `buf` is sent, then the pipe is done.
    eof: bool,
    /// journald pushed back: the pipe is not read until the journal socket is writable.
    blocked: bool,
    /// Bytes read and lines sent so far: whether output still moves.
    moved: u64,
    pub origin: Origin,
}

/// What a pipe needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pump {
    /// Read it when it is readable.
    Open,
    /// Wait until the journal socket is writable, then pump it again.
    Blocked,
    /// Everything was sent: drop it.
    Done,
}

/// journald's socket is full: the datagram was not sent.
#[derive(Debug)]
struct Full;

/// A connection to journald's native socket.
pub struct Journal {
    sock: UnixDatagram,
}

/// A non-blocking datagram socket connected to journald's native socket (for workers' lines
/// here, and for baton's own in `logging`).
pub fn journal_socket() -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(JOURNAL_SOCKET)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

impl Journal {
    pub fn connect() -> io::Result<Journal> {
        Ok(Journal {
            sock: journal_socket()?,
        })
    }

    /// Send one line; `Err(Full)` when journald's queue is full (try again once the socket is
    /// writable). Any other failure sends the line to stderr instead.
    fn send(&self, origin: &Origin, line: &[u8]) -> Result<(), Full> {
        let (priority, text) = split_priority(line);
        let mut msg = Vec::with_capacity(text.len() + 256);
        // MESSAGE may contain anything but a newline here (lines are split on '\n'), so the
        // simple KEY=VALUE form is safe for it too.
        msg.extend_from_slice(b"MESSAGE=");
        msg.extend_from_slice(text);
        msg.push(b'\n');
        let fields = format!(
            "PRIORITY={priority}\nSYSLOG_IDENTIFIER={}\nBATON_GENERATION={}\nBATON_RELEASE={}\nBATON_WORKER_PID={}\nBATON_INSTANCE={}\nBATON_STREAM={}\nOBJECT_PID={}\n",
            origin.identifier,
            origin.generation,
            origin.release,
            origin.pid,
            origin.instance,
            origin.stream.name(),
            origin.pid
        );
        msg.extend_from_slice(fields.as_bytes());
        match self.sock.send(&msg) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Full),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.send(origin, line),
            Err(e) => {
                // the journal is gone: keep the line on baton's stderr rather than lose it
                eprintln!(
                    "[generation {} pid {}] {} (journal: {e})",
                    origin.generation,
                    origin.pid,
                    String::from_utf8_lossy(text)
                );
                Ok(())
            }
        }
    }
}

impl AsFd for Journal {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
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
            eof: false,
            blocked: false,
            moved: 0,
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
    /// Whether it waits for the journal rather than for input.
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// Send what is pending, then read at most [`READ_BUDGET`] and send every complete line
    /// (and, at EOF, a partial last line).
    /// How much this pipe has moved so far (bytes read, lines sent): it grows while output
    /// flows, and stands still on a pipe that is silent or that journald does not take from.
    pub fn moved(&self) -> u64 {
        self.moved
    }

    pub fn pump(&mut self, journal: &Journal) -> Pump {
        let mut chunk = [0u8; 16 * 1024];
        let mut read = 0;
        loop {
            if self.flush(journal).is_err() {
                self.blocked = true;
                return Pump::Blocked;
            }
            self.blocked = false;
            if self.eof {
                return Pump::Done;
            }
            if read >= READ_BUDGET {
                return Pump::Open;
            }
            match sys::read(self.fd.as_fd(), &mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    read += n;
                    self.moved += n as u64;
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Pump::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.eof = true,
            }
        }
    }

    /// Send the complete lines of `buf` (a line longer than [`MAX_LINE`] in parts, as is a
    /// partial line that long), and at EOF the partial rest. Stops at the first line journald
    /// cannot take, which stays in `buf`.
    fn flush(&mut self, journal: &Journal) -> Result<(), Full> {
        let mut start = 0;
        let result = loop {
            let rest = &self.buf[start..];
            if rest.is_empty() {
                break Ok(());
            }
            let (piece, used) = match rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
                Some(pos) => (&rest[..pos], pos + 1),
                // longer than an entry and no newline in sight: split (a line of exactly
                // MAX_LINE bytes waits for its newline, and is not followed by an empty entry)
                None if rest.len() > MAX_LINE => (&rest[..MAX_LINE], MAX_LINE),
                None if self.eof => (rest, rest.len()),
                None => break Ok(()),
            };
            if let Err(full) = journal.send(&self.origin, piece) {
                break Err(full);
            }
            start += used;
            self.moved += 1;
        };
        self.buf.drain(..start);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line arrives once, whole or in MAX_LINE parts, whatever the read boundaries: a line
    /// of exactly MAX_LINE bytes is one entry (it was once followed by an empty one when a read
    /// ended right after it), and a partial last line is sent at EOF.
    #[test]
    fn lines_are_split_only_past_max_line() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let journal = Journal { sock: ours };
        let origin = Origin {
            generation: 1,
            pid: 1,
            instance: 0,
            release: "/srv/t".into(),
            identifier: "t".into(),
            stream: Stream::Stdout,
        };
        let (mut pipe, w) = pipe(origin).unwrap();
        let exact = "x".repeat(MAX_LINE);
        let long = "y".repeat(MAX_LINE + 5);
        let text = format!("{exact}\n\n{long}\nlast");
        let mut w = std::fs::File::from(w);
        std::io::Write::write_all(&mut w, text.as_bytes()).unwrap();
        drop(w);
        while pipe.pump(&journal) != Pump::Done {}
        let mut messages = Vec::new();
        let mut buf = vec![0u8; 2 * MAX_LINE];
        while let Ok(n) = theirs.recv(&mut buf) {
            let entry = String::from_utf8_lossy(&buf[..n]).to_string();
            let m = entry
                .lines()
                .find_map(|l| l.strip_prefix("MESSAGE="))
                .unwrap();
            messages.push(m.to_string());
        }
        let want = vec![
            exact.clone(),
            String::new(),
            "y".repeat(MAX_LINE),
            "yyyyy".into(),
            "last".into(),
        ];
        assert_eq!(messages.len(), want.len());
        assert!(
            messages == want,
            "{:?}",
            messages.iter().map(|m| m.len()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn priority_prefix() {
        assert_eq!(split_priority(b"<3>disk full"), (3, &b"disk full"[..]));
        assert_eq!(split_priority(b"<9>x"), (6, &b"<9>x"[..]));
        assert_eq!(split_priority(b"plain"), (6, &b"plain"[..]));
        assert_eq!(split_priority(b""), (6, &b""[..]));
    }
}
