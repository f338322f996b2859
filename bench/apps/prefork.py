"""prefork.py: a plain process launcher for the "naive" and "systemd-socket-activate"
scenarios of bench/proof.py; it runs N copies of an app on one listening socket with the
socket-activation convention (fd 3, LISTEN_FDS=1, LISTEN_PID = the app's own pid).

  python3 prefork.py [--bind HOST:PORT] N CMD [ARG...]

The socket: with --bind, the launcher binds it itself (the naive case: stopping the launcher
closes the port, the next launcher binds it again); without, it takes fd 3 from its own
socket activation (`systemd-socket-activate -l ADDR python3 prefork.py N CMD`, which execs
into this launcher: the socket then outlives every restart of the app).

SIGHUP: plain restart of the app, like `systemctl restart app.service` behind a held
app.socket: SIGTERM to every copy, wait until all have exited, then start N new ones. Nothing
checks that the new ones are ready; connections meanwhile wait in the socket's backlog.
SIGTERM/SIGINT: stop the copies (SIGTERM, wait) and exit.
"""
import os
import signal
import socket
import sys


def main():
    args = sys.argv[1:]
    bind = None
    if args[:1] == ["--bind"]:
        bind, args = args[1], args[2:]
    n, cmd = int(args[0]), args[1:]
    if bind:
        host, port = bind.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(socket.SOMAXCONN)
        if s.fileno() == 3:
            s.detach()
        else:
            os.dup2(s.fileno(), 3)
            s.close()
    elif os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        sys.exit("prefork.py: no --bind and no socket passed (LISTEN_FDS=1 for this pid)")
    os.set_inheritable(3, True)
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(k, None)

    children = set()
    pending = []

    def start():
        for i in range(n):
            pid = os.fork()
            if pid == 0:
                env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                try:
                    os.execvpe(cmd[0], cmd, env)
                finally:
                    os._exit(127)
            children.add(pid)

    def stop():
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        while children:
            pid, _ = os.wait()
            children.discard(pid)

    # Signals are taken synchronously, one at a time, between restarts.
    sigs = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    start()
    while True:
        sig = signal.sigwait(sigs)
        if sig == signal.SIGCHLD:
            while children:  # an app copy died on its own: just reap it
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                children.discard(pid)
        elif sig == signal.SIGHUP:
            stop()
            start()
        else:
            stop()
            return 0


if __name__ == "__main__":
    sys.exit(main())
