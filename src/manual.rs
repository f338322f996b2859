//! The man pages: baton(1) and one page per subcommand from the clap definition
//! (clap_mangen), baton(1) with the sections clap knows nothing of (EXIT STATUS, SIGNALS,
//! ENVIRONMENT, FILES, EXAMPLES, SEE ALSO), and baton.toml(5) from the config reference
//! ([`crate::reference`]). Written by the hidden `baton generate man`, for the packages.

use std::io::Write;
use std::path::Path;

/// The sections of baton(1) after the subcommands (roff). Every statement must stay true of
/// main.rs (exit codes), supervisor/driver/mod.rs (signals) and the units.
pub const BATON_1_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fBbaton run\fR
0 after SIGTERM, SIGINT or SIGQUIT, once every worker has exited; 1 when the config has an
error, a socket cannot be taken or bound, the control socket is in use, the control or
notify path holds a file that is not a socket or another user's socket (left in place), or
the first generation does not get ready; 2 without \fB\-\-config\fR or \fB\-\-demo\fR, or with a bad
\fB\-\-listen\fR.
.TP
\fBbaton reload\fR
0 when the new generation serves; 1 when it was rolled back (the reason is on stderr), the
config has an error, no baton answers on the control socket (or none or several were found),
the control socket is served by another user, or \fB\-\-timeout\fR passed first; 2 with a bad \fB\-\-timeout\fR.
.TP
\fBbaton rollback\fR
As \fBbaton reload\fR: 0 when the new generation (the earlier release and config) serves; 1
when it was rolled back, or when nothing was started: no earlier generation to go back to,
\fB\-\-to\fR names one that is not in the history or never served, or its release directory
is gone (the reason is on stderr).
.TP
\fBbaton history\fR
0 when baton answered, or none did and the history file of \fB\-\-config\fR was read; 1
otherwise (also when the baton is older and does not know it); 2 with \fB\-\-json\fR and
\fB\-\-releases\fR together.
.TP
\fBbaton status\fR
0 when baton answered; 3 when no baton answers on the control socket, or none was found
(no \fB\-\-config\fR nor \fB\-\-control\fR, and no control socket in the runtime
directory); 1 when the config has an error, several control sockets were found, the reply
cannot be read, or the control socket is served by another user (neither baton's user nor
root: nothing is sent to it).
.TP
\fBbaton check\fR
0 when the config is valid (warnings, on stderr, do not change it); 1 when it has an error,
and with \fB\-\-strict\fR also when something would fail at run time (the command not found
or not executable, \fBcwd\fR missing).
.TP
\fBbaton units\fR
0 when the units were printed or written; 1 when a file cannot be written; 2 when the name,
an address or a path is refused (nothing is written).
.TP
\fBbaton verify\fR
0 when no check failed (warnings do not change it); 1 when a check failed, or when verify
could not go on (the first generation never served, a reload did not end, it was
interrupted); 2 when it could not run: the config has an error, it has no \fB[sockets]\fR and
no \fB\-\-socket\fR was given, or the private directory cannot be made.
.PP
Every subcommand exits 2 on a usage error (an unknown option, a missing argument).
.SH SIGNALS
Signals to \fBbaton run\fR (the main process of the service):
.TP
\fBSIGHUP\fR
Reload: start the next generation, as \fBbaton reload\fR does, without anyone waiting for
the outcome (the journal has it).
.TP
\fBSIGTERM\fR, \fBSIGINT\fR, \fBSIGQUIT\fR
Stop: every worker gets its \fBdrain.signal\fR, the process groups still alive at
\fBdrain.timeout\fR get SIGKILL; baton exits 0 once every worker has exited. It sends
STOPPING=1 to systemd first.
.PP
Workers die with baton (parent-death signal), also when it is killed with SIGKILL.
.SH ENVIRONMENT
.TP
\fBLISTEN_FDS\fR, \fBLISTEN_PID\fR, \fBLISTEN_FDNAMES\fR
The sockets systemd passes (socket activation); without them \fBbaton run\fR binds the
config's [sockets]. baton removes them from its environment; each worker gets its own.
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
systemd's notification socket and watchdog (Type=notify, WatchdogSec=); workers get baton's
private NOTIFY_SOCKET instead.
.TP
\fBSTATE_DIRECTORY\fR
Where \fBbaton run\fR keeps its history (history.json): systemd's StateDirectory=; without
it /var/lib/baton/NAME for root, else $XDG_STATE_HOME/baton/NAME (or
~/.local/state/baton/NAME).
.TP
\fBXDG_RUNTIME_DIR\fR
For a user other than root, the control sockets are in $XDG_RUNTIME_DIR/baton (else in
/tmp/baton\-UID).
.SH FILES
.TP
\fB/etc/baton/\fINAME\fB.toml\fR
The config of the template unit baton@NAME.service; see \fBbaton.toml\fR(5).
.TP
\fB/run/baton/\fINAME\fB/control.sock\fR
The control socket of the config NAME.toml when it sets no \fBcontrol\fR (for root;
other users: $XDG_RUNTIME_DIR/baton/NAME/control.sock), the directory systemd creates
for baton@NAME.service (RuntimeDirectory=baton/NAME). The notify socket of the workers,
control.notify, is next to it. \fBbaton status\fR and \fBbaton reload\fR without
\fB\-\-config\fR and \fB\-\-control\fR use the only */control.sock there.
.TP
\fB/var/lib/baton/\fINAME\fB/history.json\fR
The history of generations of baton@NAME.service (StateDirectory=baton/NAME), what
\fBbaton history\fR shows and \fBbaton rollback\fR starts again; written atomically, mode
0600. A missing or corrupt file is a warning, never an error; so is one of another user's or
writable by group or others, which is not read, and a directory writable by group or others,
where the history is neither read nor written (it is kept in memory).
.TP
\fB/usr/lib/systemd/system/baton@.socket\fR, \fB/usr/lib/systemd/system/baton@.service\fR
The template units (config /etc/baton/NAME.toml).
.TP
\fB/usr/lib/baton/hello\-worker\fR
The example worker of \fBbaton run \-\-demo\fR and of the demo instance baton@demo.
.SH EXAMPLES
Try it without systemd: two example workers on 127.0.0.1:9000, then a zero-downtime reload:
.PP
.RS 4
.nf
baton run \-\-demo \-\-listen 127.0.0.1:9000 &
curl http://127.0.0.1:9000/
baton reload
baton status
.fi
.RE
.PP
Check a config as the service's user would run it, then start the template instance:
.PP
.RS 4
.nf
baton check \-\-strict \-\-config /etc/baton/api.toml
systemctl enable \-\-now baton@api.socket
systemctl reload baton@api
baton status \-\-config /etc/baton/api.toml
journalctl \-u baton@api BATON_GENERATION=2
baton history \-\-config /etc/baton/api.toml
baton rollback \-\-config /etc/baton/api.toml
.fi
.RE
.PP
Write a socket and service unit of your own for an app:
.PP
.RS 4
.nf
baton units api \-\-listen 127.0.0.1:8080 \-\-config /etc/baton/api.toml \e
    \-\-output\-dir /etc/systemd/system
.fi
.RE
.SH "SEE ALSO"
\fBbaton.toml\fR(5), \fBbaton\-run\fR(1), \fBbaton\-reload\fR(1), \fBbaton\-rollback\fR(1), \fBbaton\-history\fR(1), \fBbaton\-status\fR(1),
\fBbaton\-check\fR(1), \fBbaton\-units\fR(1), \fBsystemctl\fR(1), \fBsystemd.socket\fR(5),
\fBsystemd.service\fR(5), \fBsd_listen_fds\fR(3), \fBsd_notify\fR(3)
"#;

/// Write baton.1, baton-SUBCOMMAND.1 (visible subcommands) and baton.toml.5 into `out`.
pub fn write_man_pages(cmd: clap::Command, out: &Path) -> std::io::Result<()> {
    clap_mangen::generate_to(cmd.clone(), out)?;
    // baton.1 again, with the extra sections before VERSION
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.write_all(BATON_1_SECTIONS.as_bytes())?;
    man.render_version_section(&mut page)?;
    std::fs::write(out.join("baton.1"), page)?;
    std::fs::write(
        out.join("baton.toml.5"),
        crate::reference::man_page(env!("CARGO_PKG_VERSION")),
    )
}
