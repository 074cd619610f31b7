/*
 * permessage-deflate against the npm "ws" client (t/deflate-ws.t runs it):
 * node deflate-ws.js PORT PATH.  For each perMessageDeflate configuration
 * (off, the defaults, windows 9-15 with and without no_context_takeover
 * offered, threshold 0 so that the client compresses everything it sends),
 * a client connects, checks what was negotiated, joins a room with 100
 * messages of history, sends a long and a short message, and checks that
 * it and a member without compression received them intact.  Prints
 * "ok N - name" / "not ok N - name" lines and "P passed, F failed".
 */

'use strict';

const WebSocket = require('ws');

const PORT = Number(process.argv[2]);
const PATH = process.argv[3] || '/chat';
const URL = `ws://127.0.0.1:${PORT}${PATH}`;

let n = 0;
let failed = 0;

function ok(cond, name, extra) {
    n++;
    if (!cond) {
        failed++;
    }
    console.log(`${cond ? 'ok' : 'not ok'} ${n} - ${name}`);
    if (!cond && extra) {
        console.log(`# ${extra}`);
    }
}

/* a client: its messages as they come, and a waiter for one of them */
function connect(user, pmd) {
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(`${URL}?user=${user}`,
                                 { perMessageDeflate: pmd });
        const c = { ws, inbox: [], waiters: [] };

        ws.on('message', (data, isBinary) => {
            let m;
            try {
                m = JSON.parse(data.toString('utf8'));
            } catch (e) {
                m = { type: 'unparsable', raw: data.toString('utf8') };
            }
            c.inbox.push(m);
            c.waiters = c.waiters.filter((w) => !w(m));
        });
        ws.on('upgrade', (res) => {
            c.ext = res.headers['sec-websocket-extensions'] || '';
        });
        ws.on('open', () => resolve(c));
        ws.on('error', reject);
        ws.on('close', (code) => { c.closed = code; });
    });
}

function take(c, pred, what, timeout) {
    return new Promise((resolve, reject) => {
        const i = c.inbox.findIndex(pred);
        if (i >= 0) {
            resolve(c.inbox.splice(i, 1)[0]);
            return;
        }
        const timer = setTimeout(() => {
            reject(new Error(`timeout waiting for ${what}`));
        }, timeout || 3000);
        c.waiters.push((m) => {
            if (!pred(m)) {
                return false;
            }
            clearTimeout(timer);
            c.inbox.splice(c.inbox.indexOf(m), 1);
            resolve(m);
            return true;
        });
    });
}

function send(c, obj) {
    c.ws.send(JSON.stringify(obj));
}

async function main() {
    const configs = [
        [ 'off', false, null ],
        [ 'ws defaults', true, /^permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15$/ ],
    ];

    for (let bits = 9; bits <= 15; bits++) {
        configs.push([ `window ${bits}, no_context_takeover offered`,
                       { serverMaxWindowBits: bits, clientMaxWindowBits: bits,
                         serverNoContextTakeover: true,
                         clientNoContextTakeover: true, threshold: 0 },
                       new RegExp(`server_max_window_bits=${bits}; client_max_window_bits=${bits}$`) ]);
        configs.push([ `window ${bits}, no_context_takeover not offered`,
                       { serverMaxWindowBits: bits, clientMaxWindowBits: bits,
                         threshold: 0 },
                       new RegExp(`server_max_window_bits=${bits}; client_max_window_bits=${bits}$`) ]);
    }

    configs.push([ 'server window 8: declined, uncompressed',
                   { serverMaxWindowBits: 8, threshold: 0 }, null ]);

    /* the room's history, and a member without compression */
    const seed = await connect('seed', false);
    await take(seed, (m) => m.type === 'welcome', 'welcome');
    send(seed, { type: 'join', room: 'wsroom' });
    await take(seed, (m) => m.type === 'joined', 'joined');
    for (let i = 1; i <= 100; i++) {
        send(seed, { type: 'send', room: 'wsroom', ref: `s${i}`,
                     content: `seed message ${i}: ${'lorem ipsum '.repeat(3)}` });
        await take(seed, (m) => m.type === 'ack' && m.ref === `s${i}`, 'ack');
    }

    for (const [name, pmd, want] of configs) {
        let c;
        try {
            c = await connect(`u${n}`, pmd);
        } catch (e) {
            ok(false, `${name}: connects`, e.message);
            continue;
        }
        const ext = c.ext;
        if (want) {
            ok(want.test(ext), `${name}: negotiated "${ext}"`);
        } else {
            ok(ext === '', `${name}: not negotiated`, `got "${ext}"`);
        }

        try {
            await take(c, (m) => m.type === 'welcome', 'welcome');

            /* the room's last 100 as the member without compression sees them */
            send(seed, { type: 'history', room: 'wsroom', limit: 100 });
            const plainHistory = JSON.stringify(
                await take(seed, (m) => m.type === 'history', 'history'));

            send(c, { type: 'join', room: 'wsroom', history: 100 });
            await take(c, (m) => m.type === 'joined', 'joined');
            const h = await take(c, (m) => m.type === 'history', 'history');
            ok(JSON.stringify(h) === plainHistory,
               `${name}: the 100-message history is the plain one`);

            const long = `${name} ` + 'compressible chat text, '.repeat(40)
                         + 'é✓😀';
            send(c, { type: 'send', room: 'wsroom', content: long, ref: 'L' });
            send(c, { type: 'send', room: 'wsroom', content: 'short', ref: 'S' });
            const a = await take(c, (m) => m.type === 'ack' && m.ref === 'L',
                                 'ack L');
            await take(c, (m) => m.type === 'ack' && m.ref === 'S', 'ack S');
            const mine = await take(c, (m) => m.type === 'message'
                                    && m.id === a.id, 'own message');
            const theirs = await take(seed, (m) => m.type === 'message'
                                      && m.id === a.id, 'seed copy');
            ok(mine.content === long && theirs.content === long
               && JSON.stringify(mine) === JSON.stringify(theirs),
               `${name}: the long message round-trips, identical for a `
               + 'member without compression');
            await take(c, (m) => m.type === 'message' && m.content === 'short',
                       'short message');
            await take(seed, (m) => m.type === 'message'
                       && m.content === 'short', 'seed short');
            ok(true, `${name}: the short message too`);
        } catch (e) {
            ok(false, `${name}: exchange`, e.message);
        }

        c.ws.close();
    }

    seed.ws.close();
}

main().then(() => {
    console.log(`${n - failed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
}, (e) => {
    console.log(`not ok ${++n} - ${e.message}`);
    console.log(`${n - failed - 1} passed, ${failed + 1} failed`);
    process.exit(1);
});
