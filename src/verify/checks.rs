//! What `baton verify` concludes from what it observed: pure functions of the observations
//! (baton's events, the load's requests, the idle connections, /proc samples), testable
//! without a process. One [`Check`] per row of the table.

use std::time::Duration;

use serde::Serialize;

use super::events::Ev;
use crate::supervisor::fmt_duration;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
    NotApplicable,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier (`in_flight`), for `--json`.
    pub id: &'static str,
    /// What the table calls it.
    pub check: &'static str,
    pub verdict: Verdict,
    /// The measured figure.
    pub figure: String,
    /// One line: what to do (empty when there is nothing to do).
    pub advice: String,
}

/// One request of the load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub start_us: u64,
    pub end_us: u64,
    /// `None`: a complete 2xx answer; else the failure's kind (`reset`, `eof`, `timeout`,
    /// `bad_status`, `refused`, …).
    pub failure: Option<String>,
    /// It went out on a kept-alive connection that had carried earlier requests, and no byte
    /// of its answer came: what a server that closes kept-alive connections cuts.
    pub reused_unanswered: bool,
    /// The load it belongs to: its path, and whether it keeps connections alive.
    pub load: std::sync::Arc<(String, bool)>,
}

/// What became of the idle keep-alive connections used again after a stop signal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Idle {
    /// Answered on the connection.
    pub answered: u32,
    /// The app had closed it before it was used: clean.
    pub closed: u32,
    /// The request was sent and no complete answer came.
    pub cut: u32,
    /// Closed by the app before the stop signal (its idle timeout): they tell nothing of
    /// the stop.
    pub early: u32,
    /// The app answered with `Connection: close`: it keeps no connection alive.
    pub not_kept: u32,
    /// Why the idle connections of a reload could not be opened (the last reason).
    pub unopened: Option<String>,
}

/// Everything `baton verify` observed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub bind_mode: bool,
    pub readiness_timeout: Duration,
    /// `readiness.kind`'s name (`notify`, `listen`, …).
    pub readiness_kind: &'static str,
    /// Each socket: verify's private address as baton names it, and the config's.
    pub addresses: Vec<(String, String)>,
    pub drain_timeout: Duration,
    /// baton's events, in order.
    pub events: Vec<Ev>,
    /// The load's requests (the final stop excluded).
    pub requests: Vec<Request>,
    /// Generation 1 became ready (µs), and when its first answer came, or why none did.
    pub first_answer: Option<(u64, Result<u64, String>)>,
    /// Median latency of the load's good requests, µs.
    pub median_us: Option<u64>,
    pub idle: Idle,
    /// Processes that outlived their worker: pid and command line.
    pub strays: Vec<(i32, String)>,
    /// verify reloaded no more once it found them.
    pub strays_ended_reloads: bool,
    /// verify reloaded no more once a worker was killed at its drain deadline (each further
    /// round would only wait that long again).
    pub kill_ended_reloads: bool,
    /// At each swap: RSS of the old and the new generation, KiB.
    pub memory: Vec<(u64, u64)>,
    /// MemAvailable of the host, KiB.
    pub mem_available_kib: Option<u64>,
    /// A ready worker's descriptors beyond stdio and its sockets: pid, (fd, what).
    pub fds: Option<(i32, Vec<(i32, String)>)>,
    /// How many reloads were asked for, and the failed ones' reasons.
    pub reloads: u32,
    pub reload_failures: Vec<String>,
    /// The app's last lines of output (baton's own left out).
    pub app_output: Vec<String>,
    /// A signal to verify (Ctrl-C) stopped it.
    pub interrupted: bool,
    /// The app runs on Node (its command is `node …` or a `.js` file): advice may name Node's
    /// ways.
    pub node: bool,
    /// Why verify could not go on, when it could not (generation 1 never served).
    pub aborted: Option<String>,
    /// When verify stopped baton (µs): the stop signals from then on are the final stop's,
    /// with no load.
    pub stopped_us: Option<u64>,
}

fn check(id: &'static str, name: &'static str, verdict: Verdict, figure: String) -> Check {
    Check {
        id,
        check: name,
        verdict,
        figure,
        advice: String::new(),
    }
}

impl Check {
    /// The advice, for a warning or a failure only.
    fn advise(mut self, advice: impl Into<String>) -> Check {
        if matches!(self.verdict, Verdict::Warn | Verdict::Fail) {
            self.advice = advice.into();
        }
        self
    }
}

fn ms(us: u64) -> String {
    match us {
        0..=9_999 => format!("{:.1}ms", us as f64 / 1000.0),
        _ => fmt_duration(Duration::from_micros(us)),
    }
}

/// Every check, in the order of the table.
pub fn evaluate(o: &Observed) -> Vec<Check> {
    vec![
        takes_sockets(o),
        start_up(o),
        stays_up(o),
        honest(o),
        in_flight(o),
        keep_alive(o),
        stops_in_time(o),
        strays(o),
        memory(o),
        fds(o),
    ]
}

impl Observed {
    /// "its output says why", with its last lines.
    fn output_says(&self) -> String {
        match self.app_output.is_empty() {
            true => "its output says why (--keep keeps it)".into(),
            false => format!("its last lines: {}", self.app_output.join(" | ")),
        }
    }

    /// `text` (baton's words) with each private address followed by the config's, which is
    /// the one the user knows.
    fn shown(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (private, production) in &self.addresses {
            out = out.replace(
                private,
                &format!("{private} (verify's stand-in for {production})"),
            );
        }
        out
    }
}

fn served(o: &Observed) -> bool {
    o.events.iter().any(|e| e.is("generation_serving"))
}

fn takes_sockets(o: &Observed) -> Check {
    let name = "takes the sockets";
    let ok = o.requests.iter().filter(|r| r.failure.is_none()).count();
    let binds = o.events.iter().filter(|e| e.is("worker_bind")).count();
    let (ports, paths) = own_binds(o);
    let how = match o.bind_mode {
        true => format!("handover bind: {binds} bind(s) got baton's socket"),
        false => "handover fds".to_string(),
    };
    let mut figure = format!("{how}; {ok} of {} requests answered", o.requests.len());
    if let Some(first) = ports.first() {
        figure.push_str(&format!(
            "; the app also bound {} port(s) of its own (first: {})",
            ports.len(),
            first.message
        ));
    }
    if !paths.is_empty() {
        figure.push_str(&format!(
            "; the app bound unix socket(s) of its own, left to it: {}",
            paths.join(", ")
        ));
    }
    if !served(o) {
        return check(
            "sockets",
            name,
            Verdict::NotApplicable,
            "no generation got ready".into(),
        );
    }
    if o.requests.is_empty() {
        // verify stopped before its load: the first request says what there is to say
        return match &o.first_answer {
            Some((_, Ok(_))) => check(
                "sockets",
                name,
                Verdict::Pass,
                format!("{how}; the first request was answered (no load ran)"),
            ),
            _ => check(
                "sockets",
                name,
                Verdict::NotApplicable,
                "no load ran".into(),
            ),
        };
    }
    if ok == 0 {
        let advice = match o.bind_mode {
            true => {
                "the app never answered on the socket: does it bind the port of [sockets] \
                     (the log's worker_bind_other lines name what it bound)?"
            }
            false => {
                "the app never answered on fd 3: make it take the socket from systemd \
                      (LISTEN_FDS), or use handover = \"bind\" for an app that binds its port"
            }
        };
        return check("sockets", name, Verdict::Fail, figure).advise(advice);
    }
    let verdict = if ports.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Warn
    };
    check("sockets", name, verdict, figure).advise(
        "the app binds ports baton does not manage: those are refused while two generations \
         run; add them to [sockets] if they take traffic",
    )
}

fn start_up(o: &Observed) -> Check {
    let name = "start-up time";
    let mut times = Vec::new();
    for s in o.events.iter().filter(|e| e.is("worker_start")) {
        if let Some(r) = o
            .events
            .iter()
            .find(|e| e.is("worker_ready") && e.worker == s.worker && e.mono_us >= s.mono_us)
        {
            times.push(r.mono_us - s.mono_us);
        }
    }
    let not_ready: Vec<&Ev> = o
        .events
        .iter()
        .filter(|e| e.is("worker_not_ready") || e.is("generation_failed") || e.is("reload_failed"))
        .collect();
    let timeout = o.readiness_timeout;
    let worst = times.iter().copied().max();
    let figure = match worst {
        Some(w) => format!(
            "worst {} of {} worker start(s) (readiness.timeout {})",
            ms(w),
            times.len(),
            fmt_duration(timeout)
        ),
        None => format!(
            "no worker got ready (readiness.timeout {})",
            fmt_duration(timeout)
        ),
    };
    let advice = "make the app start faster, or raise readiness.timeout (and TimeoutStartSec=)";
    if let Some(e) = not_ready.first() {
        let m = &e.message;
        let advice = if m.contains("no READY=1") {
            match o.bind_mode {
                true => "the app never sent READY=1: use readiness kind = \"listen\", which needs \
                         no app change"
                    .to_string(),
                false => "the app never sent READY=1: use readiness kind = \"accepting\", which \
                          needs no app change"
                    .to_string(),
            }
        } else if m.contains("no bind() of the app asked for") {
            let ours: Vec<&str> = o.addresses.iter().map(|(_, p)| p.as_str()).collect();
            format!(
                "the app binds another address than [sockets] says ({}): make them agree",
                ours.join(", ")
            )
        } else if !o.bind_mode && m.contains("waits for connections on") {
            // its own port, most likely: the production one, which verify cannot keep it from
            "no process of the app waits for connections on baton's socket: an app that binds \
             its own port (`listen(3000)`) needs handover = \"bind\" (it then runs unchanged), \
             or must take fd 3 (the README's recipes)"
                .to_string()
        } else if m.contains("not ready after") {
            advice.to_string()
        } else {
            match own_binds(o).0.first() {
                Some(p) => format!(
                    "the app exits before it is ready; it binds {} of its own, which the old \
                     generation still holds while the new one starts (EADDRINUSE): add it to \
                     [sockets], or bind it only once; {}",
                    p.address,
                    o.output_says()
                ),
                None => format!(
                    "the app exits (or cannot start) before it is ready: {}",
                    o.output_says()
                ),
            }
        };
        let figure = format!("{figure}; {}", o.shown(m));
        return check("start_up", name, Verdict::Fail, figure).advise(advice);
    }
    if worst.is_none() && o.interrupted {
        // stopped before the timeout could run out: nothing to judge
        return check(
            "start_up",
            name,
            Verdict::NotApplicable,
            "verify was stopped before any worker got ready".into(),
        );
    }
    let verdict = match worst {
        None => Verdict::Fail,
        Some(w) if Duration::from_micros(w) > timeout => Verdict::Fail,
        Some(w) if Duration::from_micros(w) > timeout / 2 => Verdict::Warn,
        Some(_) => Verdict::Pass,
    };
    check("start_up", name, verdict, figure).advise(advice)
}

/// Addresses the app bound of its own, once each: ports (refused while two generations hold
/// them), and unix paths (each generation's bind replaces the path).
fn own_binds(o: &Observed) -> (Vec<&Ev>, Vec<&str>) {
    let mut ports: Vec<&Ev> = Vec::new();
    let mut paths: Vec<&str> = Vec::new();
    for e in o.events.iter().filter(|e| e.is("worker_bind_other")) {
        match e.address.strip_prefix("unix:") {
            Some(p) if !paths.contains(&p) => paths.push(p),
            Some(_) => {}
            None if !ports.iter().any(|q| q.address == e.address) => ports.push(e),
            None => {}
        }
    }
    (ports, paths)
}

fn stays_up(o: &Observed) -> Check {
    let name = "stays up once ready";
    let crashes: Vec<&Ev> = o.events.iter().filter(|e| e.is("worker_crash")).collect();
    let Some(last) = crashes.last() else {
        return match served(o) {
            true => check(
                "stays_up",
                name,
                Verdict::Pass,
                "no worker died while serving".into(),
            ),
            false => check(
                "stays_up",
                name,
                Verdict::NotApplicable,
                "no generation got ready".into(),
            ),
        };
    };
    let at: Vec<u64> = crashes.iter().map(|e| e.mono_us).collect();
    let cut = o.requests.iter().filter(|r| cut_by_crash(r, &at)).count();
    let figure = format!(
        "{} worker(s) died while serving, {cut} request(s) cut (last: {})",
        crashes.len(),
        o.shown(&last.message)
    );
    let (ports, _) = own_binds(o);
    let advice = match ports.first() {
        Some(p) => format!(
            "the app binds {} of its own, which the old generation still holds while the new \
             one starts (EADDRINUSE): add it to [sockets], or bind it only once; {}",
            p.address,
            o.output_says()
        ),
        None => format!(
            "the app exits on its own after it is ready: {}",
            o.output_says()
        ),
    };
    check("stays_up", name, Verdict::Fail, figure).advise(advice)
}

/// How long the first request after generation 1 reported ready waits for its answer.
pub const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(5);
/// The first answer after generation 1 reported ready: later than this is a lie.
pub const HONEST_FAIL: Duration = Duration::from_millis(500);
/// … and later than this is suspect.
pub const HONEST_WARN: Duration = Duration::from_millis(100);

fn honest(o: &Observed) -> Check {
    let name = "readiness is honest";
    let Some((ready, answer)) = &o.first_answer else {
        return check(
            "honest",
            name,
            Verdict::NotApplicable,
            "no generation got ready".into(),
        );
    };
    let after = match answer {
        Err(why) => {
            // a worker that died before it answered is start-up's failure, not a lie
            let died = o.events.iter().find(|e| {
                e.is("worker_crash")
                    && e.mono_us >= *ready
                    && e.mono_us <= ready + FIRST_ANSWER_WAIT.as_micros() as u64
            });
            if let Some(d) = died {
                return check(
                    "honest",
                    name,
                    Verdict::NotApplicable,
                    format!(
                        "a worker died {} after it was ready, before the first request was \
                         answered ({why}): see \"stays up once ready\"",
                        ms(d.mono_us - ready)
                    ),
                );
            }
            return check(
                "honest",
                name,
                Verdict::Fail,
                format!("a request sent when the worker was ready got no answer: {why}"),
            )
            .advise("report ready only once the app accepts and answers on its socket");
        }
        Ok(at) => at.saturating_sub(*ready),
    };
    // an app that is slow anyway is judged against its own pace
    let median = Duration::from_micros(o.median_us.unwrap_or(0));
    let figure = format!("first answer {} after ready", ms(after));
    let after = Duration::from_micros(after);
    let verdict = if after > HONEST_FAIL + 2 * median {
        Verdict::Fail
    } else if after > HONEST_WARN + 2 * median {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    let advice = match o.readiness_kind {
        "accepting" | "listen" => {
            "the app waits on its socket before it can answer: take the socket (or listen) \
             only once it serves, or use readiness kind \"exec\" with a command that asks the \
             app itself"
        }
        _ => {
            "the app reports ready before it serves: send READY=1 once the server listens and \
             answers (or use readiness kind \"accepting\" / \"listen\", which need no app \
             change)"
        }
    };
    check("honest", name, verdict, figure).advise(advice)
}

/// Failures by kind, as `reset 2, eof 1`.
fn kinds<'a>(failed: impl Iterator<Item = &'a Request>) -> String {
    let mut counts: std::collections::BTreeMap<&str, u32> = Default::default();
    for r in failed {
        *counts
            .entry(r.failure.as_deref().unwrap_or("?"))
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// When baton killed a worker at its drain deadline (µs).
fn kills(o: &Observed) -> Vec<u64> {
    o.events
        .iter()
        .filter(|e| e.is("worker_killed"))
        .map(|e| e.mono_us)
        .collect()
}

/// A failed request that ended as a kill at the drain deadline did (within a second of it):
/// "stops in time" counts it, not "in-flight".
fn cut_by_kill(r: &Request, kills: &[u64]) -> bool {
    r.failure.is_some()
        && kills
            .iter()
            .any(|k| r.end_us + 100_000 >= *k && r.end_us <= k + 1_000_000)
}

/// Fewer requests in flight at the stop signals than this, on average, tell nothing.
pub const MIN_IN_FLIGHT_PER_STOP: usize = 2;

fn in_flight(o: &Observed) -> Check {
    let name = "in-flight requests survive SIGTERM";
    let stops = reload_stops(o);
    if stops.is_empty() || !served(o) {
        return check(
            "in_flight",
            name,
            Verdict::NotApplicable,
            "no generation was retired (no reload got that far)".into(),
        );
    }
    let kills = kills(o);
    let crashes = crashes(o);
    let at_stop = |r: &&Request| stops.iter().any(|t| r.start_us < *t && r.end_us > *t);
    let in_flight = o.requests.iter().filter(at_stop).count();
    // a kill at the deadline is "stops in time"'s, a crash "stays up"'s, and a kept-alive
    // connection closed under a request "keep-alive"'s
    let failed = |r: &&Request| {
        r.failure.is_some()
            && !cut_by_kill(r, &kills)
            && !cut_by_crash(r, &crashes)
            && !closing_cut(r, &stops)
    };
    let cut: Vec<&Request> = o.requests.iter().filter(at_stop).filter(failed).collect();
    let other: Vec<&Request> = o
        .requests
        .iter()
        .filter(failed)
        .filter(|r| !at_stop(r))
        .collect();
    let mut figure = format!(
        "{} of {in_flight} requests in flight at {} stop signal(s) cut",
        cut.len(),
        stops.len()
    );
    if !cut.is_empty() {
        figure.push_str(&format!(" ({})", kinds(cut.iter().copied())));
    }
    if !other.is_empty() {
        figure.push_str(&format!(
            "; {} other request(s) failed ({})",
            other.len(),
            kinds(other.iter().copied())
        ));
    }
    // a request "in flight" may still wait in the socket's queue, which the next generation
    // serves whatever the old one does: a few tell nothing
    let few = in_flight < MIN_IN_FLIGHT_PER_STOP * stops.len();
    let verdict = if !cut.is_empty() || !other.is_empty() {
        Verdict::Fail
    } else if few {
        figure.push_str(&format!(
            ": too few to tell (at least {MIN_IN_FLIGHT_PER_STOP} a stop signal wanted)"
        ));
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    let advice = if verdict == Verdict::Warn {
        "too few requests were in flight at the stop signals to tell: pass --slow-path with a \
         path that takes a while (e.g. 1s), and more --reloads"
    } else {
        "on the stop signal, stop accepting, finish the requests in flight (never destroy a \
         busy connection), then exit: see \"What your app must do\" in the README"
    };
    check("in_flight", name, verdict, figure).advise(advice)
}

/// The stop signals of the reloads (not the final stop's).
fn reload_stops(o: &Observed) -> Vec<u64> {
    o.events
        .iter()
        .filter(|e| e.is("generation_retire"))
        .map(|e| e.mono_us)
        .filter(|t| o.stopped_us.map_or(true, |s| *t < s))
        .collect()
}

/// How long before a stop signal a request on a kept-alive connection may have been sent and
/// still be unread by the app when it took the connection for idle and closed it.
pub const UNREAD_BEFORE_STOP_US: u64 = 2_000;

/// A request on a reused kept-alive connection, sent after a stop signal (within 10 s) or
/// just before it (unread yet), that ended with no byte of an answer: the app closed the
/// connection under it, taking it for idle.
fn closing_cut(r: &Request, stops: &[u64]) -> bool {
    r.failure.is_some()
        && r.reused_unanswered
        && stops
            .iter()
            .any(|t| r.start_us + UNREAD_BEFORE_STOP_US >= *t && r.start_us <= t + 10_000_000)
}

/// A failed request that ended when a worker died on its own (from 100 ms before to 1 s
/// after): "stays up once ready" counts it.
fn cut_by_crash(r: &Request, crashes: &[u64]) -> bool {
    r.failure.is_some()
        && crashes
            .iter()
            .any(|c| r.end_us + 100_000 >= *c && r.end_us <= c + 1_000_000)
}

fn crashes(o: &Observed) -> Vec<u64> {
    o.events
        .iter()
        .filter(|e| e.is("worker_crash"))
        .map(|e| e.mono_us)
        .collect()
}

fn keep_alive(o: &Observed) -> Check {
    let name = "keep-alive closes cleanly";
    let i = &o.idle;
    let stops = reload_stops(o);
    let kills = kills(o);
    let racing = o
        .requests
        .iter()
        .filter(|r| {
            closing_cut(r, &stops) && !cut_by_kill(r, &kills) && !cut_by_crash(r, &crashes(o))
        })
        .count() as u32;
    let total = i.answered + i.closed + i.cut;
    if total == 0 && racing == 0 {
        let figure = if i.not_kept > 0 && i.early == 0 {
            "the app keeps no connection alive (it answers with `Connection: close`)".into()
        } else if i.early > 0 {
            format!(
                "the app closed all {} idle connection(s) before the stop signal (its \
                 keep-alive timeout is shorter than the rollout); none was left to test \
                 across the stop",
                i.early
            )
        } else if let Some(why) = &i.unopened {
            format!("the idle connections could not be opened before a reload: {why}")
        } else {
            "no idle connection was used after a stop signal".into()
        };
        return check("keep_alive", name, Verdict::NotApplicable, figure);
    }
    let mut figure = format!(
        "{total} idle connection(s) used after the stop signal: {} closed by the app first, {} \
         answered, {} cut",
        i.closed, i.answered, i.cut
    );
    if i.early > 0 {
        figure.push_str(&format!(
            " ({} more closed by the app before the stop signal, not counted)",
            i.early
        ));
    }
    if racing > 0 {
        figure.push_str(&format!(
            "; {racing} request(s) of the load sent on a kept-alive connection after a stop \
             signal got no answer (the app closed it under them)"
        ));
    }
    let verdict = if i.cut > 0 || racing > 0 {
        Verdict::Fail
    } else if i.closed > 0 && i.answered == 0 {
        // every one closed by the time verify used it, 100 ms after the stop signal: the app
        // closes idle connections at once, and a request a client sends on one just then is
        // lost; that none was caught this time is luck
        figure.push_str(
            "; the app closed every idle connection right at its stop signal: a request sent \
             on one just then is lost (none was, this time)",
        );
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    check("keep_alive", name, verdict, figure).advise(
        "after the stop signal, close a kept-alive connection only when it is idle and tell the \
         client first: answer its next request with `Connection: close` (see \"What your app \
         must do\" in the README)",
    )
}

fn stops_in_time(o: &Observed) -> Check {
    let name = "stops in time";
    let killed: Vec<&Ev> = o.events.iter().filter(|e| e.is("worker_killed")).collect();
    let drains: Vec<u64> = o.events.iter().filter_map(|e| e.drain_ms).collect();
    let timeout = o.drain_timeout;
    let worst = drains.iter().copied().max();
    let figure = match worst {
        Some(w) => format!(
            "slowest exit {} after the stop signal, of {} (drain.timeout {})",
            ms(w * 1000),
            drains.len(),
            fmt_duration(timeout)
        ),
        None => "no worker was stopped".into(),
    };
    let advice = format!(
        "exit once the requests in flight are done: handle the stop signal, and answer a \
         kept-alive connection's next request with `Connection: close`{}; or raise \
         drain.timeout if requests really take that long",
        match o.node {
            true => " (Node 20's server.close() goes on serving busy ones)",
            false => "",
        }
    );
    if !killed.is_empty() {
        let kills = kills(o);
        let cut = o.requests.iter().filter(|r| cut_by_kill(r, &kills)).count();
        let ended = match o.kill_ended_reloads {
            true => format!(
                "; it reloaded no more after reload {}: one is proof",
                o.reloads
            ),
            false => String::new(),
        };
        let figure = format!(
            "{} worker(s) killed at the drain deadline ({}), {cut} request(s) cut by the kill; \
             {figure}{ended}",
            killed.len(),
            fmt_duration(timeout)
        );
        return check("stops", name, Verdict::Fail, figure).advise(advice.clone());
    }
    let verdict = match worst {
        None => Verdict::NotApplicable,
        // a worker stopped before it ever served is start-up's to judge
        Some(_) if !served(o) => Verdict::NotApplicable,
        Some(w) if Duration::from_millis(w) > timeout / 2 => Verdict::Warn,
        Some(_) => Verdict::Pass,
    };
    check("stops", name, verdict, figure).advise(advice)
}

fn strays(o: &Observed) -> Check {
    let name = "no stray processes";
    if o.strays.is_empty() {
        // what baton's SIGKILL to a worker's process group took once the worker had exited
        let killed = o
            .events
            .iter()
            .filter(|e| e.is("orphan_reaped") && e.message.ends_with("signal SIGKILL"))
            .count();
        if killed > 0 {
            return check(
                "strays",
                name,
                Verdict::Warn,
                format!(
                    "{killed} helper process(es) still running when their worker exited were \
                     SIGKILLed by baton (its process group's cleanup): they had no chance to \
                     end cleanly"
                ),
            )
            .advise(
                "stop the app's helper processes before it exits: pass them the stop signal \
                 and wait for them",
            );
        }
        return check(
            "strays",
            name,
            Verdict::Pass,
            "no process outlived its worker".into(),
        );
    }
    let list: Vec<String> = o
        .strays
        .iter()
        .take(3)
        .map(|(pid, cmd)| format!("{pid} ({cmd})"))
        .collect();
    let more = if o.strays.len() > list.len() {
        ", …"
    } else {
        ""
    };
    check(
        "strays",
        name,
        Verdict::Fail,
        format!(
            "{} process(es) outlived their worker: {}{more} (verify killed them{})",
            o.strays.len(),
            list.join(", "),
            match o.strays_ended_reloads {
                true => format!(
                    "; it reloaded no more after reload {}: one is proof",
                    o.reloads
                ),
                false => String::new(),
            }
        ),
    )
    .advise(
        "stop the app's helper processes when it exits (they escape its process group: \
         setsid, daemonizing); under systemd they live until the service stops",
    )
}

fn memory(o: &Observed) -> Check {
    let name = "memory during a reload";
    let Some(&(old, new)) = o.memory.iter().max_by_key(|(a, b)| a + b) else {
        return check(
            "memory",
            name,
            Verdict::NotApplicable,
            "no swap was observed".into(),
        );
    };
    let peak = old + new;
    let mut figure = format!(
        "peak {} MiB at a swap (old {} MiB + new {} MiB)",
        peak / 1024,
        old / 1024,
        new / 1024
    );
    let mut c = check("memory", name, Verdict::Pass, String::new());
    if let Some(avail) = o.mem_available_kib {
        figure.push_str(&format!("; the host has {} MiB available", avail / 1024));
        if new > avail {
            c.advice = "the host would not hold a second generation: set max_starting to start \
                        the new workers a few at a time"
                .into();
        }
    }
    c.figure = figure;
    c
}

fn fds(o: &Observed) -> Check {
    let name = "fds";
    let Some((pid, extra)) = &o.fds else {
        return check(
            "fds",
            name,
            Verdict::NotApplicable,
            "no worker to look at".into(),
        );
    };
    let figure = match extra.len() {
        0 => format!("worker {pid}: stdio and its sockets only"),
        n => {
            let list: Vec<String> = extra
                .iter()
                .take(6)
                .map(|(fd, what)| format!("{fd} {what}"))
                .collect();
            let more = if n > 6 { ", …" } else { "" };
            format!(
                "worker {pid} holds {n} more at start: {}{more}",
                list.join(", ")
            )
        }
    };
    check("fds", name, Verdict::Pass, figure)
}

/// Whether any check failed.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.verdict == Verdict::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(mono_us: u64, event: &str, worker: Option<i32>) -> Ev {
        Ev {
            mono_us,
            event: event.into(),
            worker,
            ..Ev::default()
        }
    }

    fn ok(start_us: u64, end_us: u64) -> Request {
        Request {
            start_us,
            end_us,
            failure: None,
            reused_unanswered: false,
            load: std::sync::Arc::new(("/".into(), true)),
        }
    }

    fn base() -> Observed {
        Observed {
            readiness_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            events: vec![
                ev(1_000, "worker_start", Some(7)),
                ev(51_000, "worker_ready", Some(7)),
                ev(52_000, "generation_serving", None),
                ev(2_000_000, "generation_retire", None),
                Ev {
                    drain_ms: Some(20),
                    ..ev(2_020_000, "worker_exit", Some(7))
                },
            ],
            requests: vec![
                ok(1_900_000, 2_100_000),
                ok(1_950_000, 2_200_000),
                ok(100_000, 101_000),
            ],
            first_answer: Some((52_000, Ok(53_000))),
            median_us: Some(1_000),
            // a good app answers an idle connection's next request after its stop signal
            // (with `Connection: close`)
            idle: Idle {
                answered: 8,
                ..Idle::default()
            },
            fds: Some((7, Vec::new())),
            memory: vec![(10_240, 10_240)],
            mem_available_kib: Some(1 << 20),
            ..Observed::default()
        }
    }

    /// Row `id` of the table for `o`.
    fn check(o: &Observed, id: &str) -> Check {
        evaluate(o)
            .into_iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no row {id}"))
    }

    fn verdict(o: &Observed, id: &str) -> (Verdict, String) {
        let c = check(o, id);
        (c.verdict, c.figure)
    }

    #[test]
    fn a_good_app_passes_everything() {
        let checks = evaluate(&base());
        for c in &checks {
            assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
            assert!(c.advice.is_empty(), "{c:?}");
        }
        assert!(!failed(&checks));
        assert_eq!(
            verdict(&base(), "in_flight").1,
            "0 of 2 requests in flight at 1 stop signal(s) cut"
        );
    }

    /// A request or two in flight may have waited in the socket's queue, which the next
    /// generation serves: an app that exits at once on SIGTERM passed with them.
    #[test]
    fn too_few_requests_in_flight_warn_and_never_pass() {
        let mut o = base();
        o.requests.remove(1);
        let (v, figure) = verdict(&o, "in_flight");
        assert_eq!(v, Verdict::Warn, "{figure}");
        assert!(
            figure.ends_with("too few to tell (at least 2 a stop signal wanted)"),
            "{figure}"
        );
    }

    #[test]
    fn a_cut_request_at_the_stop_fails_with_its_kind() {
        let mut o = base();
        o.requests.push(Request {
            failure: Some("reset".into()),
            ..ok(1_950_000, 2_000_500)
        });
        let (v, figure) = verdict(&o, "in_flight");
        assert_eq!(v, Verdict::Fail);
        assert_eq!(
            figure,
            "1 of 3 requests in flight at 1 stop signal(s) cut (reset 1)"
        );
        assert!(failed(&evaluate(&o)));
    }

    #[test]
    fn a_request_cut_by_the_kill_at_the_deadline_is_the_stops_check_s() {
        let mut o = base();
        o.events.push(ev(7_000_000, "worker_killed", Some(7)));
        o.requests.push(Request {
            failure: Some("eof".into()),
            ..ok(6_900_000, 7_000_300)
        });
        assert_eq!(verdict(&o, "in_flight").0, Verdict::Pass);
        let (v, f) = verdict(&o, "stops");
        assert_eq!(v, Verdict::Fail);
        assert!(f.contains("1 request(s) cut by the kill"), "{f}");
    }

    #[test]
    fn a_kept_alive_request_the_app_closed_under_is_the_keep_alive_check_s() {
        // a new user's trial: uvicorn's resets after the stop signal were "in-flight" failures
        let mut o = base();
        o.requests.push(Request {
            failure: Some("reset".into()),
            reused_unanswered: true,
            ..ok(2_030_000, 2_031_000)
        });
        assert_eq!(verdict(&o, "in_flight").0, Verdict::Pass);
        let (v, f) = verdict(&o, "keep_alive");
        assert_eq!(v, Verdict::Fail);
        assert!(f.contains("1 request(s) of the load"), "{f}");
        // on a new connection it is not the keep-alive's doing
        o.requests.last_mut().unwrap().reused_unanswered = false;
        assert_eq!(verdict(&o, "in_flight").0, Verdict::Fail);
        assert_eq!(verdict(&o, "keep_alive").0, Verdict::Pass);
    }

    #[test]
    fn keep_alive_does_not_apply_to_an_app_that_keeps_no_connection_or_closed_them_early() {
        let mut o = base();
        o.idle = Idle {
            not_kept: 8,
            ..Idle::default()
        };
        let (v, figure) = verdict(&o, "keep_alive");
        assert_eq!(v, Verdict::NotApplicable);
        assert!(figure.contains("Connection: close"), "{figure}");
        o.idle = Idle {
            early: 8,
            ..Idle::default()
        };
        let (v, figure) = verdict(&o, "keep_alive");
        assert_eq!(v, Verdict::NotApplicable);
        assert!(figure.contains("before the stop signal"), "{figure}");
        o.idle = Idle {
            early: 3,
            answered: 5,
            ..Idle::default()
        };
        let (v, figure) = verdict(&o, "keep_alive");
        assert_eq!(v, Verdict::Pass);
        assert!(figure.contains("3 more closed"), "{figure}");
    }

    /// Go's `Shutdown` with no grace: every idle connection closed right at the stop, none
    /// caught under a request this time; a warning, not a pass on luck.
    #[test]
    fn keep_alive_warns_when_every_idle_connection_was_closed_at_the_stop() {
        let mut o = base();
        o.idle = Idle {
            closed: 40,
            ..Idle::default()
        };
        let (v, figure) = verdict(&o, "keep_alive");
        assert_eq!(v, Verdict::Warn, "{figure}");
        assert!(
            figure.contains("closed every idle connection right at"),
            "{figure}"
        );
        o.idle.answered = 1;
        assert_eq!(verdict(&o, "keep_alive").0, Verdict::Pass);
    }

    #[test]
    fn a_port_of_the_apps_own_warns_and_a_unix_socket_of_its_own_is_only_named() {
        let mut o = base();
        let bound = |address: &str| Ev {
            address: address.into(),
            message: format!("worker 7 bound {address}: none of baton's sockets"),
            ..ev(5, "worker_bind_other", Some(7))
        };
        o.events.push(bound("unix:/root/.gunicorn/gunicorn.ctl"));
        o.events.push(bound("unix:/root/.gunicorn/gunicorn.ctl"));
        let (v, figure) = verdict(&o, "sockets");
        assert_eq!(v, Verdict::Pass, "{figure}");
        assert!(
            figure.ends_with("unix socket(s) of its own, left to it: /root/.gunicorn/gunicorn.ctl"),
            "{figure}"
        );
        o.events.push(bound("127.0.0.1:9090"));
        o.events.push(bound("127.0.0.1:9090"));
        let (v, figure) = verdict(&o, "sockets");
        assert_eq!(v, Verdict::Warn, "{figure}");
        assert!(
            figure.contains("1 port(s) of its own (first: worker 7 bound 127.0.0.1:9090"),
            "{figure}"
        );
    }

    /// A request sent on a kept-alive connection just before the stop signal, unread when
    /// the app took the connection for idle and closed it, is keep-alive's (the in-flight
    /// verdict flipped on it for Go's Shutdown); one sent well before is in-flight's.
    #[test]
    fn a_request_unread_at_the_stop_is_keep_alives_and_a_crashs_cut_is_stays_ups() {
        let mut o = base();
        let stop = 2_000_000;
        let reused = |start_us: u64| Request {
            failure: Some("reset".into()),
            reused_unanswered: true,
            ..ok(start_us, stop + 300)
        };
        o.requests.push(reused(stop - 7));
        assert_eq!(verdict(&o, "in_flight").0, Verdict::Pass);
        assert_eq!(verdict(&o, "keep_alive").0, Verdict::Fail);
        o.requests.pop();
        o.requests.push(reused(stop - 50_000));
        assert_eq!(verdict(&o, "in_flight").0, Verdict::Fail);
        o.requests.pop();
        // a worker dies on its own at 5 s: the requests it cut are not SIGTERM's
        o.events.push(ev(5_000_000, "worker_crash", Some(7)));
        o.requests.push(Request {
            failure: Some("eof".into()),
            ..ok(4_990_000, 5_000_100)
        });
        assert_eq!(verdict(&o, "in_flight").0, Verdict::Pass);
        let (v, figure) = verdict(&o, "stays_up");
        assert_eq!(v, Verdict::Fail);
        assert!(figure.contains(", 1 request(s) cut"), "{figure}");
    }

    /// A crash after ready is its own row (it was start-up's, whose times were fine), and
    /// a port of the app's own is named as the likely cause.
    #[test]
    fn a_worker_that_dies_while_serving_fails_stays_up_and_not_start_up() {
        let mut o = base();
        o.events.push(Ev {
            message: "worker 7 (generation 2, instance 0) died: exit code 1".into(),
            ..ev(3_000_000, "worker_crash", Some(7))
        });
        assert_eq!(verdict(&o, "start_up").0, Verdict::Pass);
        let c = check(&o, "stays_up");
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.figure
                .starts_with("1 worker(s) died while serving, 0 request(s) cut (last: worker 7"),
            "{c:?}"
        );
        assert!(c.advice.contains("its output says why"), "{c:?}");
        o.app_output = vec!["Error: listen EADDRINUSE :::9091".into()];
        let c = check(&o, "stays_up");
        assert!(
            c.advice
                .ends_with("after it is ready: its last lines: Error: listen EADDRINUSE :::9091"),
            "{c:?}"
        );
        o.events.push(Ev {
            address: "[::]:9091".into(),
            ..ev(1_000, "worker_bind_other", Some(7))
        });
        let c = check(&o, "stays_up");
        assert!(
            c.advice.starts_with("the app binds [::]:9091 of its own"),
            "{c:?}"
        );
    }

    /// What the user wrote is what the advice names: `listen` for a bind-mode app that sends
    /// no READY=1, the config's address for an app that binds another.
    #[test]
    fn start_up_advice_fits_the_cause_and_names_the_configs_address() {
        let mut o = base();
        o.bind_mode = true;
        o.addresses = vec![("127.0.0.1:35881".into(), "0.0.0.0:3000".into())];
        o.events.push(Ev {
            message: "worker 7 not ready after 5s (no READY=1 received)".into(),
            ..ev(5_000_000, "worker_not_ready", Some(7))
        });
        let c = check(&o, "start_up");
        assert!(c.advice.contains("kind = \"listen\""), "{c:?}");
        o.events.pop();
        o.events.push(Ev {
            message: "worker 7 not ready after 5s: no bind() of the app asked for baton's \
                      port(s) (`http` 127.0.0.1:35881); it last bound [::]:3001"
                .into(),
            ..ev(5_000_000, "worker_not_ready", Some(7))
        });
        let c = check(&o, "start_up");
        assert!(
            c.figure
                .contains("127.0.0.1:35881 (verify's stand-in for 0.0.0.0:3000)"),
            "{c:?}"
        );
        assert!(
            c.advice.contains("than [sockets] says (0.0.0.0:3000)"),
            "{c:?}"
        );
    }

    #[test]
    fn an_fds_app_that_never_waits_on_baton_s_socket_is_told_of_bind() {
        let mut o = base();
        o.events.push(Ev {
            message: "worker 7 not ready after 5s (no process of the worker's tree waits for \
                      connections on `http` (fd 3))"
                .into(),
            ..ev(5_000_000, "worker_not_ready", Some(7))
        });
        let c = check(&o, "start_up");
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.advice.contains("handover = \"bind\""), "{c:?}");
        o.bind_mode = true;
        assert!(!check(&o, "start_up").advice.contains("handover"));
    }

    #[test]
    fn start_up_warns_above_half_the_timeout_and_fails_when_not_ready() {
        let mut o = base();
        o.events[1].mono_us = 6_001_000;
        assert_eq!(verdict(&o, "start_up").0, Verdict::Warn);
        o.events.push(Ev {
            message: "not ready after 10s".into(),
            ..ev(11_000_000, "worker_not_ready", Some(8))
        });
        let (v, f) = verdict(&o, "start_up");
        assert_eq!(v, Verdict::Fail);
        assert!(f.ends_with("not ready after 10s"), "{f}");
    }

    /// A reload whose generation could not start is start-up's failure (the run stopped
    /// there, INCOMPLETE with every row passing); a Ctrl-C before any worker was ready is
    /// no failure at all.
    #[test]
    fn a_failed_reload_fails_start_up_and_an_interrupt_before_ready_does_not() {
        let mut o = base();
        o.events.push(Ev {
            address: "127.0.0.1:9091".into(),
            ..ev(1_000, "worker_bind_other", Some(7))
        });
        o.events.push(Ev {
            message: "generation 2 rolled back: instance 0 (pid 9) exited before it was ready: \
                      exit code 1 after 3ms; generation 1 still serving release /srv/a"
                .into(),
            ..ev(3_000_000, "reload_failed", None)
        });
        let c = check(&o, "start_up");
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(c.figure.contains("exited before it was ready"), "{c:?}");
        assert!(
            c.advice.contains("binds 127.0.0.1:9091 of its own"),
            "{c:?}"
        );
        let mut o = base();
        o.events.retain(|e| !e.is("worker_ready"));
        assert_eq!(verdict(&o, "start_up").0, Verdict::Fail);
        o.interrupted = true;
        let (v, figure) = verdict(&o, "start_up");
        assert_eq!(v, Verdict::NotApplicable, "{figure}");
    }

    #[test]
    fn readiness_a_second_early_fails() {
        let mut o = base();
        o.first_answer = Some((52_000, Ok(1_060_000)));
        assert_eq!(verdict(&o, "honest").0, Verdict::Fail);
        o.first_answer = Some((52_000, Ok(252_000)));
        assert_eq!(verdict(&o, "honest").0, Verdict::Warn);
    }

    #[test]
    fn a_worker_that_dies_before_the_first_answer_is_no_lie_and_n_a_rows_give_no_advice() {
        let mut o = base();
        o.first_answer = Some((52_000, Err("no answer within 5s".into())));
        assert_eq!(verdict(&o, "honest").0, Verdict::Fail);
        o.events.push(ev(252_000, "worker_crash", Some(7)));
        let c = check(&o, "honest");
        assert_eq!(c.verdict, Verdict::NotApplicable, "{c:?}");
        assert!(c.figure.contains("died 200ms after"), "{c:?}");
        assert_eq!(c.advice, "");
        o.events
            .retain(|e| !e.is("generation_retire") && !e.is("worker_exit"));
        for c in evaluate(&o) {
            if c.verdict == Verdict::NotApplicable {
                assert_eq!(c.advice, "", "{c:?}");
            }
        }
    }

    #[test]
    fn a_kill_at_the_deadline_fails_and_a_slow_drain_warns() {
        let mut o = base();
        o.events[4].drain_ms = Some(6_000);
        assert_eq!(verdict(&o, "stops").0, Verdict::Warn);
        o.events.push(ev(12_000_000, "worker_killed", Some(7)));
        assert_eq!(verdict(&o, "stops").0, Verdict::Fail);
        o.reloads = 1;
        o.kill_ended_reloads = true;
        let (_, figure) = verdict(&o, "stops");
        assert!(
            figure.ends_with("; it reloaded no more after reload 1: one is proof"),
            "{figure}"
        );
    }

    #[test]
    fn a_helper_killed_with_its_workers_group_warns() {
        let mut o = base();
        o.events.push(Ev {
            message: "reaped orphan 99: signal SIGKILL".into(),
            ..ev(2_100_000, "orphan_reaped", None)
        });
        let (v, figure) = verdict(&o, "strays");
        assert_eq!(v, Verdict::Warn, "{figure}");
        assert!(figure.starts_with("1 helper process(es)"), "{figure}");
        o.events.last_mut().unwrap().message = "reaped orphan 99: exit code 0".into();
        assert_eq!(verdict(&o, "strays").0, Verdict::Pass);
    }

    #[test]
    fn strays_idle_cuts_and_no_answer_fail() {
        let mut o = base();
        o.strays.push((99, "sleep 1000".into()));
        o.idle.cut = 1;
        assert_eq!(verdict(&o, "strays").0, Verdict::Fail);
        assert_eq!(verdict(&o, "keep_alive").0, Verdict::Fail);
        o.requests = vec![Request {
            failure: Some("timeout".into()),
            ..ok(1, 2)
        }];
        assert_eq!(verdict(&o, "sockets").0, Verdict::Fail);
        // no load ran (verify stopped before it): the first request is the evidence
        o.requests.clear();
        assert_eq!(verdict(&o, "sockets").0, Verdict::Pass);
        o.first_answer = None;
        assert_eq!(verdict(&o, "sockets").0, Verdict::NotApplicable);
        o.events.retain(|e| !e.is("generation_serving"));
        assert_eq!(verdict(&o, "sockets").0, Verdict::NotApplicable);
    }
}
