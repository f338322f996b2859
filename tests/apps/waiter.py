"""A minimal HTTP app that takes only the first passed socket (fd 3, as most apps do) and
waits for connections in the way its first argument names, to test `readiness.kind =
"accepting"` against each way a real server waits:

  accept  a thread blocked in accept() (threaded servers, the JVM's ServerSocket)
  select  select() on the socket, then accept (pre-fork servers such as gunicorn's sync worker)
  poll    poll() on the socket
  epoll   the socket, dup'ed first (as socket.fromfd and Go's FileListener do), in an epoll set
          (event loops: Node, asyncio, Go)
  none    holds the socket and never waits on it

WAITER_STARTUP_MS delays everything (a slow start-up). It sends no READY=1 and answers every
request with `ok <pid>`. SIGTERM ends it at once (nothing to drain in these tests).
"""
import os
import select
import socket
import sys
import time

mode = sys.argv[1]
time.sleep(int(os.environ.get("WAITER_STARTUP_MS", "0")) / 1000)
if os.environ.get("LISTEN_PID") != str(os.getpid()):
    sys.exit("waiter.py: no LISTEN_FDS for this pid")
listener = socket.socket(fileno=3)
listener.setblocking(mode == "accept")


def answer(conn):
    conn.setblocking(True)
    # the whole request head: a client may send it in pieces, and closing on unread bytes
    # would reset the connection
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(4096)
        if not chunk:
            break
        request += chunk
    body = f"ok {os.getpid()}\n".encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    conn.close()


def accept_all():
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        answer(conn)


if mode == "accept":
    while True:
        conn, _ = listener.accept()
        answer(conn)
elif mode == "select":
    while True:
        select.select([listener], [], [])
        accept_all()
elif mode == "poll":
    p = select.poll()
    p.register(listener, select.POLLIN)
    while True:
        p.poll()
        accept_all()
elif mode == "epoll":
    dup = socket.fromfd(3, socket.AF_INET, socket.SOCK_STREAM)
    listener.close()
    listener = dup
    listener.setblocking(False)
    e = select.epoll()
    e.register(listener.fileno(), select.EPOLLIN)
    while True:
        e.poll()
        accept_all()
elif mode == "none":
    while True:
        time.sleep(3600)
else:
    sys.exit(f"waiter.py: unknown mode {mode!r}")
