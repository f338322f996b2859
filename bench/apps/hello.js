// hello.js: the example worker (examples/hello.rs) redone in Node, for the PM2 cluster-mode
// scenario of bench/proof.py. Same routes, headers and drain behaviour:
//   GET /        -> "hello from pid <pid> generation <gen>"   (gen: BATON_GENERATION or "-")
//   GET /healthz -> "ok";  GET /slow?ms=N -> answers after N ms;  anything else 404.
//   Every response: Content-Length, X-Worker-Pid, X-Generation, Connection.
//   HELLO_DELAY_MS (0): extra delay before every response.
//   HELLO_LISTEN (127.0.0.1:8080) or PORT: where to listen (in PM2 cluster mode the master,
//   i.e. the PM2 daemon, holds the socket and hands each accepted connection to a worker).
//   HELLO_IDLE_GRACE_MS (1000): on SIGINT/SIGTERM stop accepting at once, answer the next
//   request of each keep-alive connection with "Connection: close", give idle keep-alive
//   connections this long to send one last request, exit 0 once no connection is left.
// Readiness: process.send('ready') once listening (PM2 `wait_ready`), like hello's READY=1.
'use strict';
const http = require('http');
const net = require('net');

const pid = process.pid;
const generation = process.env.BATON_GENERATION || '-';
const ms = (name, dflt) => {
  const v = process.env[name];
  return v && v.trim() !== '' ? Number(v) : dflt;
};
const delay = ms('HELLO_DELAY_MS', 0);
const idleGrace = ms('HELLO_IDLE_GRACE_MS', 1000);
const listen = process.env.HELLO_LISTEN || `127.0.0.1:${process.env.PORT || 8080}`;
const [host, port] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))];

let draining = false;
const sockets = new Set(); // open connections; socket.busy while a request is in progress

function route(req) {
  if (req.method !== 'GET' && req.method !== 'HEAD') return [404, 'not found\n', 0];
  const [path, query = ''] = req.url.split('?');
  if (path === '/') return [200, `hello from pid ${pid} generation ${generation}\n`, 0];
  if (path === '/healthz') return [200, 'ok\n', 0];
  if (path === '/slow') {
    const m = /(?:^|&)ms=(\d+)/.exec(query);
    return m ? [200, `slept ${m[1]} ms in pid ${pid}\n`, Number(m[1])] : [400, 'usage: /slow?ms=N\n', 0];
  }
  return [404, 'not found\n', 0];
}

const server = http.createServer((req, res) => {
  const sock = req.socket;
  sock.busy = true;
  const [status, body, wait] = route(req);
  const answer = () => {
    // Checked after the work is done: a drain that began meanwhile closes too.
    const close = draining || req.headers.connection === 'close';
    res.writeHead(status, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
      'X-Worker-Pid': String(pid),
      'X-Generation': generation,
      'Connection': close ? 'close' : 'keep-alive',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
    res.on('finish', () => { sock.busy = false; });
  };
  if (delay + wait > 0) setTimeout(answer, delay + wait); else answer();
});
server.keepAliveTimeout = 60000;
server.headersTimeout = 10000;
server.on('connection', (sock) => {
  sockets.add(sock);
  sock.busy = false;
  sock.on('close', () => { sockets.delete(sock); maybeExit(); });
});

function maybeExit() {
  if (draining && sockets.size === 0) process.exit(0);
}

function drain(sig) {
  if (draining) return;
  draining = true;
  console.error(`hello.js: pid=${pid} got ${sig}, draining`);
  // Stop accepting without http.Server.close()'s closeIdleConnections(): an idle keep-alive
  // connection may be carrying a request right now; give it the grace period instead.
  net.Server.prototype.close.call(server);
  setTimeout(() => {
    for (const s of sockets) if (!s.busy) s.end(); // FIN: the client reconnects
  }, idleGrace).unref();
  maybeExit();
}
process.on('SIGINT', () => drain('SIGINT'));
process.on('SIGTERM', () => drain('SIGTERM'));

server.listen(port, host, () => {
  console.error(`hello.js: pid=${pid} listening on ${host}:${port}`);
  if (process.send) process.send('ready');
});
