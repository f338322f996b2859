"""A minimal ASGI app for the uvicorn recipes: answers with the serving process's pid.

`uvicorn --fd 3 asgi:app` serves it on the socket baton passes. On SIGTERM uvicorn itself closes
idle keep-alive connections at once, so a request a client is sending on one right then is
lost. `python asgi.py` runs the same app on fd 3 through uvicorn's Server with a drain that
loses nothing: on SIGTERM it stops accepting, answers the next request of every connection with
`Connection: close` (uvicorn then closes it), gives idle connections 1 s to send one, and only
then lets uvicorn shut down.
"""
import asyncio
import os

import uvicorn

PID = str(os.getpid()).encode()
DRAINING = False


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"hello from uvicorn pid " + PID + b"\n"
    headers = [(b"content-type", b"text/plain"),
               (b"content-length", str(len(body)).encode()),
               (b"x-worker-pid", PID)]
    if DRAINING:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DrainingServer(uvicorn.Server):
    async def shutdown(self, sockets=None):
        global DRAINING
        DRAINING = True
        for server in self.servers:
            server.close()  # this process stops accepting; the socket stays open in baton
        loop = asyncio.get_running_loop()
        grace = loop.time() + 1.0
        while self.server_state.connections and loop.time() < grace:
            await asyncio.sleep(0.01)
        await super().shutdown(sockets)


if __name__ == "__main__":
    DrainingServer(uvicorn.Config(app, fd=3, access_log=False)).run()
