// A plain Node.js HTTP app that takes its sockets the systemd way: one server per passed
// descriptor (fd 3, 4, ... as LISTEN_FDS says), so it also answers on the private readiness
// socket baton adds for `kind = "http"`. On SIGTERM it stops accepting and lets keep-alive
// clients finish: the next response on each connection says `Connection: close`, idle
// connections get a short grace before they are closed.
'use strict';
const http = require('http');

const pid = process.pid;
const nfds = process.env.LISTEN_PID === String(pid) ? Number(process.env.LISTEN_FDS || 0) : 0;
if (nfds < 1) {
  console.error('server.js: no LISTEN_FDS for this pid');
  process.exit(2);
}
let draining = false;
const sockets = new Set();

function handler(req, res) {
  const body = `hello from node pid ${pid}\n`;
  res.setHeader('Content-Type', 'text/plain');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('X-Worker-Pid', String(pid));
  if (draining) res.setHeader('Connection', 'close');
  res.end(body);
}

const servers = [];
for (let i = 0; i < nfds; i++) {
  const server = http.createServer(handler);
  server.keepAliveTimeout = 60000;
  // Node >= 19 closes idle keep-alive connections in close(): a client may be sending on one
  // right then. Keep them; they are closed after their next response or the grace below.
  server.closeIdleConnections = () => {};
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen({ fd: 3 + i });
  servers.push(server);
}
console.log(`server.js: pid=${pid} generation=${process.env.BATON_GENERATION} serving ${nfds} socket(s)`);

process.on('SIGTERM', () => {
  draining = true;
  let open = servers.length;
  for (const s of servers) s.close(() => { if (--open === 0) finish(); });
  setTimeout(() => { for (const s of sockets) s.end(); }, 1000).unref();
});

function finish() {
  console.log(`server.js: pid=${pid} drained`);
  process.exit(0);
}
