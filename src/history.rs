//! The history of generations (issue 16): the last `history` generations that served or
//! failed, each with its release, its config (the text and a digest), its start, swap and end
//! times, and its outcome with the reason. Kept in memory by the event loop, which applies
//! the core's facts to it ([`History::served`], [`History::failed`], [`History::ended`]) with
//! wall-clock times, and persisted to `history.json` in the state directory, so that it
//! survives a restart of baton and `baton rollback` can start an earlier generation again.
//!
//! The file is written atomically ([`write_atomic`]: a temporary file in the same directory,
//! fsync, rename, fsync of the directory), mode 0600 (a config may hold secrets in `[env]`).
//! Nothing here is ever fatal: a missing, unreadable or corrupt file is reported and an empty
//! history used, and a write that fails (a full disk, a directory in the file's place) is
//! reported by the caller, which goes on serving.
//!
//! Generation numbers go on across runs ([`History::next_generation`]: one past the highest
//! in the history), and a record also names its run (the run's start, in milliseconds since
//! the epoch). A generation number is at most [`MAX_GENERATION`], so it never wraps.
//!
//! The file is baton's own, but it is read as if anyone could have written it: [`load`] opens
//! it without blocking and without following a symbolic link, reads only a regular file owned
//! by baton's effective uid and writable by no one else, no larger than its limit (all known
//! from `fstat`, before reading), parses its records one by one, and drops the records that
//! would mislead (one that does not parse, a generation number out of range, a relative
//! release, a digest that is not its config's). A state directory others may write to is not
//! used at all ([`untrusted_dir`]): the history is then kept in memory only.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys;

/// The file's name in the state directory.
pub const FILE: &str = "history.json";

/// The file format's version.
pub const VERSION: u32 = 1;

/// A history file larger than this is not read (100 generations of 1 MiB configs, escaped).
const MAX_FILE: u64 = 256 << 20;

/// The highest generation number a record may have: 2^53, JSON's largest safe integer (a
/// reader in another language gets it exactly). A record above it is dropped at load, so
/// [`History::next_generation`] never wraps and numbers stay unique and at least 1.
pub const MAX_GENERATION: u64 = 1 << 53;

/// How many files that were no history [`keep_aside`] keeps: `history.json.corrupt`, then
/// `history.json.corrupt.1` to `.corrupt.9`.
pub const ASIDE_MAX: u32 = 10;

/// How a generation came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The first generation of a run of baton.
    Start,
    /// A reload: the config file read again, the release resolved again.
    Reload,
    /// `baton rollback`: the config and release of an earlier generation.
    Rollback,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Reload => "reload",
            Kind::Rollback => "rollback",
        }
    }
}

/// How a generation ended (or that it still serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Serving,
    /// It served, and a newer generation replaced it.
    Replaced,
    /// It served until baton stopped (or its run ended without saying so).
    Stopped,
    /// It never served: it failed before it was ready (the reason says why).
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Serving => "serving",
            Outcome::Replaced => "replaced",
            Outcome::Stopped => "stopped",
            Outcome::Failed => "failed",
        }
    }
}

/// One generation that served or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub generation: u64,
    /// The run of baton it belongs to: when that run started, in ms since the epoch.
    pub run: u64,
    pub kind: Kind,
    /// A rollback: the generation whose release and config it started again (and its run).
    #[serde(default)]
    pub rollback_to: Option<u64>,
    #[serde(default)]
    pub rollback_to_run: Option<u64>,
    /// The release it ran, resolved at its start (`None`: it could not be resolved).
    pub release: Option<String>,
    /// [`digest`] of `config`.
    pub config_digest: String,
    /// The config file it was read from (`None`: the embedded demo config).
    #[serde(default)]
    pub config_path: Option<String>,
    /// The config's text, as it was read.
    pub config: String,
    /// Times in ms since the epoch: its start, its swap (when it began to serve), its end
    /// (its failure, or its last worker gone).
    pub started_ms: u64,
    #[serde(default)]
    pub swapped_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    pub outcome: Outcome,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Record {
    /// Whether it ever served.
    pub fn served(&self) -> bool {
        self.swapped_ms.is_some()
    }
}

/// What a generation starts with, before the core says whether it served or failed.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: Kind,
    pub rollback_to: Option<(u64, u64)>,
    pub config_path: Option<String>,
    pub config: String,
    /// A rollback: the recorded release, pinned instead of resolving the config's paths.
    pub release: Option<PathBuf>,
}

/// The history file's content, as written.
#[derive(Debug, Serialize)]
struct FileContent {
    version: u32,
    records: Vec<Record>,
}

/// The history file's content, as read: each record is parsed on its own, so that one that
/// does not parse is dropped and the others kept.
#[derive(Debug, Deserialize)]
struct FileRead {
    version: u32,
    records: Vec<serde_json::Value>,
}

/// The records, oldest first, at most `keep` of them, and the generations started but not
/// served or failed yet.
#[derive(Debug)]
pub struct History {
    pub records: Vec<Record>,
    pub keep: usize,
    /// This run's start (ms since the epoch).
    pub run: u64,
    starting: Vec<(u64, Source, Option<String>)>,
}

/// Why a rollback to a generation of another config file is refused.
const SHARED: &str = "the two configs keep their history in one state directory (the default one \
     is named after the config file's name, so two files of one name share it); give each \
     baton its own with STATE_DIRECTORY (under systemd: StateDirectory=)";

/// Whether `r` was run by another config file than `config` (this baton's; `None`: the
/// embedded demo config). A record whose config file is not known is not another's.
fn other_config(r: &Record, config: Option<&str>) -> bool {
    match (r.config_path.as_deref(), config) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(p), Some(c)) => !same_file(p, c),
    }
}

/// Two paths of one config file: equal, or resolving to one file.
fn same_file(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (fs::canonicalize(a), fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// FNV-1a (64 bits) of the text, as `fnv1a64:<16 hex digits>`: a non-cryptographic digest
/// that tells two configs apart at a glance (not a defence against a forged file: the file is
/// baton's own, mode 0600, and [`load`] refuses one anybody else could have written). What is
/// shown and recorded is always computed from the text: [`load`] drops a record whose stored
/// digest is not its config's.
pub fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
}

impl History {
    pub fn new(keep: u32, run: u64, records: Vec<Record>) -> History {
        let mut h = History {
            records,
            keep: keep.max(1) as usize,
            run,
            starting: Vec::new(),
        };
        // a generation of an earlier run that still says "serving" served until that run
        // ended, which did not record it (killed, or the write failed)
        for r in h.records.iter_mut().filter(|r| r.run != run) {
            if r.outcome == Outcome::Serving {
                r.outcome = Outcome::Stopped;
                r.reason = Some("its run of baton ended without recording the end".into());
            }
        }
        h.trim();
        h
    }

    /// The number of this run's first generation: one past the highest in the history (1 when
    /// it is empty), so that numbers go on across runs and a number names one generation.
    /// Never wraps: a number above [`MAX_GENERATION`] is no record's ([`load`] drops it), and
    /// one that got here all the same is not counted.
    pub fn next_generation(&self) -> u64 {
        self.records
            .iter()
            .map(|r| r.generation)
            .filter(|g| *g <= MAX_GENERATION)
            .max()
            .map_or(1, |g| g + 1)
    }

    /// The records of other configs than `config` (this baton's file; `None`: the embedded
    /// demo config): each such config file, with its generations, oldest first. Configs of one
    /// file name share a default state directory, and so a history.
    pub fn other_configs(&self, config: Option<&str>) -> Vec<(String, Vec<u64>)> {
        let mut out: Vec<(String, Vec<u64>)> = Vec::new();
        for r in &self.records {
            let Some(p) = r.config_path.as_deref().filter(|_| other_config(r, config)) else {
                continue;
            };
            match out.iter_mut().find(|(q, _)| q == p) {
                Some((_, gens)) => gens.push(r.generation),
                None => out.push((p.to_string(), vec![r.generation])),
            }
        }
        out
    }

    /// A generation starts from `source`, with this release (once resolved).
    pub fn starting(&mut self, generation: u64, source: Source, release: Option<String>) {
        self.starting.retain(|(g, ..)| *g != generation);
        self.starting.push((generation, source, release));
    }

    /// The release a starting generation resolved.
    pub fn resolved(&mut self, generation: u64, release: String) {
        if let Some(s) = self.starting.iter_mut().find(|s| s.0 == generation) {
            s.2 = Some(release);
        }
    }

    fn record_of(&mut self, generation: u64, started_ms: u64) -> Option<Record> {
        let i = self.starting.iter().position(|s| s.0 == generation)?;
        let (_, source, release) = self.starting.remove(i);
        Some(Record {
            generation,
            run: self.run,
            kind: source.kind,
            rollback_to: source.rollback_to.map(|r| r.0),
            rollback_to_run: source.rollback_to.map(|r| r.1),
            release,
            config_digest: digest(&source.config),
            config_path: source.config_path,
            config: source.config,
            started_ms,
            swapped_ms: None,
            ended_ms: None,
            outcome: Outcome::Serving,
            reason: None,
        })
    }

    /// A generation began to serve. The one it replaced (of this run, still `serving`) is
    /// `replaced` from this moment, while it drains: its end is this swap, so that one
    /// generation serves at a time in the history and SERVED is the time from its swap to the
    /// one that replaced it (its drain is in the journal). Returns whether the records changed.
    pub fn served(&mut self, generation: u64, started_ms: u64, swapped_ms: u64) -> bool {
        let Some(mut r) = self.record_of(generation, started_ms) else {
            return false;
        };
        r.swapped_ms = Some(swapped_ms);
        let run = self.run;
        for old in self
            .records
            .iter_mut()
            .filter(|o| o.run == run && o.outcome == Outcome::Serving)
        {
            old.outcome = Outcome::Replaced;
            old.ended_ms = Some(swapped_ms.max(old.swapped_ms.unwrap_or(0)));
            old.reason = Some(format!("replaced by generation {generation}"));
        }
        self.push(r);
        true
    }

    /// A generation failed before it served.
    pub fn failed(&mut self, generation: u64, started_ms: u64, at_ms: u64, reason: &str) -> bool {
        let Some(mut r) = self.record_of(generation, started_ms) else {
            return false;
        };
        r.ended_ms = Some(at_ms);
        r.outcome = Outcome::Failed;
        r.reason = Some(reason.to_string());
        self.push(r);
        true
    }

    /// A generation of this run is gone: baton stopped (`stopped`), or it was replaced (a
    /// replaced generation says so from the swap on, [`History::served`]: its record does not
    /// change when its last worker is gone). A generation that never served nor failed
    /// (stopped while it started) is forgotten.
    pub fn ended(&mut self, generation: u64, at_ms: u64, reason: &str, stopped: bool) -> bool {
        self.starting.retain(|s| s.0 != generation);
        let run = self.run;
        let Some(r) = self
            .records
            .iter_mut()
            .rev()
            .find(|r| r.run == run && r.generation == generation)
        else {
            return false;
        };
        if r.outcome != Outcome::Serving {
            return false;
        }
        r.ended_ms = Some(at_ms);
        r.outcome = if stopped {
            Outcome::Stopped
        } else {
            Outcome::Replaced
        };
        r.reason = Some(reason.to_string());
        true
    }

    fn push(&mut self, r: Record) {
        self.records.push(r);
        self.trim();
    }

    /// At most `keep` records: a generation that never served goes first (the oldest such),
    /// the newest record never, so failed reloads in a row cannot push out the generations a
    /// rollback can start again, the serving one among them; then the oldest.
    fn trim(&mut self) {
        while self.records.len() > self.keep {
            let older = &self.records[..self.records.len() - 1];
            let i = older.iter().position(|r| !r.served()).unwrap_or(0);
            self.records.remove(i);
        }
    }

    /// The record `baton rollback` starts again: generation `to` (of this run if it has one,
    /// else of the latest earlier run that does), or by default the last generation before
    /// the serving one (`serving`, of this run) that served with another release or config.
    /// `config` is this baton's config file (`None`: the embedded demo config): a generation
    /// of another config file (one that shares this state directory) is refused, and the
    /// default skips it.
    pub fn rollback_target(
        &self,
        serving: Option<u64>,
        to: Option<u64>,
        config: Option<&str>,
    ) -> Result<&Record, String> {
        let current = serving.and_then(|g| {
            self.records
                .iter()
                .rposition(|r| r.run == self.run && r.generation == g)
        });
        if let Some(to) = to {
            let found = self
                .records
                .iter()
                .rev()
                .filter(|r| r.generation == to)
                .max_by_key(|r| r.run == self.run);
            return match found {
                None => Err(format!(
                    "generation {to} is not in the history (`baton history` lists it)"
                )),
                Some(r) if r.run == self.run && Some(to) == serving => Err(format!(
                    "generation {to} is the one serving: nothing to roll back to"
                )),
                Some(r) if other_config(r, config) => Err(format!(
                    "generation {to} ran another config, {}, not this baton's {}: {}",
                    r.config_path.as_deref().unwrap_or_default(),
                    config.unwrap_or("embedded demo config"),
                    SHARED
                )),
                Some(r) if !r.served() => Err(format!(
                    "generation {to} never served (it failed: {}); roll back to one that did",
                    r.reason.as_deref().unwrap_or("no reason recorded")
                )),
                Some(r) => Ok(r),
            };
        }
        let before = match current {
            Some(i) => &self.records[..i],
            None => &self.records[..],
        };
        let same = current.map(|i| &self.records[i]);
        before
            .iter()
            .rev()
            .filter(|r| r.served() && !other_config(r, config))
            .find(|r| same.map_or(true, |s| s.release != r.release || s.config != r.config))
            .ok_or_else(|| {
                let others = self.other_configs(config);
                let skipped = match others.is_empty() {
                    true => String::new(),
                    false => format!(
                        "; the generations of other configs ({}) are not for this baton",
                        others
                            .iter()
                            .map(|(p, _)| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                format!(
                    "no earlier good generation to roll back to: the history has no generation \
                     before the serving one that served with another release or config \
                     (`baton history` lists it){skipped}"
                )
            })
    }

    /// The file's content.
    pub fn to_json(&self) -> Vec<u8> {
        let content = FileContent {
            version: VERSION,
            records: self.records.clone(),
        };
        let mut v = serde_json::to_vec_pretty(&content).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// What [`load`] read: the records it keeps, oldest first, and why each record it dropped
/// was dropped (a warning each).
#[derive(Debug, Default, PartialEq)]
pub struct Loaded {
    pub records: Vec<Record>,
    pub dropped: Vec<String>,
}

/// Read the history file: its records, or why it could not be used (`Err`; a missing file is
/// `Ok` with none). It is opened without blocking (a FIFO in its place would block the open
/// until a writer came) and without following a symbolic link, and only a regular file owned
/// by baton's effective uid, writable by neither group nor others, and no larger than the
/// limit is read (all from `fstat` of the opened file, before reading): anybody else who may
/// write it could craft a record that a rollback starts (as root). The records are parsed one
/// by one: a record that does not parse, whose generation number is 0 or above
/// [`MAX_GENERATION`], whose release is not an absolute path, or whose stored digest is not
/// its config's, is dropped with the reason, and the others are kept.
pub fn load(path: &Path) -> Result<Loaded, String> {
    read(path, true)
}

/// [`load`] for showing the history (`baton history --config` with no baton running): the
/// records are only printed, never started, so a file of another owner is read too (root
/// reading a service user's history).
pub fn load_to_show(path: &Path) -> Result<Loaded, String> {
    read(path, false)
}

fn read(path: &Path, trusted_only: bool) -> Result<Loaded, String> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e)
            if e.raw_os_error() == Some(libc::ELOOP)
                && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            return Err("it is not a regular file: a symbolic link".into())
        }
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err(match file_kind(&meta.file_type()) {
            "a directory" => "it is a directory, not a file".into(),
            kind => format!("it is not a regular file: {kind}"),
        });
    }
    if let Some(why) = untrusted(&meta).filter(|_| trusted_only) {
        return Err(why);
    }
    if meta.len() > MAX_FILE {
        return Err(format!(
            "it is larger than {MAX_FILE} bytes ({} bytes): not read",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("it is larger than {MAX_FILE} bytes"));
    }
    let content: FileRead =
        serde_json::from_slice(&bytes).map_err(|e| format!("it is not a history file: {e}"))?;
    if content.version != VERSION {
        return Err(format!(
            "its version is {}, this baton reads version {VERSION}",
            content.version
        ));
    }
    let mut loaded = Loaded::default();
    for (i, value) in content.records.into_iter().enumerate() {
        let r: Record = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                loaded.dropped.push(format!(
                    "the record at index {i} (counting from 0) is dropped: it does not parse \
                     as a record: {e}"
                ));
                continue;
            }
        };
        match invalid(&r) {
            None => loaded.records.push(r),
            Some(why) => loaded.dropped.push(format!(
                "a record (generation {}, run started {} UTC) is dropped: {why}",
                r.generation,
                utc(r.run)
            )),
        }
    }
    Ok(loaded)
}

/// Why a history file (of this `fstat`) is not to be trusted, if it is not: owned by another
/// uid than baton's effective one, or writable by group or others.
fn untrusted(meta: &fs::Metadata) -> Option<String> {
    let euid = sys::euid();
    if meta.uid() != euid {
        return Some(format!(
            "it is owned by uid {}, not by baton's uid {euid}: another user could have \
             crafted it; not read",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!(
            "it is writable by {} (mode {mode:04o}): another user could have crafted it; not \
             read (baton writes it with mode 0600)",
            writers(mode)
        ));
    }
    None
}

/// "group", "others" or "group and others", of mode bits with one of 0o022.
fn writers(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "group",
        _ => "others",
    }
}

/// Why the state directory `dir` (followed if a symbolic link) is not to hold the history, if
/// it is not: writable by group or others (who could put a crafted history file there, or
/// replace baton's), unless it is sticky and owned by baton's effective uid (then nobody else
/// may remove or rename baton's files, and [`load`] refuses theirs). `None` too when it
/// cannot be looked at: reading and writing the file then say why.
pub fn untrusted_dir(dir: &Path) -> Option<String> {
    let meta = fs::metadata(dir).ok()?;
    let mode = meta.mode() & 0o7777;
    let sticky_and_ours = mode & 0o1000 != 0 && meta.uid() == sys::euid();
    if !meta.is_dir() || mode & 0o022 == 0 || sticky_and_ours {
        return None;
    }
    Some(format!(
        "the state directory {} is writable by {} (mode {mode:04o}): another user could put a \
         crafted history there, or replace baton's; give baton a private one (mode 0700, \
         STATE_DIRECTORY=DIR; under systemd: StateDirectory=)",
        dir.display(),
        writers(mode)
    ))
}

/// A text of a file (which anyone may have written) for a message: quoted, and cut short.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{:?}…", &text[..at]),
        None => format!("{text:?}"),
    }
}

/// Why a record read from the file cannot be used, if it cannot.
fn invalid(r: &Record) -> Option<String> {
    if !(1..=MAX_GENERATION).contains(&r.generation) {
        return Some(format!(
            "its generation number is not between 1 and {MAX_GENERATION} (2^53)"
        ));
    }
    if let Some(to) = r.rollback_to.filter(|g| !(1..=MAX_GENERATION).contains(g)) {
        return Some(format!(
            "the generation it rolled back to ({to}) is not between 1 and {MAX_GENERATION}"
        ));
    }
    if let Some(rel) = r
        .release
        .as_deref()
        .filter(|rel| !Path::new(rel).is_absolute())
    {
        return Some(format!(
            "its release {rel:?} is not an absolute path (baton records releases resolved; \
             a relative one would be taken from baton's working directory)"
        ));
    }
    let actual = digest(&r.config);
    if r.config_digest != actual {
        return Some(format!(
            "its config digest {} is not the digest of its config ({actual}): baton did not \
             write it so",
            quoted(&r.config_digest)
        ));
    }
    None
}

/// "a FIFO", "a directory", … for a message.
fn file_kind(t: &fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "of an unknown type"
    }
}

/// Keep a file that is no history (a regular file [`load`] refused) aside, under the first
/// name not used yet: `history.json.corrupt`, then `.corrupt.1`, … up to [`ASIDE_MAX`] names,
/// never over an earlier one (a hard link under the new name, then the file removed; where
/// hard links are refused, a rename to a name that does not exist). Returns the name, or why
/// it could not be kept.
pub fn keep_aside(path: &Path) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| FILE.into());
    for i in 0..ASIDE_MAX {
        let aside = path.with_file_name(match i {
            0 => format!("{name}.corrupt"),
            i => format!("{name}.corrupt.{i}"),
        });
        match fs::hard_link(path, &aside) {
            Ok(()) => {
                return match fs::remove_file(path) {
                    Ok(()) => Ok(aside),
                    Err(e) => {
                        let _ = fs::remove_file(&aside);
                        Err(format!(
                            "cannot remove it after linking it as {}: {e}",
                            aside.display()
                        ))
                    }
                };
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e.to_string()),
            Err(_) => match fs::symlink_metadata(&aside) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return fs::rename(path, &aside)
                        .map(|()| aside)
                        .map_err(|e| e.to_string())
                }
                _ => continue,
            },
        }
    }
    Err(format!(
        "{name}.corrupt and {name}.corrupt.1 to .corrupt.{} are all taken: remove the ones \
         you no longer need",
        ASIDE_MAX - 1
    ))
}

/// What becomes of a history file that [`load`] refused, for its warning: a regular file of
/// baton's effective uid is kept aside ([`keep_aside`]); another user's is not (it is not
/// baton's to keep: it is left where it is, and replaced by the history written at the next
/// change); anything else holds no history to keep, and what happens to it is said: a
/// directory stays (no history can be written there), a symbolic link, FIFO, socket or device
/// is replaced by the history written at the next change (a rename: what a link points to is
/// not touched).
pub fn set_aside(path: &Path) -> String {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.uid() != sys::euid() => format!(
            "it is not baton's (owned by uid {}): it is not kept aside, and is replaced by \
             baton's own when the history is next written (once a generation serves or \
             fails)",
            m.uid()
        ),
        Ok(m) if m.is_file() => match keep_aside(path) {
            Ok(aside) => format!("kept as {}", aside.display()),
            Err(e) => format!(
                "it could not be kept aside ({e}) and is written over at the next generation"
            ),
        },
        Ok(m) if m.is_dir() => "nothing is written there while it is a directory".into(),
        Ok(m) => {
            let kind = file_kind(&m.file_type());
            let link = match m.file_type().is_symlink() {
                true => ": the link itself, what it points to is not touched",
                false => "",
            };
            format!(
                "{kind} holds no history to keep aside; it is replaced by a regular file when \
                 the history is next written (once a generation serves or fails){link}"
            )
        }
        Err(_) => "nothing can be written there".into(),
    }
}

/// Writes the history file on a thread of its own, so that the event loop never waits for
/// the disk: [`write_atomic`] fsyncs, and a disk under pressure (a build writing gigabytes
/// next door) can hold an fsync for seconds, during which a loop that waited would not kill a
/// worker at its drain deadline nor answer a client (a new user's trial: a drain of 5 s took
/// 8.9 s). Only the newest content is written when several wait; `unwritten` says why the
/// last write failed, until one succeeds.
pub struct Writer {
    tx: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
    unwritten: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Writer {
    /// A writer of `dir`/[`FILE`] with `write` (tests give a slow one).
    pub fn spawn(
        dir: PathBuf,
        write: impl Fn(&Path, &[u8]) -> io::Result<()> + Send + 'static,
    ) -> io::Result<Writer> {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let (done_tx, done) = std::sync::mpsc::channel();
        let unwritten = std::sync::Arc::new(std::sync::Mutex::new(None));
        let shared = unwritten.clone();
        std::thread::Builder::new()
            .name("history".into())
            .spawn(move || {
                while let Ok(mut bytes) = rx.recv() {
                    // what came meanwhile makes the older contents moot
                    while let Ok(newer) = rx.try_recv() {
                        bytes = newer;
                    }
                    let outcome = write(&dir, &bytes);
                    let mut u = shared.lock().unwrap_or_else(|e| e.into_inner());
                    match outcome {
                        Ok(()) => *u = None,
                        Err(e) => {
                            tracing::warn!(
                                baton_event = "history_write_failed",
                                "cannot write the history {}: {e}; baton goes on serving (the \
                                 history is kept in memory)",
                                dir.join(FILE).display()
                            );
                            *u = Some(e.to_string());
                        }
                    }
                }
                let _ = done_tx.send(());
            })?;
        Ok(Writer {
            tx: Some(tx),
            done,
            unwritten,
        })
    }

    /// Queue `bytes` as the file's next content; never blocks.
    pub fn write(&self, bytes: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(bytes);
        }
    }

    /// Why the last write failed, if it did.
    pub fn unwritten(&self) -> Option<String> {
        self.unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Let the writes queued so far finish, for at most `wait` (baton exits after this).
    pub fn finish(&mut self, wait: std::time::Duration) -> bool {
        drop(self.tx.take());
        self.done.recv_timeout(wait).is_ok()
    }
}

/// Write `bytes` to `dir/name` atomically: a temporary file in `dir` (mode 0600, created
/// anew: whatever was at its name is removed first, never written into), written and fsynced,
/// renamed over `name`, then `dir` fsynced. A reader sees the old file or the new one, never a
/// part; on failure the temporary file is removed and the old file stays.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(name))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()
}

/// The state directory of the baton whose config is named `name` (the config file's stem):
/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; the first of several), else
/// `/var/lib/baton/<name>` for root, else `$XDG_STATE_HOME/baton/<name>`, else
/// `~/.local/state/baton/<name>`. `None`: no home to put it in.
pub fn state_dir(name: &str, root: bool) -> Option<PathBuf> {
    let var = |v: &str| std::env::var_os(v).filter(|x| !x.is_empty());
    if let Some(s) = var("STATE_DIRECTORY") {
        let first = s
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return Some(PathBuf::from(first));
        }
    }
    if root {
        return Some(Path::new("/var/lib/baton").join(name));
    }
    if let Some(x) = var("XDG_STATE_HOME") {
        return Some(PathBuf::from(x).join("baton").join(name));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".local/state/baton").join(name))
}

/// `2026-12-02 14:45:51` (UTC) of ms since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This baton's config file, as `source` records it.
    const C: Option<&str> = Some("/etc/baton/api.toml");

    fn source(kind: Kind, text: &str) -> Source {
        Source {
            kind,
            rollback_to: None,
            config_path: Some("/etc/baton/api.toml".into()),
            config: text.into(),
            release: None,
        }
    }

    fn history() -> History {
        let mut h = History::new(3, 1000, Vec::new());
        h.starting(1, source(Kind::Start, "a"), Some("/r/1".into()));
        assert!(h.served(1, 1000, 1100));
        h.starting(2, source(Kind::Reload, "b"), Some("/r/2".into()));
        assert!(h.failed(2, 2000, 2100, "exited"));
        h.starting(3, source(Kind::Reload, "c"), None);
        h.resolved(3, "/r/3".into());
        assert!(h.served(3, 3000, 3100));
        // generation 1 says `replaced` from the swap on: its last worker gone changes nothing
        assert!(!h.ended(1, 3200, "replaced by generation 3", false));
        h
    }

    #[test]
    fn facts_make_records() {
        let h = history();
        let r: Vec<_> = h
            .records
            .iter()
            .map(|r| (r.generation, r.outcome, r.release.as_deref()))
            .collect();
        assert_eq!(
            r,
            [
                (1, Outcome::Replaced, Some("/r/1")),
                (2, Outcome::Failed, Some("/r/2")),
                (3, Outcome::Serving, Some("/r/3")),
            ]
        );
        assert_eq!(h.records[0].ended_ms, Some(3100), "its end is the swap");
        assert_eq!(
            h.records[0].reason.as_deref(),
            Some("replaced by generation 3")
        );
        assert_eq!(h.records[1].reason.as_deref(), Some("exited"));
        assert_eq!(h.records[2].config_digest, digest("c"));
        // the default rollback: the last one before the serving one that served
        assert_eq!(h.rollback_target(Some(3), None, C).unwrap().generation, 1);
        assert!(h
            .rollback_target(Some(3), Some(2), C)
            .unwrap_err()
            .contains("never served"));
        assert!(h
            .rollback_target(Some(3), Some(3), C)
            .unwrap_err()
            .contains("is the one serving"));
        assert!(h
            .rollback_target(Some(3), Some(9), C)
            .unwrap_err()
            .contains("not in the history"));
    }

    #[test]
    fn failed_reloads_in_a_row_do_not_push_out_what_served() {
        // a new user's trial: history = 3, two generations served, then three failed
        // reloads: only the failures were left, and `baton rollback` found nothing
        let mut h = History::new(3, 1000, Vec::new());
        for g in 1..=2 {
            h.starting(g, source(Kind::Reload, "ok"), Some(format!("/r/{g}")));
            assert!(h.served(g, g * 1000, g * 1000 + 10));
        }
        for g in 3..=5 {
            h.starting(g, source(Kind::Reload, "bad"), Some("/r/broken".into()));
            assert!(h.failed(g, g * 1000, g * 1000 + 10, "exited before it was ready"));
        }
        let kept: Vec<u64> = h.records.iter().map(|r| r.generation).collect();
        assert_eq!(kept, vec![1, 2, 5], "what served, and the newest failure");
        assert_eq!(h.rollback_target(Some(2), None, C).unwrap().generation, 1);
    }

    #[test]
    fn it_keeps_the_last_ones_and_survives_a_new_run() {
        let mut h = history();
        h.starting(4, source(Kind::Rollback, "a"), Some("/r/1".into()));
        assert!(h.served(4, 4000, 4100));
        assert_eq!(h.records.len(), 3);
        // the failed generation 2 went first, not the oldest
        let kept: Vec<u64> = h.records.iter().map(|r| r.generation).collect();
        assert_eq!(kept, vec![1, 3, 4]);
        let text = h.to_json();
        let dir = std::env::temp_dir().join(format!("baton-history-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        write_atomic(&dir, FILE, &text).unwrap();
        let read = load(&dir.join(FILE)).unwrap().records;
        assert_eq!(read, h.records);
        // the next run: generation 3 and 4 of the earlier run no longer serve
        let h2 = History::new(3, 5000, read);
        assert!(h2.records.iter().all(|r| r.outcome != Outcome::Serving));
        // nothing serves in the new run yet: the last one that served with another config
        // than... (none serving): the newest that served
        assert_eq!(h2.rollback_target(None, None, C).unwrap().generation, 4);
        assert_eq!(h2.rollback_target(None, Some(3), C).unwrap().run, 1000);
        // garbage, a truncated file, a directory
        fs::write(dir.join(FILE), b"\x00garbage").unwrap();
        assert!(load(&dir.join(FILE))
            .unwrap_err()
            .contains("not a history file"));
        fs::write(dir.join(FILE), &text[..text.len() / 2]).unwrap();
        assert!(load(&dir.join(FILE))
            .unwrap_err()
            .contains("not a history file"));
        fs::remove_file(dir.join(FILE)).unwrap();
        assert_eq!(load(&dir.join(FILE)).unwrap(), Loaded::default());
        fs::create_dir(dir.join(FILE)).unwrap();
        assert!(load(&dir.join(FILE)).unwrap_err().contains("directory"));
        assert!(write_atomic(&dir, FILE, &text).is_err());
        // the temporary file does not stay
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rollback_skips_what_serves_already() {
        let mut h = History::new(10, 1, Vec::new());
        for (g, text) in [(1, "a"), (2, "a"), (3, "b")] {
            h.starting(g, source(Kind::Reload, text), Some("/r".into()));
            h.served(g, g, g);
        }
        assert_eq!(h.rollback_target(Some(3), None, C).unwrap().generation, 2);
        h.starting(4, source(Kind::Rollback, "a"), Some("/r".into()));
        h.served(4, 4, 4);
        // generation 4 runs what 2 and 1 ran: the one before with another config is 3
        assert_eq!(h.rollback_target(Some(4), None, C).unwrap().generation, 3);
    }

    #[test]
    fn a_slow_disk_never_holds_the_writer_s_caller() {
        // a new user's trial: an fsync that took seconds held the event loop, and a worker's
        // drain deadline passed unkilled
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = written.clone();
        let mut w = Writer::spawn(PathBuf::from("/nonexistent"), move |_, bytes| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            seen.lock().unwrap().push(bytes.to_vec());
            match bytes {
                b"bad" => Err(io::Error::other("disk full")),
                _ => Ok(()),
            }
        })
        .unwrap();
        let t0 = std::time::Instant::now();
        for b in [&b"1"[..], b"2", b"3", b"bad"] {
            w.write(b.to_vec());
        }
        assert!(t0.elapsed() < std::time::Duration::from_millis(100));
        assert!(w.finish(std::time::Duration::from_secs(5)));
        let got = written.lock().unwrap().clone();
        // the newest is always written; what came meanwhile was moot
        assert_eq!(got.last().map(Vec::as_slice), Some(&b"bad"[..]));
        assert!(got.len() <= 2, "the moot contents were skipped: {got:?}");
        assert_eq!(w.unwritten().as_deref(), Some("disk full"));
    }

    #[test]
    fn numbers_go_on_across_runs() {
        assert_eq!(History::new(3, 1, Vec::new()).next_generation(), 1);
        let mut h = History::new(3, 1000, Vec::new());
        h.starting(7, source(Kind::Start, "a"), Some("/r/1".into()));
        h.served(7, 1000, 1001);
        h.starting(8, source(Kind::Reload, "b"), Some("/r/2".into()));
        h.failed(8, 1002, 1003, "exited");
        let next = History::new(3, 5000, h.records.clone());
        assert_eq!(next.next_generation(), 9);
    }

    /// A scratch directory of its own for a test.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("baton-history-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// `load` on its own thread, with a deadline: a load that blocks fails the test.
    fn load_within(path: &Path) -> Result<Loaded, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || tx.send(load(&path)));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("load blocked")
    }

    #[test]
    fn a_fifo_a_symlink_or_a_device_is_refused_without_blocking() {
        // a new user's trial: a FIFO at history.json blocked `baton run` in open() forever
        let d = scratch("fifo");
        let fifo = d.join(FILE);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        let e = load_within(&fifo).unwrap_err();
        assert_eq!(e, "it is not a regular file: a FIFO");
        assert!(set_aside(&fifo).contains("a FIFO holds no history to keep aside"));
        assert!(
            fifo.exists(),
            "left in place until the next write replaces it"
        );
        fs::remove_file(&fifo).unwrap();
        // a symbolic link, even to a regular history file, is not followed
        std::os::unix::fs::symlink("/dev/zero", &fifo).unwrap();
        let e = load_within(&fifo).unwrap_err();
        assert_eq!(e, "it is not a regular file: a symbolic link");
        let what = set_aside(&fifo);
        assert!(
            what.contains("a symbolic link holds no history")
                && what.contains("replaced by a regular file")
                && what.contains("what it points to is not touched"),
            "{what}"
        );
        // and what the message says happens: the next write replaces the link
        write_atomic(&d, FILE, b"{}").unwrap();
        assert!(fs::symlink_metadata(&fifo).unwrap().is_file());
        let e = load_within(Path::new("/dev/null")).unwrap_err();
        assert_eq!(e, "it is not a regular file: a character device");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        // a new user's trial: a 4 GB sparse file was read up to the limit (256 MB) first
        let d = scratch("big");
        let f = fs::File::create(d.join(FILE)).unwrap();
        f.set_len(4 << 30).unwrap();
        let e = load_within(&d.join(FILE)).unwrap_err();
        assert_eq!(
            e,
            "it is larger than 268435456 bytes (4294967296 bytes): not read"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_second_corrupt_file_is_kept_next_to_the_first() {
        // a new user's trial: the second corrupt history overwrote history.json.corrupt
        let d = scratch("aside");
        let file = d.join(FILE);
        for i in 0..ASIDE_MAX {
            fs::write(&file, format!("garbage {i}")).unwrap();
            let what = set_aside(&file);
            let name = match i {
                0 => "history.json.corrupt".to_string(),
                i => format!("history.json.corrupt.{i}"),
            };
            assert_eq!(what, format!("kept as {}", d.join(&name).display()));
            assert!(!file.exists());
        }
        for i in 0..ASIDE_MAX {
            let name = match i {
                0 => "history.json.corrupt".to_string(),
                i => format!("history.json.corrupt.{i}"),
            };
            let kept = fs::read_to_string(d.join(name)).unwrap();
            assert_eq!(kept, format!("garbage {i}"), "none written over");
        }
        fs::write(&file, "one more").unwrap();
        let what = set_aside(&file);
        assert!(
            what.contains("could not be kept aside (history.json.corrupt and")
                && what.contains(".corrupt.9 are all taken"),
            "{what}"
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), "one more");
        assert_eq!(fs::read_dir(&d).unwrap().count(), ASIDE_MAX as usize + 1);
        let _ = fs::remove_dir_all(&d);
    }

    /// A history file of these records (JSON objects), as `load` reads it.
    fn crafted(name: &str, records: &[String]) -> Loaded {
        let d = scratch(name);
        let text = format!(r#"{{"version":1,"records":[{}]}}"#, records.join(","));
        fs::write(d.join(FILE), text).unwrap();
        let loaded = load(&d.join(FILE)).unwrap();
        let _ = fs::remove_dir_all(&d);
        loaded
    }

    fn record_json(generation: &str, release: &str) -> String {
        format!(
            r#"{{"generation":{generation},"run":5,"kind":"reload","release":{release},"config_digest":"{}","config_path":"/etc/baton/api.toml","config":"x","started_ms":1,"swapped_ms":2,"ended_ms":3,"outcome":"replaced"}}"#,
            digest("x")
        )
    }

    /// A record of this config text with this stored digest.
    fn record_with(generation: u64, config: &str, stored_digest: &str) -> String {
        serde_json::json!({
            "generation": generation, "run": 5, "kind": "reload", "release": "/usr/bin",
            "config_digest": stored_digest, "config_path": "/etc/baton/api.toml",
            "config": config, "started_ms": 1, "swapped_ms": 2, "ended_ms": 3,
            "outcome": "replaced",
        })
        .to_string()
    }

    /// A history file at `d` of these records, with this mode.
    fn write_history(d: &Path, records: &[String], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let file = d.join(FILE);
        let text = format!(r#"{{"version":1,"records":[{}]}}"#, records.join(","));
        fs::write(&file, text).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    /// The uid of `nobody`, to own a file of another user (root only).
    const NOBODY: u32 = 65534;

    #[test]
    fn a_history_file_another_user_may_write_is_not_read() {
        // a new user's trial: a history.json of nobody's, mode 0666, with a crafted record
        // (release /usr/bin, a command that ran `id > /tmp/pwn`) was loaded without a word,
        // and `baton rollback --to 50` as root ran it
        let d = scratch("untrusted");
        let evil = "command = [\"/usr/bin/sh\", \"-c\", \"id > /tmp/pwn; exec /srv/api/run\"]\n";
        let records = [record_with(50, evil, &digest(evil))];
        for (mode, who) in [
            (0o666, "group and others (mode 0666)"),
            (0o620, "group (mode 0620)"),
            (0o602, "others (mode 0602)"),
        ] {
            let file = write_history(&d, &records, mode);
            let e = load(&file).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "it is writable by {who}: another user could have crafted it; not read \
                     (baton writes it with mode 0600)"
                )
            );
        }
        let file = write_history(&d, &records, 0o600);
        assert_eq!(load(&file).unwrap().records.len(), 1, "baton's own is read");
        if sys::euid() != 0 {
            eprintln!("not root: a file of another user is not tried");
            let _ = fs::remove_dir_all(&d);
            return;
        }
        std::os::unix::fs::chown(&file, Some(NOBODY), Some(NOBODY)).unwrap();
        let e = load(&file).unwrap_err();
        assert_eq!(
            e,
            format!(
                "it is owned by uid {NOBODY}, not by baton's uid 0: another user could have \
                 crafted it; not read"
            )
        );
        // shown, never started: `baton history --config` as root reads a service user's
        assert_eq!(load_to_show(&file).unwrap().records.len(), 1);
        // it is not baton's to keep aside: it stays, and what becomes of it is said
        let what = set_aside(&file);
        assert!(
            what.starts_with(&format!("it is not baton's (owned by uid {NOBODY})"))
                && what.contains("not kept aside")
                && what.contains("replaced by baton's own when the history is next written"),
            "{what}"
        );
        assert!(file.exists());
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1, "nothing kept aside");
        // and the next write replaces it by baton's own
        write_atomic(&d, FILE, b"{}").unwrap();
        let m = fs::symlink_metadata(&file).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_record_whose_digest_is_not_its_configs_is_dropped() {
        // a new user's trial: the crafted record's config_digest was copied from a benign
        // config, and the rollback's banner showed it
        let benign = "command = [\"/srv/api/run\"]\n";
        let evil = "command = [\"/usr/bin/sh\", \"-c\", \"id > /tmp/pwn\"]\n";
        let loaded = crafted(
            "digest",
            &[
                record_with(1, benign, &digest(benign)),
                record_with(50, evil, &digest(benign)),
                record_with(51, evil, &"f".repeat(1000)),
            ],
        );
        let kept: Vec<u64> = loaded.records.iter().map(|r| r.generation).collect();
        assert_eq!(kept, [1]);
        assert_eq!(loaded.dropped.len(), 2, "{:?}", loaded.dropped);
        assert!(
            loaded.dropped[0].starts_with("a record (generation 50, run started ")
                && loaded.dropped[0].ends_with(&format!(
                    "is dropped: its config digest \"{}\" is not the digest of its config ({}): \
                     baton did not write it so",
                    digest(benign),
                    digest(evil)
                )),
            "{:?}",
            loaded.dropped
        );
        // a long stored digest is cut short in the warning
        assert!(
            loaded.dropped[1].contains(&format!("\"{}\"…", "f".repeat(40))),
            "{}",
            loaded.dropped[1]
        );
        assert!(loaded.dropped[1].len() < 300, "{}", loaded.dropped[1]);
    }

    #[test]
    fn a_record_that_does_not_parse_is_dropped_and_the_others_kept() {
        // a new user's trial: one generation of -1 made the whole file "not a history file",
        // kept aside, and its good records left the live history
        for bad in ["-1", "1.5", r#""3""#, "1e3", "null", "18446744073709551616"] {
            let loaded = crafted(
                "bad-record",
                &[
                    record_json("1", r#""/r/1""#),
                    record_json(bad, r#""/r/bad""#),
                    "42".to_string(),
                    record_json("2", r#""/r/2""#),
                ],
            );
            let kept: Vec<u64> = loaded.records.iter().map(|r| r.generation).collect();
            assert_eq!(kept, [1, 2], "generation {bad}");
            assert_eq!(loaded.dropped.len(), 2, "{:?}", loaded.dropped);
            let why = &loaded.dropped[0];
            assert!(
                why.starts_with(
                    "the record at index 1 (counting from 0) is dropped: it does not parse as \
                     a record: invalid "
                ) && why.contains("expected u64"),
                "generation {bad}: {why}"
            );
            assert!(
                loaded.dropped[1].starts_with("the record at index 2 (counting from 0)"),
                "{:?}",
                loaded.dropped
            );
        }
        // what is no history at all still is refused as a whole
        let d = scratch("bad-file");
        fs::write(d.join(FILE), r#"{"version":1,"records":{}}"#).unwrap();
        assert!(load(&d.join(FILE))
            .unwrap_err()
            .starts_with("it is not a history file: invalid type: map"));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_state_directory_others_may_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let d = scratch("state-dir");
        let chmod = |mode| fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
        for mode in [0o700, 0o755, 0o1777, 0o1770] {
            chmod(mode);
            assert_eq!(untrusted_dir(&d), None, "mode {mode:o}, baton's");
        }
        for (mode, who) in [
            (0o777, "group and others (mode 0777)"),
            (0o770, "group (mode 0770)"),
            (0o703, "others (mode 0703)"),
        ] {
            chmod(mode);
            let why = untrusted_dir(&d).expect("refused");
            assert!(
                why.starts_with(&format!(
                    "the state directory {} is writable by {who}: another user could put a \
                     crafted history there",
                    d.display()
                )) && why.contains("STATE_DIRECTORY"),
                "{why}"
            );
        }
        // sticky, but another user's: that user may replace baton's files
        if sys::euid() == 0 {
            chmod(0o1777);
            std::os::unix::fs::chown(&d, Some(NOBODY), None).unwrap();
            assert!(untrusted_dir(&d).is_some());
        }
        assert_eq!(untrusted_dir(&d.join("missing")), None);
        chmod(0o700);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn the_temporary_file_is_made_anew() {
        // what is at the temporary file's name (here a hard link to another file) is not
        // written into: a file of another user there would get the history, secrets and all
        let d = scratch("tmp");
        fs::write(d.join("other"), "theirs").unwrap();
        let tmp = d.join(format!(".{FILE}.{}.tmp", std::process::id()));
        fs::hard_link(d.join("other"), &tmp).unwrap();
        write_atomic(&d, FILE, b"ours").unwrap();
        assert_eq!(fs::read_to_string(d.join("other")).unwrap(), "theirs");
        assert_eq!(fs::read_to_string(d.join(FILE)).unwrap(), "ours");
        assert!(!tmp.exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_rollback_compares_config_texts() {
        // two generations of one release whose configs differ: the default rollback goes to
        // the other config, whatever digests were stored
        let mut h = History::new(10, 1, Vec::new());
        for (g, text) in [(1, "a"), (2, "b")] {
            h.starting(g, source(Kind::Reload, text), Some("/r".into()));
            h.served(g, g, g);
        }
        h.records[0].config_digest = h.records[1].config_digest.clone();
        assert_eq!(h.rollback_target(Some(2), None, C).unwrap().generation, 1);
    }

    #[test]
    fn generation_numbers_never_wrap() {
        // a new user's trial: a record of generation 2^64-1 made the next ones 0 and 1
        let loaded = crafted(
            "wrap",
            &[
                record_json("3", r#""/r/3""#),
                record_json("18446744073709551615", r#""/r/x""#),
                record_json("9007199254740993", r#""/r/y""#),
                record_json("0", r#""/r/z""#),
            ],
        );
        let kept: Vec<u64> = loaded.records.iter().map(|r| r.generation).collect();
        assert_eq!(kept, [3]);
        assert_eq!(loaded.dropped.len(), 3, "{:?}", loaded.dropped);
        assert!(
            loaded.dropped[0].starts_with("a record (generation 18446744073709551615, run started 1970-01-01 00:00:00 UTC) is dropped: its generation number is not between 1 and 9007199254740992"),
            "{:?}",
            loaded.dropped
        );
        let h = History::new(10, 7, loaded.records);
        assert_eq!(h.next_generation(), 4);
        // the largest number kept still has a next one
        let top = crafted("top", &[record_json("9007199254740992", r#""/r/t""#)]);
        assert!(top.dropped.is_empty());
        assert_eq!(
            History::new(10, 7, top.records).next_generation(),
            MAX_GENERATION + 1
        );
    }

    #[test]
    fn a_relative_release_is_dropped_at_load() {
        // a new user's trial: "releases/v1" was resolved against baton's working directory
        let loaded = crafted(
            "relative",
            &[
                record_json("1", r#""/srv/api/releases/v1""#),
                record_json("2", r#""releases/v1""#),
                record_json("3", "null"),
            ],
        );
        let kept: Vec<u64> = loaded.records.iter().map(|r| r.generation).collect();
        assert_eq!(kept, [1, 3]);
        assert_eq!(loaded.dropped.len(), 1);
        assert!(
            loaded.dropped[0].contains(r#"its release "releases/v1" is not an absolute path"#),
            "{:?}",
            loaded.dropped
        );
    }

    #[test]
    fn a_rollback_does_not_start_another_configs_generation() {
        // a new user's trial: /tmp/c2/api.toml's rollback started /tmp/c1/api.toml's app
        let mut h = History::new(10, 1, Vec::new());
        let mut other = source(Kind::Start, "other app");
        other.config_path = Some("/tmp/c1/api.toml".into());
        h.starting(1, other, Some("/srv/other".into()));
        h.served(1, 1, 2);
        h.ended(1, 3, "baton stopped", true);
        let mine = Some("/tmp/c2/api.toml");
        let mut s = source(Kind::Start, "my app");
        s.config_path = mine.map(String::from);
        h.starting(2, s, Some("/srv/mine".into()));
        h.served(2, 4, 5);
        assert_eq!(
            h.other_configs(mine),
            [("/tmp/c1/api.toml".to_string(), vec![1])]
        );
        assert!(h.other_configs(Some("/tmp/c1/api.toml")).len() == 1);
        let e = h.rollback_target(Some(2), Some(1), mine).unwrap_err();
        assert!(
            e.starts_with(
                "generation 1 ran another config, /tmp/c1/api.toml, not this baton's \
                 /tmp/c2/api.toml: "
            ) && e.contains("STATE_DIRECTORY"),
            "{e}"
        );
        let e = h.rollback_target(Some(2), None, mine).unwrap_err();
        assert!(
            e.starts_with("no earlier good generation to roll back to")
                && e.contains("other configs (/tmp/c1/api.toml)"),
            "{e}"
        );
        // the demo (no config file) is another config than any file's
        assert!(h.rollback_target(Some(2), Some(1), None).is_err());
        // a record whose config file is unknown is not refused
        let mut unknown = source(Kind::Reload, "x");
        unknown.config_path = None;
        h.starting(3, unknown, Some("/srv/x".into()));
        h.served(3, 6, 7);
        assert_eq!(
            h.rollback_target(Some(3), None, mine).unwrap().generation,
            2
        );
        assert!(h.other_configs(mine).len() == 1);
    }

    #[test]
    fn the_replaced_generation_says_so_at_the_swap() {
        // a new user's trial: during a drain two generations said `serving`
        let mut h = History::new(10, 1, Vec::new());
        h.starting(1, source(Kind::Start, "a"), Some("/r/1".into()));
        assert!(h.served(1, 10, 20));
        h.starting(2, source(Kind::Reload, "a"), Some("/r/2".into()));
        assert!(h.served(2, 30, 40));
        let serving: Vec<u64> = h
            .records
            .iter()
            .filter(|r| r.outcome == Outcome::Serving)
            .map(|r| r.generation)
            .collect();
        assert_eq!(serving, [2]);
        let old = &h.records[0];
        assert_eq!(old.outcome, Outcome::Replaced);
        assert_eq!(old.ended_ms, Some(40), "it served until the swap");
        assert_eq!(old.reason.as_deref(), Some("replaced by generation 2"));
        // its drain ends: nothing changes; nor when baton stops during the drain
        assert!(!h.ended(1, 90, "baton stopped", true));
        assert_eq!(h.records[0].outcome, Outcome::Replaced);
        assert!(h.ended(2, 95, "baton stopped", true));
        assert_eq!(h.records[1].outcome, Outcome::Stopped);
    }

    #[test]
    fn dates_and_digests() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_796_222_751_000), "2026-12-02 14:45:51");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(digest(""), "fnv1a64:cbf29ce484222325");
        assert_eq!(digest("a"), "fnv1a64:af63dc4c8601ec8c");
    }
}
