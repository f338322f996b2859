import express from 'express';
import { createServer } from 'node:http';
const app = express();
const server = createServer(app);
const connections = new Set();
server.on('connection', (socket) => { connections.add(socket); socket.on('close', () => connections.delete(socket)); });
app.get('/health', (req, res) => { res.json({ status: 'ok', pid: process.pid }); });
app.get('/', (req, res) => { setTimeout(() => res.json({ hello: 'world' }), 100); });
server.listen(3000, () => { console.log(`Worker ${process.pid} listening on :3000`); });
const shutdown = (signal) => {
  console.log(`${signal} received, shutting down gracefully...`);
  server.close((err) => { if (err) { console.error('Error closing server:', err); process.exit(1); } console.log('Server closed. Exiting.'); process.exit(0); });
  for (const socket of connections) { socket.destroy(); }
  setTimeout(() => { console.error('Graceful shutdown timed out, forcing exit'); process.exit(1); }, 30_000);
};
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
