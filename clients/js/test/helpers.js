/*
 * Test helpers: the nginx started by t/client-js.t (CHAT_TEST_PORT,
 * CHAT_TEST_MASTER_PID), its workers, and clients that record
 * everything they see.
 */

import crypto from 'node:crypto';
import fs from 'node:fs';
import WebSocket from 'ws';
import { connect } from '../index.js';

export const PORT = Number(process.env.CHAT_TEST_PORT || 0);
export const MASTER = Number(process.env.CHAT_TEST_MASTER_PID || 0);
export const BASE = `ws://127.0.0.1:${PORT}`;
export const HAVE_NGINX = PORT > 0 && MASTER > 0;
export const SKIP = HAVE_NGINX ? false
    : 'no nginx: run through t/client-js.t (CHAT_TEST_PORT, CHAT_TEST_MASTER_PID)';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let seq = 0;

export function uniq(prefix) {
    return `${prefix}-${process.pid}-${Date.now().toString(36)}-${++seq}`;
}

/* a client with a log of its states, messages, gaps, errors and frames */
export function client(user, opts) {
    const c = connect(`${BASE}${(opts && opts.path) || '/chat'}`,
                      Object.assign({ user, WebSocket, backoffMin: 200,
                                      backoffMax: 2000 }, opts || {}));

    c.log = { states: [], messages: [], gaps: [], errors: [], out: [],
              in: [], retries: [] };
    c.on('state', (s, d) => c.log.states.push({ s, d }));
    c.on('message', (m, meta) => c.log.messages.push({ m, meta }));
    c.on('gap', (g) => c.log.gaps.push(g));
    c.on('error', (e) => c.log.errors.push(e));
    c.on('retry', (r) => c.log.retries.push(r));
    c.on('frame', (dir, f) => c.log[dir].push(f));

    return c;
}

export async function until(fn, what, ms) {
    const end = Date.now() + (ms || 10000);

    for (;;) {
        const v = await fn();

        if (v) {
            return v;
        }

        if (Date.now() > end) {
            throw new Error(`timed out waiting for ${what}`);
        }

        await sleep(20);
    }
}

export function opened(c, ms) {
    return until(() => c.state === 'open', `${c.options.user} open`, ms);
}

/* pids of the master's children that are workers ("nginx: worker process") */
export function workers() {
    const pids = [];

    for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) {
            continue;
        }

        try {
            const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
            const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
            const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8');

            if (ppid === MASTER && /worker process/.test(cmd)
                && !/shutting down/.test(cmd))
            {
                pids.push(Number(d));
            }
        } catch (e) {
            /* gone */
        }
    }

    return pids.sort();
}

export async function killWorkers() {
    const old = workers();

    for (const p of old) {
        process.kill(p, 'SIGKILL');
    }

    /* the master respawns them */
    await until(() => {
        const now = workers();
        return now.length === old.length && now.every((p) => !old.includes(p));
    }, 'respawned workers');

    return old;
}

export async function reload() {
    const old = workers();

    process.kill(MASTER, 'SIGHUP');
    await until(() => {
        const now = workers();
        return now.length === old.length && now.every((p) => !old.includes(p));
    }, 'new workers after the reload');

    /* worker_shutdown_timeout: the old ones close their WebSockets (1001) */
    await until(() => old.every((p) => {
        try {
            process.kill(p, 0);
            return false;
        } catch (e) {
            return true;
        }
    }), 'the old workers to exit', 15000);

    return old;
}

export function ids(c, room) {
    return c.log.messages.filter((x) => x.m.room === room)
        .map((x) => String(x.m.id));
}

export function contents(c, room) {
    return c.log.messages.filter((x) => x.m.room === room)
        .map((x) => x.m.content);
}

/* an HS256 token signed with the secret of /chat-jwt (CHAT_TEST_JWT_KEY) */
export function mint(sub, expInSeconds, claims) {
    const secret = fs.readFileSync(process.env.CHAT_TEST_JWT_KEY, 'utf8')
        .replace(/\n$/, '');
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const head = b64({ alg: 'HS256', typ: 'JWT' });
    const body = b64(Object.assign({
        sub, exp: Math.floor(Date.now() / 1000) + expInSeconds
    }, claims || {}));
    const sig = crypto.createHmac('sha256', secret).update(head + '.' + body)
        .digest('base64url');

    return `${head}.${body}.${sig}`;
}

export const SKIP_JWT = SKIP || (process.env.CHAT_TEST_JWT_KEY ? false
    : 'no CHAT_TEST_JWT_KEY (t/client-js.t sets it)');
