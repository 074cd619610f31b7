/*
 * ngx-chat-client against a real nginx (started by t/client-js.t):
 * acks, errors, history, who, dedupe, gaps, rate-limit retry, and
 * resume across a worker kill and a reload without loss or duplicates.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { ChatError } from '../index.js';
import { SKIP, PORT, client, opened, until, sleep, uniq, ids, contents,
         killWorkers, reload, workers } from './helpers.js';

test('send resolves with the id of its ack; every member gets the message once', { skip: SKIP }, async () => {
    const room = uniq('acks');
    const a = client('alice');
    const b = client('bob');

    try {
        const ja = await a.join(room, { history: 10 });
        assert.equal(ja.room, room);
        assert.equal(ja.members, 1);
        assert.deepEqual(ja.messages, []);
        assert.equal(a.user, 'alice');

        const jb = await b.join(room);
        assert.equal(jb.members, 2);

        const got = [];
        for (let i = 0; i < 5; i++) {
            got.push(a.send(room, 'm' + i));
        }
        const acked = await Promise.all(got);

        assert.equal(new Set(acked).size, 5, 'five different ids');
        for (const id of acked) {
            assert.equal(typeof id, 'string');
        }

        /* the acks are the ids of the messages the members got */
        for (const c of [a, b]) {
            await until(() => ids(c, room).length === 5, 'five messages');
            assert.deepEqual(ids(c, room), acked);
            assert.deepEqual(contents(c, room), ['m0', 'm1', 'm2', 'm3', 'm4']);
        }

        /* the send frames carried their refs, each once */
        const refs = a.log.out.filter((f) => f.type === 'send').map((f) => f.ref);
        assert.equal(refs.length, 5);
        assert.equal(new Set(refs).size, 5);
        assert.deepEqual(a.log.in.filter((f) => f.type === 'ack').map((f) => f.ref), refs);
    } finally {
        a.close();
        b.close();
    }
});

test('errors reject with their code; history, who, leave; presence events', { skip: SKIP }, async () => {
    const room = uniq('errors');
    const a = client('carol');
    const b = client('dave');
    const presence = [];

    a.on('presence', (p) => presence.push(p));

    try {
        await opened(a);

        await assert.rejects(a.send(uniq('not-joined'), 'x'), (e) => {
            assert.ok(e instanceof ChatError);
            assert.equal(e.code, 'not_member');
            return true;
        });

        await assert.rejects(a.who(uniq('not-joined')), { code: 'not_member' });
        await assert.rejects(a.send(room, 'x'.repeat(5000)), { code: 'too_big' });

        await a.join(room);
        await b.join(room);
        await until(() => presence.some((p) => p.user === 'dave' && p.event === 'join'),
                    'presence join of dave');
        assert.deepEqual((await a.who(room)).sort(), ['carol', 'dave']);

        const sent = [];
        for (let i = 0; i < 6; i++) {
            sent.push(await b.send(room, 'h' + i));
        }

        const h = await a.history(room, { limit: 3 });
        assert.deepEqual(h.messages.map((m) => m.content), ['h3', 'h4', 'h5']);
        assert.equal(h.complete, true);
        const older = await a.history(room, { limit: 10, before: h.messages[0].id });
        assert.deepEqual(older.messages.map((m) => m.content), ['h0', 'h1', 'h2']);

        await b.leave(room);
        await until(() => presence.some((p) => p.user === 'dave' && p.event === 'leave'),
                    'presence leave of dave');
        assert.deepEqual(await a.who(room), ['carol']);
        await assert.rejects(b.send(room, 'after leave'), { code: 'not_member' });
    } finally {
        a.close();
        b.close();
    }
});

test('joining a joined room again replays nothing; since an unknown id is a gap', { skip: SKIP }, async () => {
    const room = uniq('rejoin');
    const a = client('erin');

    try {
        /* two joins before the connection is open: one join frame */
        const twice = await Promise.all([a.join(room, { history: 50 }),
                                         a.join(room, { history: 50 })]);
        assert.equal(twice[0].members, 1);
        assert.equal(twice[1].members, 1);
        assert.equal(a.log.out.filter((f) => f.type === 'join').length, 1);

        /* a join of a joined room: the server answers "joined" only */
        await a.join(room, { history: 50 });
        const joins = a.log.out.filter((f) => f.type === 'join');
        assert.equal(joins[0].history, 50);
        assert.equal(joins[1].history, undefined, 'no replay asked twice');

        for (let i = 0; i < 3; i++) {
            await a.send(room, 'd' + i);
        }
        await until(() => ids(a, room).length === 3, 'three messages');

        const again = await a.join(room, { history: 50 });
        assert.deepEqual(again.messages, []);
        await sleep(200);
        assert.deepEqual(contents(a, room), ['d0', 'd1', 'd2']);

        const other = uniq('gap');
        const j = await a.join(other, { since: '999999999-unknown' });
        assert.equal(j.complete, false);
        assert.deepEqual(a.log.gaps, [{ room: other, since: '999999999-unknown' }]);
    } finally {
        a.close();
    }
});

test('dedupe by id: a resume from an older id replays what was seen, nothing comes twice', { skip: SKIP }, async () => {
    const room = uniq('dedupe');
    const a = client('olga');
    const b = client('pete');

    try {
        await a.join(room);
        await b.join(room);
        const sent = [];
        for (let i = 0; i < 5; i++) {
            sent.push(await b.send(room, 'x' + i));
        }
        await until(() => ids(a, room).length === 5, 'five messages');

        /* offline, the app asks to resume from the first id it has */
        await killWorkers();
        await until(() => a.state === 'reconnecting', 'reconnecting');
        const j = await a.join(room, { since: sent[0] });

        const replay = a.log.in.filter((f) => f.type === 'history').pop();
        assert.deepEqual(replay.messages.map((m) => m.content),
                         ['x1', 'x2', 'x3', 'x4'], 'the server replayed four seen ones');
        assert.deepEqual(j.messages, [], 'none of them is new');
        await b.send(room, 'x5');
        await until(() => ids(a, room).length === 6, 'x5');
        await sleep(200);
        assert.deepEqual(contents(a, room), ['x0', 'x1', 'x2', 'x3', 'x4', 'x5']);
    } finally {
        a.close();
        b.close();
    }
});

test('rate_limited: retried after retry_after_ms when asked to, else rejected with it', { skip: SKIP }, async () => {
    const room = uniq('rate');
    const a = client('frank', { path: '/chat-slow', retryRateLimited: true,
                                maxRateLimitRetries: 20 });
    const b = client('grace', { path: '/chat-slow' });

    try {
        await a.join(room);
        await b.join(room);

        const t0 = Date.now();
        const sends = [];
        for (let i = 0; i < 8; i++) {
            sends.push(a.send(room, 'r' + i));
        }
        const acked = await Promise.all(sends);
        const took = Date.now() - t0;

        assert.equal(new Set(acked).size, 8);
        assert.ok(a.log.retries.length >= 1, 'some sends were retried');
        assert.ok(took >= 1500, `2r/s burst=2: 8 sends take >= 1.5 s (took ${took} ms)`);
        await until(() => contents(b, room).length === 8, 'eight messages at grace');
        assert.deepEqual(contents(b, room), ['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7'],
                         'in order, each once');

        const results = await Promise.allSettled(
            Array.from({ length: 8 }, (_, i) => b.send(room, 'n' + i)));
        const refused = results.filter((r) => r.status === 'rejected');
        assert.ok(refused.length >= 1, 'without retry some are refused');
        for (const r of refused) {
            assert.equal(r.reason.code, 'rate_limited');
            assert.equal(typeof r.reason.retryAfterMs, 'number');
            assert.ok(r.reason.retryAfterMs > 0);
        }
        const ok = results.filter((r) => r.status === 'fulfilled').length;
        await sleep(300);
        assert.equal(contents(a, room).filter((c) => c[0] === 'n').length, ok,
                     'refused sends are delivered to no one');
    } finally {
        a.close();
        b.close();
    }
});

/*
 * bob sends a stream of messages without waiting for acks; meanwhile the
 * connections of both are cut.  Every send must resolve, with an id, and
 * alice and bob must end with exactly the acked ids, in order, once.
 */
async function resumeAcross(what, disrupt) {
    const room = uniq(what);
    const a = client('alice-' + what);
    const b = client('bob-' + what);

    try {
        await a.join(room, { history: 10 });
        await b.join(room, { history: 10 });

        const sends = [];
        const want = [];
        let disrupted = null;
        let done = false;
        let after = 0;

        /* sends before, during and after the disruption */
        for (let i = 0; after < 10; i++) {
            want.push('s' + i);
            sends.push(b.send(room, 's' + i));

            if (i === 10) {
                disrupted = disrupt().then(() => { done = true; });
            }

            if (done) {
                after++;
            }

            await sleep(25);
        }

        await disrupted;
        const n = sends.length;

        const acked = await Promise.all(sends);
        assert.equal(new Set(acked).size, n, 'every send acked with its own id');

        for (const c of [a, b]) {
            await until(() => ids(c, room).length >= n, `${c.user}: ${n} messages`, 20000);
            await sleep(300);
            assert.deepEqual(contents(c, room), want, `${c.user}: each once, in order`);
            assert.deepEqual(ids(c, room), acked, `${c.user}: the acked ids`);

            const joins = c.log.out.filter((f) => f.type === 'join');
            assert.ok(joins.length >= 2, `${c.user} joined again`);
            const rejoin = joins[joins.length - 1];
            assert.equal(typeof rejoin.since, 'string', 'rejoin with since');
            assert.ok(ids(c, room).includes(rejoin.since), 'since is an id it had seen');
            assert.ok(c.log.states.some((x) => x.s === 'reconnecting'));
            assert.equal(c.state, 'open');
        }

        /* the refs of the sends: each on the wire at most twice (a resend
         * only when the connection was lost before any answer) */
        const refs = b.log.out.filter((f) => f.type === 'send').map((f) => f.ref);
        assert.equal(new Set(refs).size, n);

        return { a, b };
    } finally {
        a.close();
        b.close();
    }
}

test('resume across a worker kill (SIGKILL): no loss, no duplicates, queued sends sent once', { skip: SKIP }, async () => {
    const { a, b } = await resumeAcross('kill', killWorkers);

    for (const c of [a, b]) {
        const r = c.log.states.find((x) => x.s === 'reconnecting');
        assert.equal(r.d.code, 1006, 'a killed worker: 1006');
    }
});

test('resume across nginx -s reload (old workers close with 1001)', { skip: SKIP }, async () => {
    const { a, b } = await resumeAcross('reload', reload);

    for (const c of [a, b]) {
        const r = c.log.states.find((x) => x.s === 'reconnecting');
        assert.equal(r.d.code, 1001, 'worker_shutdown_timeout: 1001');
    }
});

test('a backend\'s chat_api disconnect (1008 "disconnected") is not undone by a reconnection', { skip: SKIP }, async () => {
    const room = uniq('kick');
    const a = client('quinn');

    try {
        await a.join(room);
        const pending = a.join(uniq('never'));
        pending.catch(() => {});
        const r = await fetch(`http://127.0.0.1:${PORT}/chat/api`, {
            method: 'POST', headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ type: 'disconnect', user: 'quinn' })
        });
        assert.equal(r.status, 200);
        assert.deepEqual(await r.json(), { closed: 1 });

        await until(() => a.state === 'closed', 'closed');
        const last = a.log.states[a.log.states.length - 1];
        assert.deepEqual(last.d, { code: 1008, reason: 'disconnected' });
        assert.ok(a.log.errors.some((e) => e.code === 'disconnected'));
        await assert.rejects(a.send(room, 'x'), { code: 'closed' });
        const n = a.log.in.length;
        await sleep(700);
        assert.equal(a.log.in.length, n, 'no new connection');
    } finally {
        a.close();
    }
});

test('close() ends it: no reconnection, sends refused', { skip: SKIP }, async () => {
    const a = client('henry');

    await opened(a);
    a.close();
    assert.equal(a.state, 'closed');
    await assert.rejects(a.send('x', 'y'), { code: 'closed' });
    const n = a.log.in.length;
    await sleep(600);
    assert.equal(a.log.in.length, n, 'no new connection');
    assert.deepEqual(a.log.states.map((x) => x.s), ['connecting', 'open', 'closed']);
});

test('a burst cut by a worker kill while the sender is busy: unacked sends recognised in the replay or sent again, each message once', { skip: SKIP }, async () => {
    const room = uniq('burst');
    const a = client('alice-burst');
    const b = client('bob-burst');
    const N = 4000;
    const pad = ' ' + 'x'.repeat(3000);

    try {
        await a.join(room);
        await b.join(room);

        const want = [];
        const sends = [];

        for (let i = 0; i < N; i++) {
            want.push('b' + i + pad);
            sends.push(b.send(room, 'b' + i + pad));
        }

        /*
         * bob reads nothing for a second, the workers are killed in the
         * middle of it (by a child: this process is busy): the worker has
         * accepted some of the burst, with acks bob will never read, and
         * not read the rest
         */
        spawn('sh', ['-c', 'sleep 0.4; kill -9 ' + workers().join(' ')],
              { stdio: 'ignore' });
        const end = Date.now() + 1000;
        while (Date.now() < end) {
            /* busy */
        }

        const acked = await Promise.all(sends);

        assert.equal(new Set(acked).size, N, 'every send resolved with its own id');
        await until(() => b.log.states.some((x) => x.s === 'reconnecting'),
                    'bob to see the kill');

        for (const c of [a, b]) {
            await until(() => ids(c, room).length >= N, `${c.user}: ${N} messages`
                        + ` (has ${ids(c, room).length}, gaps ${c.log.gaps.length})`,
                        20000).catch((e) => e);
            await sleep(300);
            assert.equal(contents(c, room).length, N, `${c.user}: ${N} messages`);
            assert.ok(contents(c, room).every((x, i) => x === want[i]),
                      `${c.user}: each once, in order`);
            assert.deepEqual(ids(c, room), acked, `${c.user}: the acked ids`);
        }

        assert.deepEqual(a.log.gaps, [], 'no gap: the room kept them all');
        const got = b.log.in.filter((f) => f.type === 'ack').length;
        const resent = b.log.out.filter((f) => f.type === 'send').length - N;
        console.log(`# ${got} acks received, ${N - got} sends resolved from`
                    + ` what was seen, ${resent} sent again`);
    } finally {
        a.close();
        b.close();
    }
});

test('back-off: exponential, capped, half to all of each step (jitter), 1006 retried', async () => {
    const net = await import('node:net');
    const srv = net.createServer();
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    const port = srv.address().port;
    await new Promise((r) => srv.close(r));     /* nothing listens there now */

    const WebSocket = (await import('ws')).default;
    const { connect } = await import('../index.js');
    const c = connect(`ws://127.0.0.1:${port}/chat`, {
        user: 'nobody', WebSocket, backoffMin: 100, backoffMax: 400
    });
    const seen = [];

    c.on('reconnecting', (d) => seen.push(d));

    try {
        await until(() => seen.length >= 6, 'six attempts', 10000);
    } finally {
        c.close();
    }

    const caps = [100, 200, 400, 400, 400, 400];
    seen.slice(0, 6).forEach((d, i) => {
        assert.equal(d.code, 1006);
        assert.equal(d.attempt, i + 1);
        assert.ok(d.delay >= caps[i] / 2 && d.delay <= caps[i],
                  `attempt ${i + 1}: ${d.delay} ms within [${caps[i] / 2}, ${caps[i]}]`);
    });
    assert.ok(new Set(seen.map((d) => d.delay)).size > 1, 'jittered');
    assert.equal(c.state, 'closed');
});
