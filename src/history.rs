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
//! Generation numbers start at 1 on each run of baton, so a record also names its run (the
//! run's start, in milliseconds since the epoch).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the state directory.
pub const FILE: &str = "history.json";

/// The file format's version.
pub const VERSION: u32 = 1;

/// A history file larger than this is not read (100 generations of 1 MiB configs, escaped).
const MAX_FILE: u64 = 256 << 20;

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

/// The history file's content.
#[derive(Debug, Serialize, Deserialize)]
struct FileContent {
    version: u32,
    records: Vec<Record>,
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

/// FNV-1a (64 bits) of the text, as `fnv1a64:<16 hex digits>`: a non-cryptographic digest
/// that tells two configs apart at a glance (not a defence against a forged file: the file is
/// baton's own, mode 0600).
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
    pub fn next_generation(&self) -> u64 {
        self.records
            .iter()
            .map(|r| r.generation)
            .max()
            .map_or(1, |g| g.saturating_add(1))
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

    /// A generation began to serve. Returns whether the records changed.
    pub fn served(&mut self, generation: u64, started_ms: u64, swapped_ms: u64) -> bool {
        let Some(mut r) = self.record_of(generation, started_ms) else {
            return false;
        };
        r.swapped_ms = Some(swapped_ms);
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

    /// A generation of this run is gone: replaced, or baton stopped (`stopped`). A generation
    /// that never served nor failed (stopped while it started) is forgotten.
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
    pub fn rollback_target(
        &self,
        serving: Option<u64>,
        to: Option<u64>,
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
            .filter(|r| r.served())
            .find(|r| {
                same.map_or(true, |s| {
                    s.release != r.release || s.config_digest != r.config_digest
                })
            })
            .ok_or_else(|| {
                "no earlier good generation to roll back to: the history has no generation \
                 before the serving one that served with another release or config \
                 (`baton history` lists it)"
                    .to_string()
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

/// Read the history file: its records, or why it could not be used (`Err`; a missing file is
/// `Ok` with none).
pub fn load(path: &Path) -> Result<Vec<Record>, String> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err(if meta.is_dir() {
            "it is a directory, not a file".into()
        } else {
            "it is not a regular file".into()
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("it is larger than {MAX_FILE} bytes"));
    }
    let content: FileContent =
        serde_json::from_slice(&bytes).map_err(|e| format!("it is not a history file: {e}"))?;
    if content.version != VERSION {
        return Err(format!(
            "its version is {}, this baton reads version {VERSION}",
            content.version
        ));
    }
    Ok(content.records)
}

/// Write `bytes` to `dir/name` atomically: a temporary file in `dir` (mode 0600), written and
/// fsynced, renamed over `name`, then `dir` fsynced. A reader sees the old file or the new
/// one, never a part; on failure the temporary file is removed and the old file stays.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
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
        assert!(h.ended(1, 3200, "replaced by generation 3", false));
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
        assert_eq!(h.records[0].ended_ms, Some(3200));
        assert_eq!(h.records[1].reason.as_deref(), Some("exited"));
        assert_eq!(h.records[2].config_digest, digest("c"));
        // the default rollback: the last one before the serving one that served
        assert_eq!(h.rollback_target(Some(3), None).unwrap().generation, 1);
        assert!(h
            .rollback_target(Some(3), Some(2))
            .unwrap_err()
            .contains("never served"));
        assert!(h
            .rollback_target(Some(3), Some(3))
            .unwrap_err()
            .contains("is the one serving"));
        assert!(h
            .rollback_target(Some(3), Some(9))
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
        assert_eq!(h.rollback_target(Some(2), None).unwrap().generation, 1);
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
        let read = load(&dir.join(FILE)).unwrap();
        assert_eq!(read, h.records);
        // the next run: generation 3 and 4 of the earlier run no longer serve
        let h2 = History::new(3, 5000, read);
        assert!(h2.records.iter().all(|r| r.outcome != Outcome::Serving));
        // nothing serves in the new run yet: the last one that served with another config
        // than... (none serving): the newest that served
        assert_eq!(h2.rollback_target(None, None).unwrap().generation, 4);
        assert_eq!(h2.rollback_target(None, Some(3)).unwrap().run, 1000);
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
        assert_eq!(load(&dir.join(FILE)).unwrap(), Vec::new());
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
        assert_eq!(h.rollback_target(Some(3), None).unwrap().generation, 2);
        h.starting(4, source(Kind::Rollback, "a"), Some("/r".into()));
        h.served(4, 4, 4);
        // generation 4 runs what 2 and 1 ran: the one before with another config is 3
        assert_eq!(h.rollback_target(Some(4), None).unwrap().generation, 3);
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

    #[test]
    fn dates_and_digests() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_796_222_751_000), "2026-12-02 14:45:51");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(digest(""), "fnv1a64:cbf29ce484222325");
        assert_eq!(digest("a"), "fnv1a64:af63dc4c8601ec8c");
    }
}
