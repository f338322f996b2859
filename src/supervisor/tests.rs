//! The core without processes: a fake world answers its actions, and a fake clock moves only
//! when a test says so. Each test is a reload story told in events; the property test tells
//! random ones and checks the core's invariants after every step.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

use super::core::{
    Action, ClientId, Core, Event, Fact, Identity, LogEvent, Prepared, State, Systemd,
};
use super::generation::{Life, Phase};
use super::plan::{Check, NicePlan, Readiness};
use super::timers::{SlotId, Timer};
use crate::config::Config;
use crate::control::ReloadReply;
use crate::notify::Message;
use crate::sys::{ExitStatus, Pid};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `command = ["app"]` and the rest of a config file.
fn config(rest: &str) -> Config {
    Config::parse(&format!("command = [\"app\"]\n{rest}"), "test.toml").expect("test config")
}

/// baton holds two sockets (`listen` readiness waits for both).
fn two_sockets() -> Identity {
    let socket = |name: &str, port: u16| crate::control::SocketStatus {
        name: name.into(),
        fd: 3,
        worker_fd: None,
        address: format!("stream 0.0.0.0:{port}"),
        source: "bound".into(),
    };
    Identity {
        sockets: vec![socket("http", 8080), socket("admin", 9090)],
        ..Identity::default()
    }
}

/// A fake world around one core: processes are numbers, signals are recorded, and a SIGKILL
/// to a process group ends its leader at once.
struct World {
    core: Core,
    t0: Instant,
    now: Instant,
    next_pid: Pid,
    /// Worker processes alive (spawned, not reaped).
    alive: BTreeSet<Pid>,
    /// What each pid is.
    slot_of: HashMap<Pid, SlotId>,
    /// The config the next reload reads (an error: a bad file).
    next_config: Result<Config, String>,
    /// The next spawns fail with this error.
    spawn_error: Option<String>,
    /// The next recipes cannot be built, for this reason (a release that does not resolve).
    prepare_error: Option<String>,
    /// The generations whose recipe was built, in order.
    prepared: Vec<u64>,
    signals: Vec<(Pid, i32)>,
    killed: Vec<Pid>,
    spawns: Vec<SlotId>,
    probes: Vec<(Pid, Check)>,
    /// The sockets each worker got by a bind or listened on, as the world told the core.
    handed: HashMap<Pid, BTreeSet<usize>>,
    listened: HashMap<Pid, BTreeSet<usize>>,
    /// `listen` looks the core asked for that it should not have (not every socket handed,
    /// or a socket the worker listened on looked at).
    bad_looks: Vec<String>,
    replies: Vec<(ClientId, ReloadReply)>,
    progress: Vec<(ClientId, String)>,
    systemd: Vec<Systemd>,
    logs: Vec<LogEvent>,
    /// The history's facts, in order.
    facts: Vec<Fact>,
    next_client: ClientId,
}

impl World {
    fn new(cfg: Config) -> World {
        let t0 = Instant::now();
        let core = Core::new(cfg.clone(), two_sockets(), true, 1, t0);
        let mut w = World {
            core,
            t0,
            now: t0,
            next_pid: 100,
            alive: BTreeSet::new(),
            slot_of: HashMap::new(),
            next_config: Ok(cfg),
            spawn_error: None,
            prepare_error: None,
            prepared: Vec::new(),
            signals: Vec::new(),
            killed: Vec::new(),
            spawns: Vec::new(),
            probes: Vec::new(),
            handed: HashMap::new(),
            listened: HashMap::new(),
            bad_looks: Vec::new(),
            replies: Vec::new(),
            progress: Vec::new(),
            systemd: Vec::new(),
            logs: Vec::new(),
            facts: Vec::new(),
            next_client: 1,
        };
        w.pump();
        w
    }

    /// Carry out the core's actions, answering those that need it.
    fn pump(&mut self) {
        while let Some(a) = self.core.poll_action() {
            if let Some(answer) = self.carry_out(a) {
                self.core.handle(self.now, answer);
            }
        }
    }

    fn carry_out(&mut self, a: Action) -> Option<Event> {
        match a {
            Action::LoadConfig => {
                return Some(Event::ConfigLoaded(self.next_config.clone().map(Box::new)))
            }
            Action::Prepare { generation, .. } => {
                self.prepared.push(generation);
                if let Some(e) = self.prepare_error.clone() {
                    return Some(Event::Prepared {
                        generation,
                        result: Err(e),
                    });
                }
                return Some(Event::Prepared {
                    generation,
                    result: Ok(Prepared {
                        nice: NicePlan::default(),
                        release: format!("/srv/api/releases/{generation}"),
                        command: vec!["/srv/api/releases/run.sh".into()],
                    }),
                });
            }
            Action::Spawn { slot } => {
                self.spawns.push(slot);
                if let Some(error) = self.spawn_error.clone() {
                    return Some(Event::SpawnFailed { slot, error });
                }
                let pid = self.next_pid;
                self.next_pid += 1;
                self.alive.insert(pid);
                self.slot_of.insert(pid, slot);
                return Some(Event::Spawned {
                    slot,
                    pid,
                    at: self.now,
                });
            }
            Action::Probe { worker, check, .. } => {
                if let Check::AcceptingOn(sockets) = &check {
                    let handed = self.handed.get(&worker).cloned().unwrap_or_default();
                    let listened = self.listened.get(&worker).cloned().unwrap_or_default();
                    if handed.len() < 2
                        || sockets.is_empty()
                        || sockets.iter().any(|s| listened.contains(s))
                    {
                        self.bad_looks.push(format!(
                            "look at {sockets:?} of {worker} (handed {handed:?}, listened \
                             {listened:?})"
                        ));
                    }
                }
                self.probes.push((worker, check))
            }
            Action::Signal { pid, signal } => self.signals.push((pid, signal)),
            Action::KillGroup { pid } => {
                if self.alive.contains(&pid) {
                    self.killed.push(pid);
                }
            }
            Action::Reply { client, reply } => self.replies.push((client, reply)),
            Action::Progress { client, text } => self.progress.push((client, text)),
            Action::Systemd(m) => self.systemd.push(m),
            Action::Log(e) => self.logs.push(e),
            Action::Record(f) => self.facts.push(f),
            Action::Ready { .. } | Action::Renice { .. } | Action::Release { .. } => {}
        }
        None
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Bound { worker, socket } if socket < 2 => {
                self.handed.entry(worker).or_default().insert(socket);
            }
            Event::Listened { worker, socket } if socket < 2 => {
                self.handed.entry(worker).or_default().insert(socket);
                self.listened.entry(worker).or_default().insert(socket);
            }
            _ => {}
        }
        self.core.handle(self.now, e);
        self.pump();
        self.reap_killed();
    }

    /// Processes SIGKILLed by the core die now.
    fn reap_killed(&mut self) {
        while let Some(pid) = self.killed.pop() {
            if self.alive.remove(&pid) {
                self.core.handle(
                    self.now,
                    Event::Exited {
                        pid,
                        status: ExitStatus::Signal(libc::SIGKILL),
                    },
                );
                self.pump();
            }
        }
    }

    /// Move the clock by `d`, firing what falls due on the way, in order.
    fn sleep(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.core.poll_timeout().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now);
            self.pump();
            self.reap_killed();
        }
        self.now = end;
        self.core.handle_timeout(self.now);
        self.pump();
        self.reap_killed();
    }

    /// The worker passes its readiness check: READY=1, as many passed probes in a row as
    /// its generation's check needs, or listen() on every socket.
    fn ready(&mut self, pid: Pid) {
        let readiness = self.slot_of.get(&pid).and_then(|s| {
            let gens = self.core.state.gens();
            Some(
                gens.iter()
                    .find(|g| g.id == s.generation)?
                    .readiness
                    .clone(),
            )
        });
        if let Some(Readiness::Listen { sockets, .. }) = readiness {
            for socket in 0..sockets {
                self.event(Event::Listened {
                    worker: pid,
                    socket,
                });
            }
            return;
        }
        let successes = match readiness {
            Some(Readiness::Probe { successes, .. }) => Some(successes),
            _ => None,
        };
        let Some(successes) = successes else {
            return self.event(Event::Notify {
                worker: pid,
                sender: pid,
                message: Message::parse(b"READY=1"),
                sent: self.now,
            });
        };
        for _ in 0..successes {
            self.event(Event::ProbeResult {
                worker: pid,
                ok: true,
                detail: "HTTP 200".into(),
            });
        }
    }

    fn exit(&mut self, pid: Pid, code: i32) {
        if self.alive.remove(&pid) {
            self.event(Event::Exited {
                pid,
                status: ExitStatus::Code(code),
            });
        }
    }

    fn reload(&mut self) -> ClientId {
        let id = self.next_client;
        self.next_client += 1;
        self.event(Event::Reload(Some(id)));
        id
    }

    /// The worker pids of generation `g`, by instance (starting, ready or draining).
    fn pids(&self, g: u64) -> Vec<Pid> {
        let gens = self.core.state.gens();
        let Some(gen) = gens.iter().find(|x| x.id == g) else {
            return vec![];
        };
        gen.slots
            .iter()
            .filter_map(|s| s.life.proc().map(|p| p.pid))
            .collect()
    }

    fn ready_all(&mut self, g: u64) {
        for pid in self.pids(g) {
            self.ready(pid);
        }
    }

    /// Every process that got its stop signal ends now.
    fn drain_all(&mut self) {
        let stopped: Vec<Pid> = self.signals.iter().map(|(p, _)| *p).collect();
        for pid in stopped {
            self.exit(pid, 0);
        }
    }

    fn state(&self) -> &'static str {
        self.core.state.name()
    }

    /// The serving generation's id.
    fn serving(&self) -> Option<u64> {
        match &self.core.state {
            State::Serving { current, .. } | State::RollingOut { current, .. } => Some(current.id),
            _ => None,
        }
    }

    fn reply(&self, client: ClientId) -> Option<&ReloadReply> {
        self.replies
            .iter()
            .find(|(c, _)| *c == client)
            .map(|(_, r)| r)
    }

    fn logged(&self, event: &str) -> Vec<&LogEvent> {
        self.logs.iter().filter(|e| e.event == event).collect()
    }

    fn signalled(&self, pid: Pid) -> bool {
        self.signals.iter().any(|(p, _)| *p == pid)
    }

    /// Boot with every worker ready: generation 1 serves.
    fn serving_world(cfg: Config) -> World {
        let stable = cfg.readiness.stable;
        let mut w = World::new(cfg);
        w.ready_all(1);
        w.sleep(stable);
        assert_eq!(w.state(), "serving");
        w
    }
}

#[test]
fn boot_tells_systemd_ready_once_every_worker_is() {
    let mut w = World::new(config("instances = 3"));
    assert_eq!(w.state(), "booting");
    assert_eq!(
        w.pids(1).len(),
        3,
        "the first generation starts every worker at once"
    );
    let [a, b, c] = w.pids(1)[..] else { panic!() };
    w.ready(a);
    w.ready(b);
    assert!(!w.systemd.iter().any(|m| matches!(m, Systemd::Ready(_))));
    w.ready(c);
    assert_eq!(w.state(), "serving");
    assert_eq!(
        w.systemd
            .iter()
            .filter(|m| matches!(m, Systemd::Ready(_)))
            .count(),
        1
    );
}

#[test]
fn a_rollout_swaps_only_once_the_next_generation_is_ready() {
    let mut w = World::serving_world(config("instances = 2"));
    let old = w.pids(1);
    let client = w.reload();
    assert_eq!(w.state(), "rolling-out");
    let new = w.pids(2);
    assert_eq!(new.len(), 2);
    w.ready(new[0]);
    assert!(
        !old.iter().any(|p| w.signalled(*p)),
        "old generation untouched"
    );
    w.ready(new[1]);
    assert_eq!(w.serving(), Some(2));
    assert!(old.iter().all(|p| w.signalled(*p)), "old generation drains");
    let r = w.reply(client).expect("the client is answered");
    assert!(r.ok);
    assert_eq!(r.generation, Some(2));
    w.drain_all();
    assert_eq!(
        w.core.state.gens().len(),
        1,
        "the drained generation is gone"
    );
    assert_eq!(w.logged("generation_gone").len(), 1);
}

/// The history's facts: each generation that served (with its start and swap), failed (with
/// the reason) or ended (replaced, or baton stopped), at the core's own instants.
#[test]
fn the_history_gets_a_fact_for_each_generation_that_served_failed_or_ended() {
    let mut w = World::serving_world(config(
        "instances = 1
[drain]
timeout = \"1s\"\n",
    ));
    let t0 = w.t0;
    assert_eq!(
        w.facts,
        [Fact::Served {
            generation: 1,
            started: t0,
            at: t0
        }]
    );
    // a good reload: 2 serves at its swap, 1 ends once drained
    w.sleep(ms(100));
    w.reload();
    let t1 = w.now;
    w.sleep(ms(50));
    w.ready_all(2);
    w.sleep(ms(20));
    w.drain_all();
    assert_eq!(
        w.facts[1..],
        [
            Fact::Served {
                generation: 2,
                started: t1,
                at: t1 + ms(50)
            },
            Fact::Ended {
                generation: 1,
                at: t1 + ms(70),
                reason: "replaced by generation 2".into(),
                stopped: false
            }
        ]
    );
    // a failed one: 3 failed with the reason, and its end is a fact too
    w.facts.clear();
    w.signals.clear();
    w.reload();
    let t3 = w.now;
    let p = w.pids(3)[0];
    w.sleep(ms(10));
    w.exit(p, 1);
    let Fact::Failed {
        generation: 3,
        started,
        at,
        reason,
    } = &w.facts[0]
    else {
        panic!("{:?}", w.facts);
    };
    assert_eq!((*started, *at), (t3, t3 + ms(10)));
    assert!(reason.contains("exited"), "{reason}");
    assert!(matches!(
        w.facts[..],
        [
            _,
            Fact::Ended {
                generation: 3,
                stopped: false,
                ..
            }
        ]
    ));
    // baton stops: the serving generation ends, stopped
    w.facts.clear();
    w.event(Event::Stop("SIGTERM"));
    w.drain_all();
    assert_eq!(w.state(), "done");
    assert!(
        matches!(
            &w.facts[..],
            [Fact::Ended {
                generation: 2,
                stopped: true,
                ..
            }]
        ),
        "{:?}",
        w.facts
    );
}

/// Every log event of a generation carries its release, and so do `baton status` and the
/// reload's reply; a failed reload names both releases. A restart after a failed reload is a
/// spawn from the serving generation's own recipe: no recipe is built again, so it runs the
/// release its generation resolved at its start.
#[test]
fn a_generation_names_its_release_and_its_restarts_keep_it() {
    let cfg = config("instances = 2\n[restart]\nbackoff_initial = \"100ms\"\n");
    let mut w = World::serving_world(cfg);
    let r1 = "/srv/api/releases/1";
    let client = w.reload();
    let p = w.pids(2)[0];
    w.exit(p, 1);
    let r = w.reply(client).expect("answered").clone();
    assert!(!r.ok);
    assert_eq!(r.release.as_deref(), Some(r1), "the serving generation's");
    assert!(
        r.message
            .starts_with("generation 2 (release /srv/api/releases/2) rolled back:")
            && r.message
                .ends_with("generation 1 still serving release /srv/api/releases/1"),
        "{}",
        r.message
    );
    w.drain_all();
    // a worker of generation 1 dies: it is started again from generation 1's recipe
    let old = w.pids(1);
    let spawns = w.spawns.len();
    w.exit(old[0], 137);
    w.sleep(ms(100));
    assert_eq!(w.spawns.len(), spawns + 1);
    assert_eq!(w.spawns.last().unwrap().generation, 1);
    assert_eq!(
        w.prepared,
        [1, 2],
        "one recipe per generation, none for a restart"
    );
    let status = w.core.status(w.now);
    assert_eq!(status.generations[0].release.as_deref(), Some(r1));
    // a good reload: its reply and status name the new release
    let client = w.reload();
    w.ready_all(3);
    let r = w.reply(client).expect("answered");
    assert!(r.ok);
    assert_eq!(r.release.as_deref(), Some("/srv/api/releases/3"));
    assert!(
        r.message
            .starts_with("generation 3 serving release /srv/api/releases/3 ("),
        "{}",
        r.message
    );
    let status = w.core.status(w.now);
    let releases: Vec<_> = status
        .generations
        .iter()
        .map(|g| (g.generation, g.release.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        releases,
        [(3, "/srv/api/releases/3".to_string()), (1, r1.to_string())]
    );
    w.drain_all();
    // every event of a generation named its release, and only its own
    let of_a_generation: Vec<&LogEvent> =
        w.logs.iter().filter(|e| e.generation.is_some()).collect();
    assert!(of_a_generation.len() > 10);
    for e in of_a_generation {
        let want = format!("/srv/api/releases/{}", e.generation.unwrap());
        assert_eq!(e.release.as_deref(), Some(want.as_str()), "{e:?}");
    }
    assert!(w.core.out.releases.keys().all(|g| *g == 3), "released");
}

/// A generation whose release cannot be resolved fails with the reason; the serving one is
/// untouched and nothing of the failed one was spawned.
#[test]
fn a_release_that_does_not_resolve_fails_the_reload() {
    let mut w = World::serving_world(config("instances = 2"));
    let old = w.pids(1);
    let spawns = w.spawns.len();
    w.prepare_error = Some("the release directory /srv/api/current does not exist".to_string());
    let client = w.reload();
    let r = w.reply(client).expect("answered at once");
    assert!(!r.ok);
    assert!(
        r.message.starts_with(
            "generation 2 rolled back: cannot start [\"app\"]: the release \
             directory /srv/api/current does not exist; generation 1 still serving release \
             /srv/api/releases/1"
        ),
        "{}",
        r.message
    );
    assert_eq!(r.release.as_deref(), Some("/srv/api/releases/1"));
    assert_eq!(w.spawns.len(), spawns);
    assert_eq!(w.serving(), Some(1));
    assert!(!old.iter().any(|p| w.signalled(*p)));
    let failed = w.logged("worker_spawn_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].release, None, "generation 2 has no release");
}

#[test]
fn readiness_stable_delays_the_swap() {
    let mut w = World::serving_world(config("[readiness]\nstable = \"2s\"\n"));
    let client = w.reload();
    w.ready_all(2);
    assert_eq!(w.serving(), Some(1), "settling");
    w.sleep(ms(1999));
    assert_eq!(w.serving(), Some(1));
    w.sleep(ms(1));
    assert_eq!(w.serving(), Some(2));
    assert!(w.reply(client).unwrap().ok);
}

/// Every way a new generation can fail before the swap rolls it back and leaves the serving
/// one alone.
#[test]
fn rollback_at_every_step() {
    type Story = fn(&mut World);
    let stories: [(&str, &str, Story); 4] = [
        ("exit before ready", "", |w| {
            let p = w.pids(2)[0];
            w.exit(p, 3);
        }),
        (
            "readiness timeout",
            "[readiness]\ntimeout = \"5s\"\n",
            |w| {
                w.sleep(ms(5000));
            },
        ),
        (
            "crash while stable",
            "[readiness]\nstable = \"3s\"\n",
            |w| {
                w.ready_all(2);
                w.sleep(ms(1000));
                let p = w.pids(2)[0];
                w.exit(p, 1);
            },
        ),
        (
            "failing probe",
            "[readiness]\nkind = \"http\"\ntimeout = \"3s\"\ninterval = \"500ms\"\n",
            |w| {
                for _ in 0..6 {
                    let probes = std::mem::take(&mut w.probes);
                    for (pid, _) in probes {
                        w.event(Event::ProbeResult {
                            worker: pid,
                            ok: false,
                            detail: "HTTP 503".into(),
                        });
                    }
                    w.sleep(ms(500));
                }
            },
        ),
    ];
    for (name, rest, story) in stories {
        let mut w = World::serving_world(config(&format!("instances = 2\n{rest}")));
        let old = w.pids(1);
        let client = w.reload();
        story(&mut w);
        let r = w
            .reply(client)
            .unwrap_or_else(|| panic!("{name}: no answer"));
        assert!(!r.ok, "{name}: {}", r.message);
        assert!(r.message.contains("rolled back"), "{name}: {}", r.message);
        assert_eq!(w.serving(), Some(1), "{name}");
        assert!(
            !old.iter().any(|p| w.signalled(*p)),
            "{name}: old untouched"
        );
        let new: Vec<Pid> = w
            .slot_of
            .keys()
            .copied()
            .filter(|p| !old.contains(p))
            .collect();
        let alive_new: Vec<Pid> = new
            .iter()
            .copied()
            .filter(|p| w.alive.contains(p))
            .collect();
        assert!(
            alive_new.iter().all(|p| w.signalled(*p)),
            "{name}: the failed generation drains"
        );
        if name == "failing probe" {
            assert!(r.message.contains("last check: HTTP 503"), "{}", r.message);
        }
    }
}

#[test]
fn reloads_during_a_rollout_and_a_drain_coalesce_into_one() {
    let mut w = World::serving_world(config("[drain]\ntimeout = \"10s\"\n"));
    let first = w.reload();
    // five more while generation 2 starts: one pending rollout, every client told it waits
    let during_rollout: Vec<ClientId> = (0..5).map(|_| w.reload()).collect();
    assert_eq!(w.progress.len(), 5);
    w.ready_all(2);
    assert!(w.reply(first).unwrap().ok);
    // generation 1 drains: the pending rollout waits for it, and more reloads join it
    assert_eq!(w.serving(), Some(2));
    let during_drain: Vec<ClientId> = (0..5).map(|_| w.reload()).collect();
    assert!(w.pids(3).is_empty(), "no third generation while one drains");
    w.drain_all();
    // exactly one more generation, 3, for all ten clients
    assert_eq!(w.state(), "rolling-out");
    assert_eq!(w.pids(3).len(), 1);
    assert!(w.pids(4).is_empty());
    w.ready_all(3);
    for c in during_rollout.iter().chain(&during_drain) {
        let r = w.reply(*c).expect("answered");
        assert!(r.ok);
        assert_eq!(r.generation, Some(3), "client {c}");
    }
    assert_eq!(w.core.next_generation, 4);
}

#[test]
fn a_bad_config_rejects_the_reload_and_touches_nothing() {
    let mut w = World::serving_world(config("instances = 2"));
    let old = w.pids(1);
    w.next_config = Err("config error: test.toml:3: unknown key `x`".into());
    let client = w.reload();
    let r = w.reply(client).unwrap();
    assert!(!r.ok);
    assert!(r.message.contains("unknown key"));
    assert_eq!(w.state(), "serving");
    assert_eq!(w.core.next_generation, 2, "no generation was started");
    assert!(!old.iter().any(|p| w.signalled(*p)));
    assert_eq!(w.core.reloads_failed, 1);
}

#[test]
fn restart_backoff_grows_and_resets() {
    let mut w = World::serving_world(config(
        "[restart]\nbackoff_initial = \"100ms\"\nbackoff_max = \"800ms\"\n",
    ));
    let mut delays = Vec::new();
    for _ in 0..6 {
        let pid = w.pids(1)[0];
        w.exit(pid, 1);
        let t = w.now;
        // the restart comes exactly when the backoff says
        let at = w.core.poll_timeout().expect("a restart is armed");
        delays.push(at - t);
        w.sleep(at - t);
        assert_eq!(w.pids(1).len(), 1, "restarted");
    }
    assert_eq!(
        delays,
        [ms(100), ms(200), ms(400), ms(800), ms(800), ms(800)]
    );
    let gens = w.core.state.gens();
    let slot = &gens[0].slots[0];
    assert_eq!(slot.restarts, 6);
    drop(gens);
    // a worker that gets ready and runs for backoff_max starts the backoff over
    let pid = w.pids(1)[0];
    w.ready(pid);
    w.sleep(ms(800));
    w.exit(pid, 1);
    let at = w.core.poll_timeout().unwrap();
    assert_eq!(at - w.now, ms(100));
    assert!(w
        .logged("worker_crash")
        .iter()
        .any(|e| e.message.contains("crash loop")));
}

#[test]
fn a_rollout_is_paced_by_max_starting() {
    let mut w = World::serving_world(config("instances = 5\n[readiness]\nmax_starting = 2\n"));
    w.reload();
    for expected_spawned in [2, 3, 4, 5] {
        assert_eq!(w.pids(2).len(), expected_spawned);
        let gens = w.core.state.gens();
        assert_eq!(gens[1].starting_count(), 2.min(5 + 2 - expected_spawned));
        drop(gens);
        // the first starting one gets ready: one more is spawned
        let starting: Vec<Pid> = w.core.state.gens()[1]
            .slots
            .iter()
            .filter_map(|s| match &s.life {
                Life::Starting(p, _) => Some(p.pid),
                _ => None,
            })
            .collect();
        w.ready(starting[0]);
    }
    let rest: Vec<Pid> = w.pids(2);
    for p in rest {
        w.ready(p);
    }
    assert_eq!(w.serving(), Some(2));
}

#[test]
fn the_first_generation_is_not_paced() {
    let w = World::new(config("instances = 5\n[readiness]\nmax_starting = 1\n"));
    assert_eq!(w.pids(1).len(), 5);
}

#[test]
fn stop_during_a_rollout_drains_both_and_answers_the_clients() {
    let mut w = World::serving_world(config("instances = 2"));
    let client = w.reload();
    w.event(Event::Stop("SIGTERM"));
    assert_eq!(w.state(), "stopping");
    let r = w.reply(client).unwrap();
    assert!(!r.ok);
    assert_eq!(r.message, "baton is stopping");
    let all: Vec<Pid> = w.alive.iter().copied().collect();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|p| w.signalled(*p)));
    // a reload now is refused at once
    let late = w.reload();
    assert_eq!(w.reply(late).unwrap().message, "baton is stopping");
    w.drain_all();
    assert_eq!(w.core.finished(), Some(0));
}

#[test]
fn a_drain_past_its_deadline_kills_the_process_group() {
    let mut w = World::serving_world(config("instances = 2\n[drain]\ntimeout = \"3s\"\n"));
    let old = w.pids(1);
    w.reload();
    w.ready_all(2);
    w.exit(old[0], 0);
    w.sleep(ms(2999));
    assert!(w.alive.contains(&old[1]), "not before the deadline");
    w.sleep(ms(1));
    assert!(!w.alive.contains(&old[1]), "SIGKILLed at the deadline");
    let killed = w.logged("worker_killed");
    assert_eq!(killed.len(), 1);
    assert_eq!(killed[0].worker, Some(old[1]));
    let exits = w.logged("worker_exit");
    assert!(exits
        .iter()
        .any(|e| e.message.contains("killed at the drain deadline")));
    assert!(exits.iter().any(|e| e.drain_ms == Some(0)));
    assert_eq!(w.core.state.gens().len(), 1);
}

#[test]
fn a_failed_spawn_fails_the_rollout_and_spawns_nothing_more() {
    let mut w = World::serving_world(config("instances = 3\n[readiness]\nmax_starting = 3\n"));
    w.spawn_error = Some("No such file or directory".into());
    let client = w.reload();
    let r = w.reply(client).unwrap();
    assert!(!r.ok);
    assert!(r.message.contains("could not be started"), "{}", r.message);
    let tries = w.spawns.iter().filter(|s| s.generation == 2).count();
    assert_eq!(tries, 1, "nothing more after the first failure");
    assert_eq!(w.serving(), Some(1));
}

#[test]
fn idle_means_no_deadline() {
    let w = World::serving_world(config("instances = 2"));
    assert_eq!(w.core.poll_timeout(), None, "nothing armed while serving");
    assert!(w.t0 <= w.now);
}

// ------------------------------------------------------------------------------------------
// random event sequences

#[derive(Debug, Clone)]
enum Op {
    Sleep(u64),
    Ready(usize),
    Exit(usize, i32),
    Reload,
    Sighup,
    BadReload,
    FailSpawns(bool),
    ProbeOk(usize),
    ProbeFail(usize),
    Listened(usize, usize),
    Bound(usize, usize),
    BoundOther(usize),
    ClientGone(usize),
    Stop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..4000).prop_map(Op::Sleep),
        4 => (0usize..16).prop_map(Op::Ready),
        2 => ((0usize..16), -1i32..3).prop_map(|(i, c)| Op::Exit(i, c)),
        2 => Just(Op::Reload),
        1 => Just(Op::Sighup),
        1 => Just(Op::BadReload),
        1 => any::<bool>().prop_map(Op::FailSpawns),
        2 => (0usize..16).prop_map(Op::ProbeOk),
        1 => (0usize..16).prop_map(Op::ProbeFail),
        2 => ((0usize..16), 0usize..3).prop_map(|(i, s)| Op::Listened(i, s)),
        2 => ((0usize..16), 0usize..3).prop_map(|(i, s)| Op::Bound(i, s)),
        1 => (0usize..16).prop_map(Op::BoundOther),
        1 => (0usize..8).prop_map(Op::ClientGone),
        1 => Just(Op::Stop),
    ]
}

const CONFIGS: [&str; 5] = [
    "instances = 1\n[drain]\ntimeout = \"2s\"\n",
    "instances = 2\n[readiness]\nstable = \"500ms\"\ntimeout = \"3s\"\n[drain]\ntimeout = \"0s\"\n",
    "instances = 3\n[readiness]\nmax_starting = 1\ntimeout = \"2s\"\n[restart]\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\n",
    "instances = 3\n[readiness]\nkind = \"http\"\nsuccesses = 2\ninterval = \"200ms\"\ntimeout = \"4s\"\nmax_starting = 2\n",
    "handover = \"bind\"\ninstances = 2\n[readiness]\nkind = \"listen\"\ntimeout = \"2s\"\nmax_starting = 1\n",
];

/// What the world saw of generations over the whole story, for the invariants that span steps.
#[derive(Default)]
struct Seen {
    /// Generations that have been committed (served).
    committed: BTreeSet<u64>,
    /// Generations that failed before they served.
    failed: BTreeSet<u64>,
}

fn apply(w: &mut World, op: &Op, clients: &mut Vec<ClientId>) {
    let alive: Vec<Pid> = w.alive.iter().copied().collect();
    let pick = |i: usize| (!alive.is_empty()).then(|| alive[i % alive.len()]);
    match op.clone() {
        Op::Sleep(n) => w.sleep(ms(n)),
        Op::Ready(i) => {
            if let Some(p) = pick(i) {
                w.ready(p)
            }
        }
        Op::Exit(i, c) => {
            if let Some(p) = pick(i) {
                w.exit(p, c)
            }
        }
        Op::Reload => clients.push(w.reload()),
        Op::Sighup => w.event(Event::Reload(None)),
        Op::BadReload => {
            let good = std::mem::replace(&mut w.next_config, Err("config error: bad".into()));
            clients.push(w.reload());
            w.next_config = good;
        }
        Op::FailSpawns(on) => w.spawn_error = on.then(|| "EAGAIN".to_string()),
        Op::ProbeOk(i) | Op::ProbeFail(i) => {
            if let Some(p) = pick(i) {
                let ok = matches!(op, Op::ProbeOk(_));
                w.event(Event::ProbeResult {
                    worker: p,
                    ok,
                    detail: "probe".into(),
                });
            }
        }
        Op::Listened(i, socket) => {
            if let Some(p) = pick(i) {
                w.event(Event::Listened { worker: p, socket })
            }
        }
        Op::Bound(i, socket) => {
            if let Some(p) = pick(i) {
                w.event(Event::Bound { worker: p, socket })
            }
        }
        Op::BoundOther(i) => {
            if let Some(p) = pick(i) {
                w.event(Event::BoundOther {
                    worker: p,
                    address: "[::]:3001".into(),
                })
            }
        }
        Op::ClientGone(i) => {
            if !clients.is_empty() {
                let c = clients.remove(i % clients.len());
                w.event(Event::ClientGone(c));
            }
        }
        Op::Stop => w.event(Event::Stop("SIGTERM")),
    }
}

/// The core's invariants, checked after every step.
fn check_invariants(w: &World, seen: &mut Seen, signals_before: usize) -> Result<(), String> {
    let state = &w.core.state;
    let gens = state.gens();
    if gens.len() > 2 {
        return Err(format!("{} generations alive", gens.len()));
    }
    let stopping = matches!(state, State::Stopping { .. } | State::Done { .. });
    if let Some(bad) = w.bad_looks.first() {
        return Err(format!("a look asked for too early: {bad}"));
    }
    for g in &gens {
        if g.committed() {
            seen.committed.insert(g.id);
        }
        if g.failure.is_some() && !seen.committed.contains(&g.id) {
            seen.failed.insert(g.id);
        }
        for s in &g.slots {
            let slot = g.slot_id(s.instance);
            match &s.life {
                Life::Starting(_, st)
                    if w.core.out.timers.get(Timer::Ready(slot)) != Some(st.deadline) =>
                {
                    return Err(format!(
                        "starting worker {slot:?} without its readiness deadline"
                    ));
                }
                Life::Draining(_, d)
                    if !d.killed
                        && w.core.out.timers.get(Timer::Kill(slot)) != Some(d.deadline) =>
                {
                    return Err(format!(
                        "draining worker {slot:?} without its kill deadline"
                    ));
                }
                // the checks (and `listen`'s look) stop once it is ready
                Life::Ready(_) if w.core.out.timers.get(Timer::Probe(slot)).is_some() => {
                    return Err(format!("ready worker {slot:?} still has a check due"));
                }
                _ => {}
            }
        }
        let paced = g.max_starting != usize::MAX;
        if paced && matches!(g.phase, Phase::Starting) && g.starting_count() > g.max_starting {
            return Err(format!(
                "generation {} has {} starting",
                g.id,
                g.starting_count()
            ));
        }
    }
    // no stop signal to a generation that served before its successor is ready
    for (pid, _) in &w.signals[signals_before..] {
        let Some(slot) = w.slot_of.get(pid) else {
            continue;
        };
        if !seen.committed.contains(&slot.generation) || stopping {
            continue;
        }
        let successor_serves = gens.iter().any(|g| g.id > slot.generation && g.committed());
        let same = gens.iter().find(|g| g.id == slot.generation);
        // a restarted worker of the serving generation that never got ready may be stopped
        let restarted_not_ready = same.is_some_and(|g| g.committed())
            && !w
                .logs
                .iter()
                .any(|e| e.event == "worker_ready" && e.worker == Some(*pid));
        if !successor_serves && !restarted_not_ready {
            return Err(format!(
                "worker {pid} of generation {} signalled before a successor was ready",
                slot.generation
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        rng_seed: RngSeed::Fixed(0xba70),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_stories_keep_the_invariants(
        which in 0usize..CONFIGS.len(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut w = World::new(config(CONFIGS[which]));
        let mut seen = Seen::default();
        let mut clients = Vec::new();
        let spawns_before_fail: HashMap<u64, usize> = HashMap::new();
        let _ = spawns_before_fail;
        for (step, op) in ops.iter().enumerate() {
            let signals_before = w.signals.len();
            let failed_before = seen.failed.clone();
            let spawns_before = w.spawns.len();
            apply(&mut w, op, &mut clients);
            if let Err(e) = check_invariants(&w, &mut seen, signals_before) {
                return Err(TestCaseError::fail(format!("step {step} ({op:?}): {e}")));
            }
            // a failed generation spawns nothing more
            for s in &w.spawns[spawns_before..] {
                prop_assert!(!failed_before.contains(&s.generation),
                    "step {}: failed generation {} spawned", step, s.generation);
            }
        }
        // the story ends: everything stops, every process ends, every client is answered
        w.event(Event::Stop("SIGTERM"));
        w.drain_all();
        w.sleep(Duration::from_secs(60));
        prop_assert!(w.core.finished().is_some(), "not finished: {}", w.state());
        prop_assert!(w.alive.is_empty(), "left alive: {:?}", w.alive);
        for c in clients {
            prop_assert!(w.reply(c).is_some(), "client {} never answered", c);
        }
        prop_assert_eq!(w.core.poll_timeout(), None);
    }
}

const LISTEN: &str =
    "handover = \"bind\"\ninstances = 2\n[readiness]\nkind = \"listen\"\ntimeout = \"2s\"\n";

/// `handover = "bind"`: a worker is ready once its tree listened on each of baton's sockets,
/// whichever process and in whatever order, and a listen counts once.
#[test]
fn a_listen_rollout_swaps_once_every_worker_listened_on_every_socket() {
    let mut w = World::serving_world(config(LISTEN));
    let old = w.pids(1);
    let client = w.reload();
    let new = w.pids(2);
    assert_eq!(new.len(), 2);
    let listened = |w: &mut World, worker: Pid, socket: usize| {
        w.event(Event::Listened { worker, socket });
    };
    listened(&mut w, new[0], 1);
    listened(&mut w, new[0], 1);
    listened(&mut w, new[1], 0);
    listened(&mut w, new[1], 1);
    assert_eq!(
        w.state(),
        "rolling-out",
        "instance 0 listened on one socket"
    );
    assert!(
        !old.iter().any(|p| w.signalled(*p)),
        "old generation untouched"
    );
    // a listen of an unknown socket number counts for nothing
    listened(&mut w, new[0], 7);
    assert_eq!(w.state(), "rolling-out");
    listened(&mut w, new[0], 0);
    assert_eq!(w.serving(), Some(2));
    assert!(old.iter().all(|p| w.signalled(*p)), "old generation drains");
    assert!(w.reply(client).expect("answered").ok);
    let ready = w.logged("worker_ready");
    assert!(
        ready
            .iter()
            .any(|e| e.message.contains("listen() on all 2 socket(s)")),
        "{:?}",
        ready.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    // a listen after it is ready changes nothing
    listened(&mut w, new[0], 0);
    assert_eq!(w.serving(), Some(2));
}

/// A worker that listens on one of baton's two sockets never gets ready: the rollout is
/// rolled back at its readiness timeout, with the count in the reason, and the serving
/// generation is not touched.
#[test]
fn a_worker_that_listens_on_one_of_two_sockets_is_rolled_back_at_its_timeout() {
    let mut w = World::serving_world(config(LISTEN));
    let old = w.pids(1);
    let client = w.reload();
    let new = w.pids(2);
    w.ready(new[1]);
    w.event(Event::Listened {
        worker: new[0],
        socket: 0,
    });
    // READY=1 and probe results mean nothing to a listen generation
    w.event(Event::Notify {
        worker: new[0],
        sender: new[0],
        message: Message::parse(b"READY=1"),
        sent: w.now,
    });
    w.sleep(ms(1900));
    assert_eq!(w.state(), "rolling-out");
    w.sleep(ms(200));
    assert_eq!(w.serving(), Some(1));
    let r = w.reply(client).expect("answered");
    assert!(!r.ok);
    assert!(
        r.message
            .contains("not ready after 2s (its tree called listen() on 1 of baton's 2 socket(s); its binds got 1)"),
        "{}",
        r.message
    );
    assert!(
        !old.iter().any(|p| w.signalled(*p)),
        "serving generation untouched"
    );
    assert!(
        new.iter().all(|p| w.signalled(*p)),
        "the failed one is retired"
    );
}

/// `listen`: a worker none of whose binds asked for baton's ports fails at its timeout with a
/// reason that says so in the user's words, naming baton's sockets and the last address the app
/// bound instead (which the driver reports); one that bound nothing at all gets the same
/// reason without it.
#[test]
fn a_worker_whose_binds_got_no_socket_is_told_it_binds_another_port() {
    let mut w = World::serving_world(config(LISTEN));
    let client = w.reload();
    let new = w.pids(2);
    for address in ["[::]:3001", "127.0.0.1:9000"] {
        w.event(Event::BoundOther {
            worker: new[0],
            address: address.into(),
        });
    }
    w.sleep(ms(2100));
    assert_eq!(w.serving(), Some(1));
    let r = w.reply(client).expect("answered");
    assert!(!r.ok);
    assert!(
        r.message.contains(&format!(
            "instance 0 (pid {}) not ready after 2s (no bind() of the app asked for baton's \
             port(s) (`http` 0.0.0.0:8080, `admin` 0.0.0.0:9090): does it bind another port? \
             It last bound 127.0.0.1:9000.)",
            new[0]
        )),
        "{}",
        r.message
    );
    // no bind at all: the same reason, with no address
    let mut w = World::serving_world(config(LISTEN));
    let client = w.reload();
    w.sleep(ms(2100));
    let r = w.reply(client).expect("answered");
    assert!(
        r.message.contains(
            "not ready after 2s (no bind() of the app asked for baton's port(s) (`http` \
             0.0.0.0:8080, `admin` 0.0.0.0:9090): does it bind another port?)"
        ),
        "{}",
        r.message
    );
}

/// The sockets (by number) that the binds of `worker`'s tree got, as the driver reports them.
fn bound(w: &mut World, worker: Pid, sockets: &[usize]) {
    for &socket in sockets {
        w.event(Event::Bound { worker, socket });
    }
}

fn ready_lines(w: &World) -> Vec<String> {
    let lines = w.logged("worker_ready");
    lines.iter().map(|e| e.message.clone()).collect()
}

/// `listen`: a worker that calls listen() right after its binds (Node, Go, uvicorn) is ready by
/// those calls, whichever the driver reports first, and no look in /proc is ever asked for.
#[test]
fn a_worker_that_listens_after_its_binds_is_ready_without_a_look() {
    let mut w = World::serving_world(config(LISTEN));
    let client = w.reload();
    let new = w.pids(2);
    bound(&mut w, new[0], &[0, 1]);
    w.sleep(ms(5));
    for socket in [0, 1] {
        w.event(Event::Listened {
            worker: new[0],
            socket,
        });
    }
    // both calls answered in one turn: the listen()s reach the core before the binds
    for socket in [1, 0] {
        w.event(Event::Listened {
            worker: new[1],
            socket,
        });
    }
    bound(&mut w, new[1], &[0, 1]);
    assert_eq!(w.serving(), Some(2));
    assert!(w.reply(client).expect("answered").ok);
    w.sleep(ms(1000));
    assert!(w.probes.is_empty(), "looks: {:?}", w.probes);
    let ready = ready_lines(&w);
    let by_listen = ready
        .iter()
        .filter(|m| m.contains("ready (listen() on all 2 socket(s))"));
    assert_eq!(by_listen.count(), 4, "{ready:?}");
}

/// `listen`: a worker that never calls listen() (gunicorn finds its socket listening already)
/// is looked at in /proc once a bind got every socket, one interval (50 ms) after the last one,
/// then every interval, only on the sockets it did not listen on, until it waits for
/// connections on them; then it is ready, and the looks stop.
#[test]
fn a_worker_that_never_calls_listen_is_ready_by_the_look_once_it_has_every_socket() {
    let mut w = World::serving_world(config(LISTEN));
    let old = w.pids(1);
    let client = w.reload();
    let new = w.pids(2);
    // one of the two sockets handed: no look, however long
    bound(&mut w, new[0], &[0, 0]);
    w.sleep(ms(500));
    assert!(w.probes.is_empty(), "looks: {:?}", w.probes);
    bound(&mut w, new[0], &[1]);
    bound(&mut w, new[1], &[0, 1]);
    w.event(Event::Listened {
        worker: new[1],
        socket: 0,
    });
    w.sleep(ms(49));
    assert!(w.probes.is_empty(), "looks: {:?}", w.probes);
    w.sleep(ms(1));
    assert_eq!(
        w.probes,
        [
            (new[0], Check::AcceptingOn(vec![0, 1])),
            (new[1], Check::AcceptingOn(vec![1]))
        ]
    );
    // not waiting yet: looked at again one interval after the answer, not before
    let waits_not = "no process of the worker's tree waits for connections on `http` (fd 3)";
    w.event(Event::ProbeResult {
        worker: new[0],
        ok: false,
        detail: waits_not.into(),
    });
    w.sleep(ms(49));
    assert_eq!(w.probes.len(), 2);
    w.sleep(ms(1));
    assert_eq!(w.probes.len(), 3, "{:?}", w.probes);
    assert_eq!(w.state(), "rolling-out");
    assert!(
        !old.iter().any(|p| w.signalled(*p)),
        "old generation untouched"
    );
    for worker in [new[0], new[1]] {
        w.event(Event::ProbeResult {
            worker,
            ok: true,
            detail: "waiting for connections on every socket".into(),
        });
    }
    assert_eq!(w.serving(), Some(2));
    assert!(w.reply(client).expect("answered").ok);
    assert!(old.iter().all(|p| w.signalled(*p)), "old generation drains");
    let ready = ready_lines(&w);
    let line = |pid: Pid| ready.iter().find(|m| m.contains(&format!("worker {pid} ")));
    assert!(
        line(new[0]).is_some_and(|m| m.contains(
            "ready (waiting for connections on all 2 socket(s), as /proc shows; it never called \
             listen())"
        )),
        "{ready:?}"
    );
    assert!(
        line(new[1]).is_some_and(|m| m.contains(
            "ready (listen() on 1 of 2 socket(s), waiting for connections on the other 1, as \
             /proc shows, without calling listen())"
        )),
        "{ready:?}"
    );
    // the looks stop once it is ready
    let looks = w.probes.len();
    w.sleep(ms(1000));
    assert_eq!(w.probes.len(), looks);
}

/// `listen`: a worker that got every socket but neither listens nor waits for connections is
/// looked at until its readiness timeout, which rolls the reload back with the last look's
/// reason; the serving generation is not touched, and the looks end with the worker.
#[test]
fn a_worker_neither_listening_nor_waiting_is_rolled_back_at_its_timeout() {
    let mut w = World::serving_world(config(LISTEN));
    let old = w.pids(1);
    let client = w.reload();
    let spawned = w.now;
    let new = w.pids(2);
    w.ready(new[1]);
    bound(&mut w, new[0], &[1, 0]);
    let mut answered = 0;
    for _ in 0..1000 {
        if w.reply(client).is_some() {
            break;
        }
        w.sleep(ms(10));
        while answered < w.probes.len() {
            answered += 1;
            w.event(Event::ProbeResult {
                worker: new[0],
                ok: false,
                detail: "no process of the worker's tree waits for connections on `http` (fd 3)"
                    .into(),
            });
        }
    }
    let r = w.reply(client).expect("answered");
    assert!(!r.ok);
    assert_eq!(
        w.now.duration_since(spawned),
        ms(2000),
        "at its readiness timeout"
    );
    assert!(
        r.message.contains(
            "not ready after 2s (its tree called listen() on 0 of baton's 2 socket(s); its binds \
             got 2; last look: no process of the worker's tree waits for connections on `http`"
        ),
        "{}",
        r.message
    );
    // one look every 50 ms and the answer's 10 ms
    assert!(
        (25..=40).contains(&w.probes.len()),
        "{} looks",
        w.probes.len()
    );
    assert!(w.probes.iter().all(|(p, _)| *p == new[0]));
    assert_eq!(w.serving(), Some(1));
    assert!(
        !old.iter().any(|p| w.signalled(*p)),
        "serving generation untouched"
    );
    let looks = w.probes.len();
    w.drain_all();
    w.sleep(ms(1000));
    assert_eq!(w.probes.len(), looks, "no look after the worker is retired");
}

/// Found by the property test: a reload asked for while the first generation starts was never
/// answered when that generation failed (its client waited until baton had exited).
#[test]
fn a_reload_during_a_failed_boot_is_answered() {
    let mut w = World::new(config("instances = 2"));
    let client = w.reload();
    let pid = w.pids(1)[0];
    w.exit(pid, 1);
    assert_eq!(w.state(), "stopping");
    let r = w.reply(client).expect("answered at once");
    assert!(!r.ok);
    assert!(
        r.message.contains("generation 1 failed to start"),
        "{}",
        r.message
    );
}

/// A new user's trial: `handover = "bind"` with the default `notify` readiness said only
/// "not ready after 5s". A notify worker's timeout says what it waited for, in the reload's
/// reason and in the line of a restarted worker stopped at its timeout.
#[test]
fn a_notify_worker_not_ready_at_its_timeout_says_no_ready_1_was_received() {
    let mut w = World::serving_world(config("[readiness]\ntimeout = \"2s\"\n"));
    let client = w.reload();
    w.sleep(ms(2100));
    assert_eq!(w.serving(), Some(1));
    let r = w.reply(client).expect("answered");
    assert!(!r.ok);
    assert!(
        r.message
            .contains("not ready after 2s (no READY=1 received)"),
        "{}",
        r.message
    );
    w.drain_all();
    // a worker of the serving generation restarted, and never ready
    let old = w.pids(1)[0];
    w.exit(old, 1);
    w.sleep(Duration::from_secs(1));
    assert_ne!(w.pids(1), vec![old], "restarted");
    w.sleep(ms(2100));
    let lines = w.logged("worker_not_ready");
    assert!(
        lines.iter().any(|e| e
            .message
            .contains("not ready after 2s (no READY=1 received): stopping it")),
        "{:?}",
        lines.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
}
