/*
 * Token refresh and expiry (SPEC section 10) against a real nginx:
 * /chat-jwt of t/client-js.t verifies HS256 tokens signed with
 * CHAT_TEST_JWT_KEY.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tokenExpiry } from '../index.js';
import { SKIP_JWT, client, until, sleep, uniq, contents, mint } from './helpers.js';

const welcomes = (c) => c.log.in.filter((f) => f.type === 'welcome').length;

test('the refreshToken callback is called before exp: refreshed, the connection outlives the first token', { skip: SKIP_JWT }, async () => {
    const room = uniq('refresh');
    const first = mint('ivy', 3);
    const calls = [];
    const refreshed = [];
    let next = null;
    const c = client(undefined, {
        path: '/chat-jwt', token: first, refreshBefore: 1500,
        refreshToken: (old) => {
            calls.push(old);
            next = mint('ivy', 60);
            return next;
        }
    });

    c.on('refreshed', (r) => refreshed.push(r));

    try {
        await c.join(room);
        assert.equal(c.user, 'ivy', 'the user is the token\'s sub');

        await until(() => refreshed.length === 1, 'refreshed', 5000);
        assert.deepEqual(calls, [first], 'called once, with the current token');
        const sent = c.log.out.filter((f) => f.type === 'refresh');
        assert.equal(sent.length, 1);
        assert.equal(sent[0].token, next);
        assert.ok(Math.abs(refreshed[0].exp - tokenExpiry(next)) <= 1000,
                  `refreshed exp ${refreshed[0].exp} is the new token's`);
        assert.equal(c.token, next);

        /* past the first token's exp (and the server's skew) */
        await sleep(Math.max(0, tokenExpiry(first) - Date.now()) + 1500);
        assert.equal(c.state, 'open');
        assert.equal(welcomes(c), 1, 'still the first connection');
        assert.ok(!c.log.states.some((x) => x.s === 'reconnecting'));
        assert.equal(typeof await c.send(room, 'still here'), 'string');
    } finally {
        c.close();
    }
});

test('closed with 1008 "token expired": no retry until setToken(), then resume with since', { skip: SKIP_JWT }, async () => {
    const room = uniq('expired');
    const c = client(undefined, { path: '/chat-jwt', token: mint('jack', 2) });
    const other = client('kate');

    try {
        await c.join(room);
        await other.join(room);
        await other.send(room, 'before');
        await until(() => contents(c, room).length === 1, 'the first message');

        await until(() => c.log.states.some((x) => x.s === 'reconnecting'),
                    'the expiry', 8000);
        const r = c.log.states.find((x) => x.s === 'reconnecting');
        assert.equal(r.d.code, 1008);
        assert.match(r.d.reason, /token expired/);
        assert.equal(r.d.waitingForToken, true);
        assert.ok(c.log.errors.some((e) => e.code === 'token_expired'));

        await other.send(room, 'while expired 1');
        await other.send(room, 'while expired 2');
        const queued = c.send(room, 'queued while expired');

        /* no connection attempt meanwhile (back-off would be 100-200 ms) */
        await sleep(1500);
        assert.equal(welcomes(c), 1, 'no new connection without a token');
        assert.equal(c.state, 'reconnecting');

        c.setToken(mint('jack', 60));
        assert.equal(typeof await queued, 'string', 'the queued send went');
        await until(() => contents(c, room).length === 4, 'the missed messages');
        assert.deepEqual(contents(c, room), ['before', 'while expired 1',
                                             'while expired 2', 'queued while expired']);
        const joins = c.log.out.filter((f) => f.type === 'join');
        assert.equal(typeof joins[joins.length - 1].since, 'string');
        await until(() => contents(other, room).length === 4, 'kate has all');
        assert.equal(welcomes(c), 2);
    } finally {
        c.close();
        other.close();
    }
});

test('a refresh that failed: after the 1008 the callback is asked again and the client reconnects', { skip: SKIP_JWT }, async () => {
    const room = uniq('retry-token');
    let n = 0;
    const c = client(undefined, {
        path: '/chat-jwt', token: mint('liam', 2), refreshBefore: 1000,
        refreshToken: () => {
            if (++n === 1) {
                throw new Error('token service down');
            }
            return mint('liam', 60);
        }
    });

    try {
        await c.join(room);
        await until(() => welcomes(c) === 2, 'a second connection', 10000);
        assert.equal(n, 2, 'the callback was asked twice');
        assert.ok(c.log.errors.some((e) => e.code === 'refresh_failed'));
        const r = c.log.states.find((x) => x.s === 'reconnecting');
        assert.equal(r.d.code, 1008);
        await until(() => c.state === 'open', 'open');
        assert.equal(typeof await c.send(room, 'back'), 'string');
    } finally {
        c.close();
    }
});

test('a refresh for another sub is refused (forbidden): refresh_failed, the old token stays', { skip: SKIP_JWT }, async () => {
    const first = mint('mia', 60);
    const c = client(undefined, { path: '/chat-jwt', token: first });

    try {
        await until(() => c.state === 'open', 'open');
        c.setToken(mint('somebody-else', 60));
        await until(() => c.log.errors.some((e) => e.code === 'refresh_failed'),
                    'refresh_failed');
        assert.equal(c.token, first, 'the old token is kept');
        assert.equal(c.state, 'open');
    } finally {
        c.close();
    }
});
