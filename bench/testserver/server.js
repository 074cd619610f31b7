'use strict';
// Tiny WebSocket chat server implementing the ngx_chat_module wire protocol,
// used ONLY to validate bench/chatbench (counts, latency, framing).  It is not
// the product and makes no attempt at being fast.
//
//   node server.js [--port 8089] [--host 127.0.0.1] [--pidfile FILE]
//                  [--ping-ms N]      send a WebSocket ping to every client every N ms
//                  [--fragment]       send every message frame as 3 WebSocket fragments
//                  [--presence]       broadcast presence on join/leave (default on)
//                  [--no-presence]
//                  [--drop-every K]   silently drop every K-th delivery (tests loss counting)
//                  [--dup-every K]    deliver every K-th delivery twice (tests dup counting)
//                  [--rate-limit N]   refuse sends above N/s per connection (rate_limited)
//
// Protocol (text frames, one JSON object each):
//   C->S {"type":"join","room":R} {"type":"leave","room":R}
//        {"type":"send","room":R,"content":T,"ref":REF} {"type":"who","room":R}
//   S->C {"type":"welcome","user":U} {"type":"joined","room":R,"members":N}
//        {"type":"message","room":R,"id":ID,"user":U,"content":T,"ts":MS}
//        {"type":"ack","ref":REF,"id":ID} {"type":"presence",...}
//        {"type":"error","code":C,"message":T}

const http = require('http');
const fs = require('fs');
const { WebSocketServer } = require('ws');

const argv = process.argv.slice(2);
function opt(name, def) {
  const i = argv.indexOf(name);
  if (i < 0) return def;
  return argv[i + 1];
}
const flag = (name) => argv.includes(name);

const port = parseInt(opt('--port', '8089'), 10);
const host = opt('--host', '127.0.0.1');
const pidfile = opt('--pidfile', null);
const pingMs = parseInt(opt('--ping-ms', '0'), 10);
const fragment = flag('--fragment');
const presence = !flag('--no-presence');
const dropEvery = parseInt(opt('--drop-every', '0'), 10);
const dupEvery = parseInt(opt('--dup-every', '0'), 10);
const rateLimit = parseFloat(opt('--rate-limit', '0'));

const rooms = new Map();          // room -> Set(ws)
let nextId = 1;
let deliveries = 0;

function sendFrame(ws, obj) {
  if (ws.readyState !== 1) return;
  const s = typeof obj === 'string' ? obj : JSON.stringify(obj);
  if (!fragment || s.length < 3) {
    ws.send(s);
    return;
  }
  const a = Math.floor(s.length / 3), b = Math.floor((2 * s.length) / 3);
  ws.send(s.slice(0, a), { fin: false });
  ws.send(s.slice(a, b), { fin: false });
  ws.send(s.slice(b), { fin: true });
}

function err(ws, code, message, extra) {
  sendFrame(ws, Object.assign({ type: 'error', code, message }, extra || {}));
}

const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end('not found\n');
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/chat') {
    socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  const user = url.searchParams.get('user');
  if (!user) {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.user = user;
    ws.rooms = new Set();
    socket.setNoDelay(true);
    wss.emit('connection', ws);
  });
});

function leaveRoom(ws, room, reason) {
  const set = rooms.get(room);
  if (!set || !set.has(ws)) return false;
  set.delete(ws);
  ws.rooms.delete(room);
  if (set.size === 0) rooms.delete(room);
  else if (presence) {
    const p = JSON.stringify({ type: 'presence', room, user: ws.user, event: reason, members: set.size });
    for (const m of set) sendFrame(m, p);
  }
  return true;
}

wss.on('connection', (ws) => {
  sendFrame(ws, { type: 'welcome', user: ws.user });

  ws.on('message', (data, isBinary) => {
    if (isBinary) return err(ws, 'bad_frame', 'binary frames not supported');
    let m;
    try { m = JSON.parse(data.toString('utf8')); } catch (e) {
      return err(ws, 'bad_json', 'invalid JSON');
    }
    if (!m || typeof m !== 'object' || typeof m.type !== 'string') {
      return err(ws, 'bad_request', 'missing type');
    }
    const room = m.room;
    if (m.type !== 'send' && typeof room !== 'string') {
      return err(ws, 'bad_request', 'missing room');
    }
    switch (m.type) {
      case 'join': {
        let set = rooms.get(room);
        if (!set) { set = new Set(); rooms.set(room, set); }
        if (!set.has(ws)) {
          set.add(ws);
          ws.rooms.add(room);
          if (presence) {
            const p = JSON.stringify({ type: 'presence', room, user: ws.user, event: 'join', members: set.size });
            for (const o of set) if (o !== ws) sendFrame(o, p);
          }
        }
        sendFrame(ws, { type: 'joined', room, members: set.size });
        break;
      }
      case 'leave':
        if (!leaveRoom(ws, room, 'leave')) return err(ws, 'not_member', 'not in room', { room });
        sendFrame(ws, { type: 'left', room });
        break;
      case 'who': {
        const set = rooms.get(room);
        if (!set || !set.has(ws)) return err(ws, 'not_member', 'not in room', { room });
        sendFrame(ws, { type: 'who', room, users: [...set].map((x) => x.user) });
        break;
      }
      case 'send': {
        if (typeof room !== 'string' || typeof m.content !== 'string') {
          return err(ws, 'bad_request', 'send needs room and content', { ref: m.ref });
        }
        const set = rooms.get(room);
        if (!set || !set.has(ws)) return err(ws, 'not_member', 'not in room', { room, ref: m.ref });
        if (rateLimit > 0) {
          // token bucket, burst 1
          const now = Date.now();
          ws.tokens = Math.min(1, (ws.tokens === undefined ? 1 : ws.tokens) +
                               (now - (ws.tlast || now)) * rateLimit / 1000);
          ws.tlast = now;
          if (ws.tokens < 1) {
            return err(ws, 'rate_limited', 'slow down', {
              ref: m.ref, retry_after_ms: Math.ceil((1 - ws.tokens) * 1000 / rateLimit) });
          }
          ws.tokens -= 1;
        }
        const id = nextId++;
        const s = JSON.stringify({ type: 'message', room, id, user: ws.user, content: m.content, ts: Date.now() });
        for (const o of set) {
          deliveries++;
          if (dropEvery && deliveries % dropEvery === 0) continue;
          sendFrame(o, s);
          if (dupEvery && deliveries % dupEvery === 0) sendFrame(o, s);
        }
        sendFrame(ws, { type: 'ack', ref: m.ref, id });
        break;
      }
      default:
        err(ws, 'unknown_type', 'unknown type');
    }
  });

  ws.on('close', () => {
    for (const r of [...ws.rooms]) leaveRoom(ws, r, 'leave');
  });
  ws.on('error', () => {});
});

if (pingMs > 0) {
  setInterval(() => {
    for (const ws of wss.clients) if (ws.readyState === 1) ws.ping('pp');
  }, pingMs);
}

server.listen(port, host, () => {
  if (pidfile) fs.writeFileSync(pidfile, process.pid + '\n');
  console.log(`testserver listening on ${host}:${port} pid ${process.pid}` +
              (fragment ? ' (fragmenting)' : '') + (pingMs ? ` (ping every ${pingMs} ms)` : ''));
});

function shutdown() {
  console.error(`testserver: ${deliveries} deliveries attempted`);
  if (pidfile) { try { fs.unlinkSync(pidfile); } catch (e) { /* ignore */ } }
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
