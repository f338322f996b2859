"""The example worker (examples/hello.rs) as a WSGI app, for the gunicorn scenario of
bench/proof.py (like tests/apps/app.py, plus hello's routes and headers).

GET / -> "hello from pid <pid> generation -"; GET /healthz -> "ok"; GET /slow?ms=N;
anything else 404. HELLO_DELAY_MS: extra delay before every response. Drain on SIGTERM is
gunicorn's own (graceful_timeout); keep-alive needs a threaded worker (`-k gthread`).
"""
import os
import time
from urllib.parse import parse_qs

DELAY = float(os.environ.get("HELLO_DELAY_MS") or 0) / 1000.0


def application(environ, start_response):
    pid = os.getpid()
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    status, body, wait = "404 Not Found", "not found\n", 0.0
    if method in ("GET", "HEAD"):
        if path == "/":
            status, body = "200 OK", "hello from pid %d generation -\n" % pid
        elif path == "/healthz":
            status, body = "200 OK", "ok\n"
        elif path == "/slow":
            ms = parse_qs(environ.get("QUERY_STRING", "")).get("ms", [""])[0]
            if ms.isdigit():
                status, body, wait = "200 OK", "slept %s ms in pid %d\n" % (ms, pid), int(ms) / 1000.0
            else:
                status, body = "400 Bad Request", "usage: /slow?ms=N\n"
    if DELAY + wait > 0:
        time.sleep(DELAY + wait)
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data))),
                            ("X-Worker-Pid", str(pid)),
                            ("X-Generation", "-")])
    return [] if method == "HEAD" else [data]
