'use strict';
/*
 * A Socket.io v4 chat server written the way our users write one, for
 * bench/compare (NOT the product).  Two variants:
 *
 *   --mode memory     rooms in the process, nothing else (the default adapter)
 *   --mode redis-pg   @socket.io/redis-adapter on a Redis server, and every
 *                     message INSERTed into PostgreSQL (awaited) before it is
 *                     emitted to the room and acknowledged
 *
 * Events (what bench/chatbench --protocol socketio speaks):
 *   client 'join-room'    (room, ack?)            socket.join(room); ack({ok})
 *   client 'send-message' ({room, content}, ack?)  [INSERT], emit, ack({ok,id})
 *   server 'receive-message' {room, id, user, content, ts}   to the room
 *   server 'user-joined'     {room, user}                     to the others
 *
 * Options: --port N (3000)  --host ADDR (127.0.0.1)  --pidfile FILE
 *          --mode memory|redis-pg  --redis URL (redis://127.0.0.1:6379)
 *          --pg URL (postgres://chat@127.0.0.1:5432/chat)
 *          --workers N (1): N > 1 runs N processes under node:cluster
 *                    (connections spread round-robin); only with redis-pg,
 *                    whose adapter carries broadcasts between processes
 *
 * The user id comes from ?user= of the handshake, as with the module.
 * Listens on loopback only by default.
 */

const cluster = require('node:cluster');
const fs = require('node:fs');
const http = require('node:http');

function parseArgs(argv) {
  const o = {
    port: 3000, host: '127.0.0.1', pidfile: null, mode: 'memory',
    redis: 'redis://127.0.0.1:6379', pg: 'postgres://chat@127.0.0.1:5432/chat',
    workers: 1,
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    switch (a) {
      case '--port': o.port = Number(v); i++; break;
      case '--host': o.host = v; i++; break;
      case '--pidfile': o.pidfile = v; i++; break;
      case '--mode': o.mode = v; i++; break;
      case '--redis': o.redis = v; i++; break;
      case '--pg': o.pg = v; i++; break;
      case '--workers': o.workers = Number(v); i++; break;
      default:
        console.error(`server.js: unknown option ${a}`);
        process.exit(2);
    }
  }
  if (o.mode !== 'memory' && o.mode !== 'redis-pg') {
    console.error('server.js: --mode memory|redis-pg');
    process.exit(2);
  }
  if (o.workers > 1 && o.mode === 'memory') {
    console.error('server.js: --workers > 1 needs --mode redis-pg (rooms would be per process)');
    process.exit(2);
  }
  return o;
}

const opt = parseArgs(process.argv);

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  id         bigserial PRIMARY KEY,
  room_id    text NOT NULL,
  user_id    text NOT NULL,
  content    text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS messages_room_created ON messages (room_id, created_at);
`;

async function primary() {
  if (opt.mode === 'redis-pg') {
    // create the table once, before any worker inserts
    const { Client } = require('pg');
    const c = new Client({ connectionString: opt.pg });
    await c.connect();
    await c.query(SCHEMA);
    await c.end();
  }
  for (let i = 0; i < opt.workers; i++) cluster.fork();
  let ready = 0;
  cluster.on('message', (w, m) => {
    if (m === 'listening' && ++ready === opt.workers && opt.pidfile) {
      fs.writeFileSync(opt.pidfile, `${process.pid}\n`);
    }
  });
  cluster.on('exit', (w, code, sig) => {
    console.error(`server.js: worker ${w.process.pid} exited (${sig || code})`);
  });
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function server() {
  const { Server } = require('socket.io');
  const httpServer = http.createServer();
  const io = new Server(httpServer);
  let pool = null;
  let seq = 0;

  if (opt.mode === 'redis-pg') {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const { Pool } = require('pg');

    const pubClient = createClient({ url: opt.redis });
    const subClient = pubClient.duplicate();
    pubClient.on('error', (e) => console.error('redis:', e.message));
    subClient.on('error', (e) => console.error('redis:', e.message));
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));

    pool = new Pool({ connectionString: opt.pg });
    pool.on('error', (e) => console.error('pg:', e.message));
    if (!cluster.isWorker) await pool.query(SCHEMA);
  }

  io.on('connection', (socket) => {
    const user = String(socket.handshake.query.user || socket.id);

    socket.on('join-room', (room, ack) => {
      if (typeof room !== 'string' || room === '') {
        if (typeof ack === 'function') ack({ ok: false, error: 'bad_request' });
        return;
      }
      socket.join(room);
      socket.to(room).emit('user-joined', { room, user });
      if (typeof ack === 'function') ack({ ok: true, room });
    });

    socket.on('send-message', async (data, ack) => {
      const room = data && data.room;
      const content = data && data.content;
      if (typeof room !== 'string' || typeof content !== 'string') {
        if (typeof ack === 'function') ack({ ok: false, error: 'bad_request' });
        return;
      }
      if (!socket.rooms.has(room)) {
        if (typeof ack === 'function') ack({ ok: false, error: 'not_member' });
        return;
      }
      try {
        let id, ts;
        if (pool) {
          const r = await pool.query(
            'INSERT INTO messages (room_id, user_id, content) VALUES ($1, $2, $3) '
            + 'RETURNING id, created_at', [room, user, content]);
          id = String(r.rows[0].id);
          ts = r.rows[0].created_at.getTime();
        } else {
          id = String(++seq);
          ts = Date.now();
        }
        io.to(room).emit('receive-message', { room, id, user, content, ts });
        if (typeof ack === 'function') ack({ ok: true, id });
      } catch (e) {
        console.error('send-message:', e.message);
        if (typeof ack === 'function') ack({ ok: false, error: 'unavailable' });
      }
    });
  });

  httpServer.listen(opt.port, opt.host, () => {
    if (cluster.isWorker) {
      process.send('listening');
    } else if (opt.pidfile) {
      fs.writeFileSync(opt.pidfile, `${process.pid}\n`);
    }
    console.error(`server.js: ${opt.mode} on ${opt.host}:${opt.port} pid ${process.pid}`);
  });

  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

const main = opt.workers > 1 && cluster.isPrimary ? primary : server;
main().catch((e) => {
  console.error('server.js:', e.stack || e.message);
  process.exit(1);
});
