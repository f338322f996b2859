//! The sd_notify protocol in both directions.
//!
//! * [`Message`]: parsing of datagrams that workers send to baton's private notify socket
//!   (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`, …). Pure functions, no I/O.
//! * [`Manager`]: what baton itself tells its service manager (systemd) through the
//!   `NOTIFY_SOCKET` it was started with. A no-op when baton does not run under systemd.
//!
//! This module never decides anything: the supervisor interprets the messages.

use std::time::Duration;

use sd_notify::NotifyState;

/// The fields of one notification datagram that baton acts on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub ready: bool,
    pub reloading: bool,
    pub stopping: bool,
    pub watchdog: bool,
    pub status: Option<String>,
    pub mainpid: Option<i32>,
    pub barrier: bool,
}

impl Message {
    /// Parse `KEY=VALUE` lines; unknown keys are ignored as sd_notify(3) prescribes.
    pub fn parse(data: &[u8]) -> Message {
        let text = String::from_utf8_lossy(data);
        let mut m = Message::default();
        for line in text.split('\n') {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "READY" => m.ready = value == "1",
                "RELOADING" => m.reloading = value == "1",
                "STOPPING" => m.stopping = value == "1",
                "WATCHDOG" => m.watchdog = value == "1",
                "STATUS" => m.status = Some(value.chars().take(200).collect()),
                "MAINPID" => m.mainpid = value.parse().ok(),
                "BARRIER" => m.barrier = value == "1",
                _ => {}
            }
        }
        m
    }
}

/// baton's link to its own service manager.
pub struct Manager {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Manager {
    /// Reads NOTIFY_SOCKET / WATCHDOG_USEC from the environment. baton keeps these variables in
    /// its own environment (sd-notify reads them at every call) and never passes them to a child.
    pub fn from_env() -> Manager {
        Manager {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// Whether baton runs under a service manager that listens.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How often to send WATCHDOG=1 (half of WatchdogSec=), when systemd asked for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(baton_event = "notify_error", "sd_notify failed: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn reloading(&self, status: &str) {
        match NotifyState::monotonic_usec_now() {
            Ok(mono) => self.send(&[NotifyState::Reloading, mono, NotifyState::Status(status)]),
            Err(_) => self.send(&[NotifyState::Reloading, NotifyState::Status(status)]),
        }
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Ask systemd for more time for the current start/reload/stop step.
    pub fn extend_timeout(&self, by: Duration) {
        let (usec, capped) = extend_usec(by);
        if capped {
            tracing::warn!(
                baton_event = "extend_timeout_capped",
                "asked systemd for {by:?} more, capped at EXTEND_TIMEOUT_USEC={usec}"
            );
        }
        // sd-notify's ExtendTimeoutUsec carries a u32 (71 minutes); systemd reads a u64
        let field = format!("EXTEND_TIMEOUT_USEC={usec}");
        self.send(&[NotifyState::Custom(&field)]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// Microseconds for EXTEND_TIMEOUT_USEC (systemd reads it as a u64), and whether `by` was
/// capped to fit: never wrapped.
pub fn extend_usec(by: Duration) -> (u64, bool) {
    match u64::try_from(by.as_micros()) {
        Ok(u) => (u, false),
        Err(_) => (u64::MAX, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_timeout_is_capped_never_wrapped() {
        // 2^32 µs + 1 used to be cut to a u32 by `as`-style clamping; 3 days pass in full
        let three_days = Duration::from_secs(3 * 86_400);
        assert_eq!(extend_usec(three_days), (259_200_000_000, false));
        assert_eq!(
            extend_usec(Duration::from_micros(u32::MAX as u64 + 1)),
            (u32::MAX as u64 + 1, false)
        );
        assert_eq!(extend_usec(Duration::MAX), (u64::MAX, true));
    }

    #[test]
    fn parses_fields() {
        let m = Message::parse(b"READY=1\nSTATUS=serving 3 requests\nMAINPID=42\nX_CUSTOM=1\n");
        assert!(m.ready);
        assert_eq!(m.status.as_deref(), Some("serving 3 requests"));
        assert_eq!(m.mainpid, Some(42));
        assert!(!m.stopping);
    }

    #[test]
    fn ignores_garbage() {
        let m = Message::parse(b"\xff\xfe\nREADY\nREADY=0\n=1");
        assert_eq!(m, Message::default());
    }

    #[test]
    fn barrier_and_watchdog() {
        let m = Message::parse(b"BARRIER=1");
        assert!(m.barrier);
        let m = Message::parse(b"WATCHDOG=1\nSTOPPING=1");
        assert!(m.watchdog && m.stopping);
    }
}
