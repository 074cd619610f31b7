/*
 * The runtime's own WebSocket (globalThis.WebSocket: browsers, Node 22,
 * Node 20 with --experimental-websocket, which t/client-js.t passes when
 * the node it finds knows it), without the ws package.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../index.js';
import { SKIP, BASE, uniq, killWorkers, until } from './helpers.js';

const NATIVE = typeof globalThis.WebSocket === 'function';

test('global WebSocket: join, send and its ack, a message, a reconnection after a worker kill',
     { skip: SKIP || (NATIVE ? false : 'no global WebSocket in this node') }, async () => {
    const room = uniq('native');
    const c = connect(`${BASE}/chat`, { user: 'native', backoffMin: 200 });
    const got = [];
    const states = [];

    c.on('message', (m) => got.push(m.content));
    c.on('state', (s, d) => states.push([s, d.code]));

    try {
        await c.join(room);
        assert.equal(typeof await c.send(room, 'one'), 'string');
        await killWorkers();
        assert.equal(typeof await c.send(room, 'two'), 'string');
        await until(() => got.length === 2, 'two messages');
        assert.deepEqual(got, ['one', 'two']);
        assert.ok(states.some(([s, code]) => s === 'reconnecting' && code === 1006),
                  JSON.stringify(states));
    } finally {
        c.close();
    }
});
