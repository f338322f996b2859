//! [`StopSignal`]: the signals `drain.signal` may name, by number and canonical name.
//!
//! Must never send a signal; SIGKILL and SIGSTOP are not stop signals (the drain deadline
//! SIGKILLs on its own).

use std::fmt;
use std::str::FromStr;

/// A signal allowed as drain signal: libc number plus canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StopSignal {
    number: i32,
    name: &'static str,
}

const SIGNALS: &[StopSignal] = &[
    StopSignal::TERM,
    StopSignal {
        number: libc::SIGQUIT,
        name: "SIGQUIT",
    },
    StopSignal {
        number: libc::SIGINT,
        name: "SIGINT",
    },
    StopSignal {
        number: libc::SIGHUP,
        name: "SIGHUP",
    },
    StopSignal {
        number: libc::SIGUSR1,
        name: "SIGUSR1",
    },
    StopSignal {
        number: libc::SIGUSR2,
        name: "SIGUSR2",
    },
    StopSignal {
        number: libc::SIGWINCH,
        name: "SIGWINCH",
    },
];

impl StopSignal {
    /// SIGTERM, the default.
    pub const TERM: StopSignal = StopSignal {
        number: libc::SIGTERM,
        name: "SIGTERM",
    };

    /// The libc signal number.
    pub fn number(&self) -> i32 {
        self.number
    }

    /// The canonical name, like `"SIGTERM"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Looks a name up: case-insensitive, with or without `SIG`.
    pub fn from_name(name: &str) -> Option<StopSignal> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        SIGNALS.iter().copied().find(|s| &s.name[3..] == bare)
    }
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal::TERM
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl FromStr for StopSignal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        StopSignal::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|s| s.name).collect();
            format!(
                "unknown or unsupported signal {s:?}, expected one of {}",
                names.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, MIN};

    #[test]
    fn signals() {
        for (name, num) in [
            ("TERM", libc::SIGTERM),
            ("SIGTERM", libc::SIGTERM),
            ("sigquit", libc::SIGQUIT),
            ("int", libc::SIGINT),
            ("SIGHUP", libc::SIGHUP),
            ("usr1", libc::SIGUSR1),
            ("SIGUSR2", libc::SIGUSR2),
            ("SigWinch", libc::SIGWINCH),
        ] {
            let s = StopSignal::from_name(name).unwrap();
            assert_eq!(s.number(), num);
            assert!(s.name().starts_with("SIG"));
            assert_eq!(s.to_string(), s.name());
        }
        assert!(StopSignal::from_name("KILL").is_none());
        assert!(StopSignal::from_name("SIG").is_none());
        assert!("15".parse::<StopSignal>().is_err());
        let c = parse(&format!("{MIN}[drain]\nsignal = \"winch\"\n")).unwrap();
        assert_eq!(c.drain.signal.name(), "SIGWINCH");
    }
}
