// A plain Node.js HTTP app that binds its own port, as most apps do: `server.listen(PORT)`
// (the port from the environment; with `SOCK` set, `server.listen(SOCK)`, a unix socket path),
// no socket activation, no notify support. Under baton's `handover = "bind"` its bind() of
// [::]:PORT (or of SOCK) gets baton's socket. On SIGTERM it stops
// accepting and lets keep-alive clients finish: the next response on each connection says
// `Connection: close`, idle connections get a short grace before they are closed.
'use strict';
const http = require('http');

const pid = process.pid;
let draining = false;
const sockets = new Set();

const server = http.createServer((req, res) => {
  const body = `hello from node pid ${pid}\n`;
  res.setHeader('Content-Type', 'text/plain');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('X-Worker-Pid', String(pid));
  if (draining) res.setHeader('Connection', 'close');
  res.end(body);
});
server.keepAliveTimeout = 60000;
// Node >= 19 closes idle keep-alive connections in close(): a client may be sending on one
// right then. Keep them; they are closed after their next response or the grace below.
server.closeIdleConnections = () => {};
server.on('connection', (s) => {
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
});
server.listen(process.env.SOCK || Number(process.env.PORT), () => {
  console.log(`bind.js: pid=${pid} listening on ${JSON.stringify(server.address())}`);
});

process.on('SIGTERM', () => {
  draining = true;
  server.close(() => {
    console.log(`bind.js: pid=${pid} drained`);
    process.exit(0);
  });
  setTimeout(() => { for (const s of sockets) s.end(); }, 1000).unref();
});
