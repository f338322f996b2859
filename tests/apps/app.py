"""A minimal WSGI app for the gunicorn test: answers with the serving process's pid."""
import os


def application(environ, start_response):
    body = ("hello from gunicorn pid %d\n" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body))),
                              ("X-Worker-Pid", str(os.getpid()))])
    return [body]
