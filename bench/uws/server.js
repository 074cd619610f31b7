'use strict';
/*
 * A uWebSockets.js chat server written the way uWS users write one, for
 * bench/compare (NOT the product): the anchor of issue 16.  One process (how
 * uWS pub/sub is deployed), rooms are uWS topics, the subset of our protocol
 * (SPEC.md sections 3-4) that bench/chatbench --protocol chat speaks:
 *
 *   upgrade            ?user=U (empty: 401), then {"type":"welcome","user":U}
 *   join  {room}       ws.subscribe(room) -> {"type":"joined","room","members"}
 *   send  {room,content,ref}
 *                      app.publish(room, {"type":"message",room,id,user,
 *                      content,ts}) to every subscriber, the sender included,
 *                      then {"type":"ack","ref","id"} to the sender
 *   leave {room}       ws.unsubscribe(room) -> {"type":"left","room"}
 *   anything else      {"type":"error","code":"bad_request"|"not_member",...}
 *
 * No presence, no history, no storage: uWS's best case.  Slow readers are
 * treated as ours are (chat_send_buffer 256k): past 256 KiB of backpressure
 * the connection is closed (closeOnBackpressureLimit), never silently
 * skipped.
 *
 * Options: --port N (3000)  --host ADDR (127.0.0.1)  --pidfile FILE
 *
 * The package is @trufflesuite/uws-js-unofficial, which ships uWS's prebuilt
 * binaries for Node 16/18/20 but falls back to a JavaScript (ws) imitation
 * when none fits: the binary is loaded directly here, so a missing one is an
 * error, never a silent fallback.
 */

const fs = require('node:fs');
const path = require('node:path');

function parseArgs(argv) {
  const o = { port: 3000, host: '127.0.0.1', pidfile: null };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    switch (a) {
      case '--port': o.port = Number(v); i++; break;
      case '--host': o.host = v; i++; break;
      case '--pidfile': o.pidfile = v; i++; break;
      default:
        console.error(`server.js: unknown option ${a}`);
        process.exit(2);
    }
  }
  return o;
}

function loadNative() {
  const dir = path.dirname(require.resolve('uWebSockets.js/package.json'));
  const bin = path.join(dir, 'binaries',
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
  try {
    return require(bin);
  } catch (e) {
    console.error(`server.js: no native uWebSockets.js binary for this Node (${bin}): ${e.message}`);
    process.exit(1);
  }
}

const opt = parseArgs(process.argv);
const uWS = loadNative();

const decoder = new TextDecoder();
let seq = 0;

const error = (code, message, ref) => JSON.stringify(
  ref === undefined ? { type: 'error', code, message } : { type: 'error', code, message, ref });

const app = uWS.App().ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 16 * 1024,
  maxBackpressure: 256 * 1024,
  closeOnBackpressureLimit: true,
  idleTimeout: 120,

  upgrade: (res, req, context) => {
    const user = req.getQuery('user');
    if (!user) {
      res.writeStatus('401 Unauthorized').end();
      return;
    }
    res.upgrade({ user },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context);
  },

  open: (ws) => {
    ws.send(JSON.stringify({ type: 'welcome', user: ws.getUserData().user }));
  },

  message: (ws, message, isBinary) => {
    if (isBinary) {
      ws.end(1003, 'binary');
      return;
    }
    let m;
    try {
      m = JSON.parse(decoder.decode(message));
    } catch (e) {
      ws.send(error('bad_request', 'not JSON'));
      return;
    }
    if (m === null || typeof m !== 'object') {
      ws.send(error('bad_request', 'not an object'));
      return;
    }
    const { room, ref } = m;
    if (typeof room !== 'string' || room === '' || room.length > 128) {
      ws.send(error('bad_request', 'bad room', ref));
      return;
    }
    switch (m.type) {
      case 'join':
        ws.subscribe(room);
        ws.send(JSON.stringify({ type: 'joined', room, members: app.numSubscribers(room) }));
        return;

      case 'send': {
        if (typeof m.content !== 'string') {
          ws.send(error('bad_request', 'content must be a string', ref));
          return;
        }
        if (!ws.isSubscribed(room)) {
          ws.send(error('not_member', 'join the room first', ref));
          return;
        }
        const id = String(++seq);
        app.publish(room, JSON.stringify({
          type: 'message', room, id, user: ws.getUserData().user,
          content: m.content, ts: Date.now(),
        }));
        ws.send(JSON.stringify(ref === undefined ? { type: 'ack', id } : { type: 'ack', ref, id }));
        return;
      }

      case 'leave':
        if (!ws.unsubscribe(room)) {
          ws.send(error('not_member', 'not in the room'));
          return;
        }
        ws.send(JSON.stringify({ type: 'left', room }));
        return;

      default:
        ws.send(error('bad_request', 'unknown type', ref));
    }
  },
});

app.listen(opt.host, opt.port, (listenSocket) => {
  if (!listenSocket) {
    console.error(`server.js: cannot listen on ${opt.host}:${opt.port}`);
    process.exit(1);
  }
  if (opt.pidfile) fs.writeFileSync(opt.pidfile, `${process.pid}\n`);
  console.error(`server.js: uWebSockets.js on ${opt.host}:${opt.port} pid ${process.pid}`);
});

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
