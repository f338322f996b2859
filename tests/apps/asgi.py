"""A minimal ASGI app for the uvicorn recipe (`uvicorn --fd 3 asgi:app`): answers with the
serving process's pid. uvicorn drains on SIGTERM by itself (stops accepting, finishes in-flight
requests, closes idle keep-alive connections)."""
import os

PID = str(os.getpid()).encode()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"hello from uvicorn pid " + PID + b"\n"
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-worker-pid", PID)],
    })
    await send({"type": "http.response.body", "body": body})
