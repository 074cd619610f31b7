#!/usr/bin/env node
/*
 * End-to-end test of the browser client (conf-examples/www/) against
 * nginx with ngx_chat_module, in headless Chromium (Debian's
 * /usr/bin/chromium) driven by playwright-core.
 *
 * It writes a copy of conf-examples/chat.conf to a temporary directory
 * (port E2E_PORT, default 18089; absolute paths; its own pid and
 * error_log), runs nginx with it in the foreground and stops it at the end.
 *
 * Environment:
 *   E2E_PORT                 port on 127.0.0.1 (default 18089)
 *   TEST_NGINX_BINARY        nginx binary (default /usr/sbin/nginx)
 *   TEST_NGINX_LOAD_MODULES  module(s) to load, space separated
 *                            (default <repo>/build/ngx_chat_module.so)
 *   E2E_CHROMIUM             browser binary (default /usr/bin/chromium)
 *   E2E_KEEP=1               keep the temporary directory
 *
 * Prints "ok N - ..." / "not ok N - ..." per check and, last, exactly
 * "P passed, F failed"; exits 0 only when every check passed.
 */

'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const http = require('node:http');
const assert = require('node:assert/strict');

const REPO = path.resolve(__dirname, '..', '..');
const PORT = Number(process.env.E2E_PORT || 18089);
const NGINX = process.env.TEST_NGINX_BINARY || '/usr/sbin/nginx';
const MODULES = (process.env.TEST_NGINX_LOAD_MODULES
                 || path.join(REPO, 'build', 'ngx_chat_module.so'))
    .split(/\s+/).filter(Boolean).map((m) => path.resolve(REPO, m));
const CHROMIUM = process.env.E2E_CHROMIUM || '/usr/bin/chromium';
const ORIGIN = `http://127.0.0.1:${PORT}`;
const SHOT_DIR = path.join(REPO, 'build', 'e2e');
const ROOM = 'e2e-' + process.pid + '-' + Date.now().toString(36);
const T = 8000;                         /* default wait for a condition */

let nginx = null;
let tmp = null;
let browser = null;
let passed = 0;
let failed = 0;
let n = 0;

function log(s) {
    process.stdout.write(s + '\n');
}

function diag(s) {
    for (const line of String(s).split('\n')) {
        log('# ' + line);
    }
}

async function check(name, fn) {
    n++;

    try {
        await fn();
        passed++;
        log(`ok ${n} - ${name}`);

    } catch (e) {
        failed++;
        log(`not ok ${n} - ${name}`);
        diag(e && e.stack ? e.stack : String(e));
    }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* nginx */

function writeConf(dir) {
    let c = fs.readFileSync(path.join(REPO, 'conf-examples', 'chat.conf'),
                           'utf8');

    const sub = (re, rep, what) => {
        if (!c.match(re)) {
            throw new Error(`conf-examples/chat.conf: no ${what} to adapt`);
        }

        c = c.replace(re, rep);
    };

    sub(/^[ \t]*load_module\s+\S*ngx_chat_module\.so\s*;[ \t]*$/m,
        MODULES.map((m) => `load_module ${m};`).join('\n'), 'load_module');
    sub(/^([ \t]*)pid\s+[^;]+;/m, `$1pid ${dir}/nginx.pid;`, 'pid');
    sub(/^([ \t]*)error_log\s+[^;]+;/m, `$1error_log ${dir}/error.log info;`,
        'error_log');
    sub(/(listen\s+127\.0\.0\.1:)8080\b/g, `$1${PORT}`, 'listen');
    sub(/(http:\/\/(?:127\.0\.0\.1|localhost)):8080\b/g, `$1:${PORT}`,
        'chat_origins');
    sub(/(\broot\s+)conf-examples\/www\s*;/, `$1${REPO}/conf-examples/www;`,
        'root');

    /*
     * WebSocket connections are not idle connections: on a reload or a
     * graceful stop the old workers keep them until worker_shutdown_timeout,
     * when the module closes them with 1001.  Without the directive they
     * would stay on the old workers for ever.
     */
    if (!/^\s*worker_shutdown_timeout\s/m.test(c)) {
        sub(/^([ \t]*worker_processes\s+[^;]+;)/m,
            '$1\nworker_shutdown_timeout 3s;', 'worker_processes');
    }

    /*
     * Run as root, nginx would start its workers as "nobody", who may not
     * enter the checkout (a fresh clone in a mktemp -d directory is 0700):
     * every page and asset would be a 403.  Workers run as root then, as
     * under Test::Nginx and Test::Chat::Nginx.
     */
    if (process.getuid && process.getuid() === 0
        && !/^\s*user\s/m.test(c)) {
        sub(/^([ \t]*worker_processes\s+[^;]+;)/m, '$1\nuser root;',
            'worker_processes');
    }

    /* sanitizer builds (make test-asan) need their environment in workers */
    const env = ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS']
        .filter((v) => process.env[v] !== undefined);
    if (nginxPreload()) {
        env.push('LD_PRELOAD');
    }
    if (env.length) {
        sub(/^([ \t]*worker_processes\s+[^;]+;)/m,
            '$1\n' + env.map((v) => `env ${v};`).join('\n'), 'worker_processes');
    }

    /* temporary files of our own, whoever runs the test */
    sub(/^(\s*http\s*\{)/m, `$1
    client_body_temp_path ${dir}/body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
`, 'http block');

    const file = path.join(dir, 'chat.conf');
    fs.writeFileSync(file, c);
    return file;
}

/* run.sh moves LD_PRELOAD (libasan) aside so that node and chromium run
 * without it; nginx gets it back */
function nginxPreload() {
    return process.env.E2E_NGINX_LD_PRELOAD || process.env.LD_PRELOAD || '';
}

function portOpen(port) {
    return new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port });
        s.once('connect', () => { s.destroy(); resolve(true); });
        s.once('error', () => resolve(false));
    });
}

function httpGet(url) {
    return new Promise((resolve, reject) => {
        const req = http.get(url, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d) => { body += d; });
            res.on('end', () => resolve({ status: res.statusCode,
                                          headers: res.headers, body }));
        });
        req.on('error', reject);
        req.setTimeout(3000, () => req.destroy(new Error('timeout')));
    });
}

function errorLog() {
    try {
        return fs.readFileSync(path.join(tmp, 'error.log'), 'utf8');
    } catch (e) {
        return '';
    }
}

async function startNginx() {
    for (const m of MODULES) {
        if (!fs.existsSync(m)) {
            throw new Error(`module ${m} not found: run make first`);
        }
    }

    if (await portOpen(PORT)) {
        throw new Error(`127.0.0.1:${PORT} is already in use: set E2E_PORT`);
    }

    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ngx-chat-e2e-'));
    const conf = writeConf(tmp);

    let out = '';
    const env = { ...process.env };
    if (nginxPreload()) {
        env.LD_PRELOAD = nginxPreload();
    }

    nginx = spawn(NGINX, ['-p', REPO + '/', '-c', conf, '-g', 'daemon off;'],
                  { stdio: ['ignore', 'pipe', 'pipe'], env });
    nginx.stdout.on('data', (d) => { out += d; });
    nginx.stderr.on('data', (d) => { out += d; });

    let exited = null;
    nginx.once('exit', (code, sig) => { exited = `code ${code} signal ${sig}`; });

    const deadline = Date.now() + 10000;

    while (Date.now() < deadline) {
        if (exited) {
            throw new Error(`nginx exited (${exited}):\n${out}\n${errorLog()}`);
        }

        try {
            const r = await httpGet(ORIGIN + '/chat/status');
            if (r.status === 200) {
                return;
            }
        } catch (e) {
            /* not yet */
        }

        await sleep(100);
    }

    throw new Error(`nginx did not start on ${ORIGIN}:\n${out}\n${errorLog()}`);
}

/* 'graceful', 'terminated', 'killed' or 'not running' */
async function stopNginx() {
    if (!nginx || nginx.exitCode !== null || nginx.signalCode !== null) {
        return 'not running';
    }

    const done = new Promise((r) => nginx.once('exit', r));
    const within = async (ms) =>
        (await Promise.race([done.then(() => true), sleep(ms)])) === true;

    nginx.kill('SIGQUIT');                 /* graceful */

    if (await within(10000)) {
        return 'graceful';
    }

    diag('nginx did not stop within 10 s of SIGQUIT, sending SIGTERM');
    nginx.kill('SIGTERM');

    if (await within(5000)) {
        return 'terminated';
    }

    nginx.kill('SIGKILL');
    await done;
    return 'killed';
}

/* browser helpers */

const consoleErrors = [];
const externalRequests = [];

async function newUserPage(label) {
    const ctx = await browser.newContext({
        viewport: { width: 1000, height: 680 },
        deviceScaleFactor: 1,
        locale: 'en-US',
        timezoneId: 'UTC'
    });
    const page = await ctx.newPage();

    page.setDefaultTimeout(T);

    page.on('console', (m) => {
        if (m.type() === 'error') {
            consoleErrors.push(`${label}: ${m.text()}`);
        }
    });
    page.on('pageerror', (e) => consoleErrors.push(`${label}: ${e.message}`));
    page.on('request', (r) => {
        const u = r.url();
        if (!u.startsWith(ORIGIN + '/') && !u.startsWith('data:')) {
            externalRequests.push(`${label}: ${u}`);
        }
    });

    return page;
}

async function login(page, name, room) {
    await page.goto(ORIGIN + '/');
    await page.fill('#name', name);
    await page.fill('#room', room);
    await page.click('#connect');
    await page.waitForSelector('#conn[data-state="connected"]');
}

async function state(page) {
    return page.evaluate(() => window.__chat.state());
}

async function frames(page, dir, type) {
    return page.evaluate(([d, t]) => window.__chat.frames
        .filter((f) => f.dir === d && (t === null || f.frame.type === t))
        .map((f) => f.frame), [dir, type || null]);
}

async function msgTexts(page) {
    return page.$$eval('#log li.msg .text', (els) => els.map((e) => e.textContent));
}

async function notices(page) {
    return page.$$eval('#log li.notice', (els) => els.map((e) => e.textContent));
}

async function members(page) {
    return page.$$eval('#members li', (els) => els.map((e) => e.textContent));
}

async function waitFor(page, fn, arg, what, timeout) {
    try {
        await page.waitForFunction(fn, arg, { timeout: timeout || T, polling: 50 });
    } catch (e) {
        throw new Error(`timed out waiting for ${what}`);
    }
}

function waitForMessage(page, text) {
    return waitFor(page, (t) => Array.from(
        document.querySelectorAll('#log li.msg .text'))
        .some((e) => e.textContent === t), text, `message "${text}"`);
}

function waitForNotice(page, text) {
    return waitFor(page, (t) => Array.from(
        document.querySelectorAll('#log li.notice'))
        .some((e) => e.textContent.includes(t)), text, `notice "${text}"`);
}

function waitForMembers(page, list) {
    return waitFor(page, (l) => JSON.stringify(Array.from(
        document.querySelectorAll('#members li')).map((e) => e.textContent))
        === JSON.stringify(l), list, `members ${JSON.stringify(list)}`);
}

/* types into the composer, presses Enter, waits for the ack of it */
async function say(page, text) {
    const acks = (await frames(page, 'in', 'ack')).length;

    await page.fill('#text', text);
    await page.press('#text', 'Enter');
    await waitFor(page, (k) => window.__chat.frames.filter(
        (f) => f.dir === 'in' && f.frame.type === 'ack').length > k, acks,
        `ack of "${text}"`);

    const ack = (await frames(page, 'in', 'ack')).pop();
    assert.equal(typeof ack.id, 'string', 'ack carries a message id');
    assert.match(ack.id, /^[0-9]+/, 'ids start with a number');
    return String(ack.id);
}

function count(list, x) {
    return list.filter((y) => y === x).length;
}

/* the checks */

async function main() {
    log(`# nginx ${NGINX}, module(s) ${MODULES.join(' ')}, ${ORIGIN}, room ${ROOM}`);

    await startNginx();

    browser = await (require('playwright-core').chromium).launch({
        executablePath: CHROMIUM,
        headless: true,
        args: [
            '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
            '--no-first-run', '--disable-background-networking',
            '--disable-component-update', '--disable-sync'
        ],
        timeout: 30000
    });

    log(`# chromium ${browser.version()}`);

    const alice = await newUserPage('alice');
    const bob = await newUserPage('bob');
    let carol = null;

    const sent = [];            /* texts in the order the server got them */

    await check('the page and its assets are served, no external resources', async () => {
        for (const f of ['/', '/app.js', '/style.css', '/ngx-chat-client.js']) {
            const r = await httpGet(ORIGIN + f);
            assert.equal(r.status, 200, `GET ${f}`);
            assert.doesNotMatch(r.body, /(?:src|href)\s*=\s*["']?(?:https?:)?\/\//i,
                                `${f} refers to another host`);
        }

        await alice.goto(ORIGIN + '/');
        assert.equal(await alice.title(), 'nginx chat');
        assert.ok(await alice.isVisible('#login-form'));
        assert.ok(await alice.isHidden('#chat'));
        assert.equal(await alice.getAttribute('#conn', 'data-state'), 'offline');
        assert.equal(await alice.$eval('label[for=name]', (e) => e.textContent),
                     'Your name');
    });

    await check('an invalid name is refused in the form, with a message', async () => {
        await alice.fill('#name', 'no spaces please');
        await alice.click('#connect');
        assert.match(await alice.textContent('#login-error'), /name/);
        assert.equal(await alice.getAttribute('#name', 'aria-invalid'), 'true');
        assert.ok(await alice.isHidden('#chat'));
        assert.equal((await frames(alice, 'out')).length, 0, 'nothing sent');
    });

    await check('alice connects and joins with "history":50', async () => {
        await login(alice, 'alice', ROOM);

        const welcome = (await frames(alice, 'in', 'welcome'))[0];
        assert.deepEqual(welcome, { type: 'welcome', user: 'alice' });

        const joins = await frames(alice, 'out', 'join');
        assert.equal(joins.length, 1);
        assert.equal(typeof joins[0].ref, 'string', 'the join has a ref');
        assert.deepEqual({ ...joins[0], ref: 'r' },
                         { type: 'join', room: ROOM, ref: 'r', history: 50 });

        const joined = (await frames(alice, 'in', 'joined'))[0];
        assert.deepEqual(joined, { type: 'joined', room: ROOM, members: 1 });

        const hist = await frames(alice, 'in', 'history');
        assert.equal(hist.length, 1, 'one history frame after joined');
        assert.deepEqual(hist[0].messages, []);

        assert.equal(await alice.textContent('#me'), 'alice');
        assert.equal(await alice.textContent('#room-name'), ROOM);
        assert.match(await alice.textContent('#conn-text'), /Connected/);
        await waitForMembers(alice, ['alice (you)']);
    });

    await check('bob joins: alice gets a presence join, both who lists show both', async () => {
        await login(bob, 'bob', ROOM);

        const joined = (await frames(bob, 'in', 'joined'))[0];
        assert.equal(joined.members, 2);

        await waitForNotice(alice, 'bob joined');
        const p = await frames(alice, 'in', 'presence');
        assert.deepEqual(p, [{ type: 'presence', room: ROOM, user: 'bob', event: 'join' }]);
        assert.equal((await frames(bob, 'in', 'presence')).length, 0,
                     'no presence about oneself');

        await waitForMembers(alice, ['alice (you)', 'bob']);
        await waitForMembers(bob, ['bob (you)', 'alice']);

        const who = (await frames(bob, 'in', 'who')).pop();
        assert.deepEqual([...who.users].sort(), ['alice', 'bob']);
        assert.equal(await bob.textContent('#member-count'), '2');
    });

    await check('messages go both ways, to everyone, the sender included, once', async () => {
        const a = 'hello bob';
        const b = 'hi alice \u{1F44B} \u00FCn\u00EFc\u00F6de';

        await say(alice, a);
        sent.push(a);
        await waitForMessage(bob, a);

        await say(bob, b);
        sent.push(b);
        await waitForMessage(alice, b);

        for (const p of [alice, bob]) {
            assert.deepEqual(await msgTexts(p), sent);
        }

        const mine = await alice.$$eval('#log li.msg.mine .text', (els) => els.map((e) => e.textContent));
        assert.deepEqual(mine, [a], 'own message marked as mine');

        const users = await alice.$$eval('#log li.msg .user', (els) => els.map((e) => e.textContent));
        assert.deepEqual(users, ['alice', 'bob']);

        const m = (await frames(alice, 'in', 'message'))[0];
        assert.equal(m.room, ROOM);
        assert.equal(m.user, 'alice');
        assert.equal(m.content, a);
        assert.ok(Math.abs(m.ts - Date.now()) < 60000, 'ts is a recent time in ms');
    });

    await check('user text is shown as text, never as HTML', async () => {
        const evil = '<img src=x onerror="window.__pwned=1"><b>bold</b> & "quotes"';

        await say(bob, evil);
        sent.push(evil);
        await waitForMessage(alice, evil);

        for (const p of [alice, bob]) {
            assert.equal(await p.$$eval('#log img, #log b', (e) => e.length), 0);
            assert.equal(await p.evaluate(() => window.__pwned), undefined);
        }
    });

    await check('error frames are shown to the user', async () => {
        await alice.evaluate(() => window.__chat.sendRaw(
            { type: 'who', room: 'not-a-room-i-joined', ref: 'e1' }));

        await alice.waitForSelector('#banner:not([hidden])');
        const text = await alice.textContent('#banner-text');
        assert.match(text, /not a member/);
        assert.match(text, /not_member/);

        const err = (await frames(alice, 'in', 'error')).pop();
        assert.equal(err.code, 'not_member');
        assert.equal(err.ref, 'e1');

        assert.equal(await alice.getAttribute('#banner', 'role'), 'alert');
        await alice.click('#banner-close');
        assert.ok(await alice.isHidden('#banner'));
    });

    await check('after an unexpected close alice reconnects by herself; the 2 missed messages appear exactly once', async () => {
        const before = await state(alice);
        const lastBefore = before.lastId;
        assert.ok(lastBefore, 'alice has a last id');

        const joinsBefore = (await frames(alice, 'out', 'join')).length;
        const histBefore = (await frames(alice, 'in', 'history')).length;

        assert.equal(await alice.evaluate(() => window.__chat.dropConnection()), true);
        await alice.waitForSelector('#conn[data-state="reconnecting"]');
        assert.match(await alice.textContent('#conn-text'), /reconnecting in 1 s/);
        assert.ok(await alice.isVisible('#reconnect-now'));

        const missed = ['missed one', 'missed two'];
        const ids = [];

        for (const t of missed) {
            ids.push(await say(bob, t));
            sent.push(t);
        }

        /* the test is only meaningful if alice was away meanwhile */
        const during = await state(alice);
        assert.notEqual(during.conn, 'connected', 'alice reconnected too early');
        assert.equal(during.joined, false);
        for (const t of missed) {
            assert.equal(count(await msgTexts(alice), t), 0);
        }

        await alice.waitForSelector('#conn[data-state="connected"]', { timeout: 15000 });

        const joins = await frames(alice, 'out', 'join');
        assert.equal(joins.length, joinsBefore + 1, 'one new join');
        assert.deepEqual({ ...joins[joins.length - 1], ref: 'r' },
                         { type: 'join', room: ROOM, ref: 'r', since: lastBefore });

        const hist = await frames(alice, 'in', 'history');
        assert.equal(hist.length, histBefore + 1);
        const replay = hist[hist.length - 1];
        assert.equal(replay.complete, true);
        assert.deepEqual(replay.messages.map((m) => m.content), missed,
                         'the server replays exactly the missed messages');
        assert.deepEqual(replay.messages.map((m) => String(m.id)), ids);

        for (const t of missed) {
            await waitForMessage(alice, t);
        }

        await sleep(300);         /* anything duplicated would show by now */

        const texts = await msgTexts(alice);
        assert.deepEqual(texts, sent, 'every message once, in order');

        const stored = await alice.evaluate((r) =>
            localStorage.getItem('ngx-chat:last-id:' + r), ROOM);
        assert.equal(stored, ids[1], 'last id kept in localStorage');

        const nots = await notices(alice);
        assert.ok(nots.some((t) => /Connection lost .*code 4000/.test(t)), 'lost notice');
        assert.ok(nots.includes('Reconnected.'), 'reconnected notice');
        assert.ok(nots.includes('2 missed messages recovered.'), 'recovered notice');

        /* bob saw alice go and come back */
        await waitForNotice(bob, 'alice left');
        await waitForNotice(bob, 'alice joined');
        await waitForMembers(bob, ['bob (you)', 'alice']);
        await waitForMembers(alice, ['alice (you)', 'bob']);
        assert.ok(await alice.isHidden('#reconnect-now'));
    });

    await check('live messages flow again after the reconnection', async () => {
        const t = 'back again';

        await say(alice, t);
        sent.push(t);
        await waitForMessage(bob, t);
        assert.deepEqual(await msgTexts(alice), sent);
        assert.deepEqual(await msgTexts(bob), sent);
    });

    await check('a message typed while reconnecting is queued by the library and sent once', async () => {
        const t = 'typed while offline';
        const sendsBefore = (await frames(alice, 'out', 'send')).length;

        assert.equal(await alice.evaluate(() => window.__chat.dropConnection()), true);
        await alice.waitForSelector('#conn[data-state="reconnecting"]');

        await alice.fill('#text', t);
        await alice.press('#text', 'Enter');
        assert.equal(await alice.inputValue('#text'), '', 'the box is cleared');
        assert.equal((await frames(alice, 'out', 'send')).length, sendsBefore,
                     'nothing sent while offline');

        await alice.waitForSelector('#conn[data-state="connected"]', { timeout: 15000 });
        await waitForMessage(bob, t);
        await waitForMessage(alice, t);
        sent.push(t);
        await sleep(300);

        const out = (await frames(alice, 'out', 'send')).slice(sendsBefore);
        assert.equal(out.length, 1, 'sent once');
        assert.equal(out[0].content, t);
        const ack = (await frames(alice, 'in', 'ack')).pop();
        assert.equal(ack.ref, out[0].ref, 'acked with its ref');
        assert.deepEqual(await msgTexts(alice), sent);
        assert.deepEqual(await msgTexts(bob), sent);
    });

    await check('screenshot build/e2e/chat.png', async () => {
        fs.mkdirSync(SHOT_DIR, { recursive: true });
        await alice.screenshot({ path: path.join(SHOT_DIR, 'chat.png') });
        await bob.screenshot({ path: path.join(SHOT_DIR, 'chat-bob.png') });
        const png = fs.readFileSync(path.join(SHOT_DIR, 'chat.png'));
        assert.equal(png.subarray(1, 4).toString(), 'PNG');
        assert.ok(png.length > 10000, 'a real picture');
    });

    await check('a late joiner gets the room history, marked as such', async () => {
        carol = await newUserPage('carol');
        await login(carol, 'carol', ROOM);
        await waitForMessage(carol, 'back again');
        assert.deepEqual(await msgTexts(carol), sent);

        const hist = (await frames(carol, 'in', 'history'))[0];
        assert.equal(hist.complete, true);
        assert.equal(hist.messages.length, sent.length);

        await waitForNotice(alice, 'carol joined');
        await waitForNotice(bob, 'carol joined');
        await waitForMembers(carol, ['carol (you)', 'alice', 'bob']);
        await waitForMembers(alice, ['alice (you)', 'bob', 'carol']);
    });

    await check('Chromium negotiates permessage-deflate (chat_deflate on): the history went compressed', async () => {
        const ext = await carol.evaluate((url) => new Promise((resolve) => {
            const ws = new WebSocket(url);
            ws.onopen = () => { resolve(ws.extensions); ws.close(); };
            ws.onerror = () => resolve('error');
        }), `ws://127.0.0.1:${PORT}/chat?user=probe`);
        assert.match(ext, /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/);

        const st = JSON.parse((await httpGet(`http://127.0.0.1:${PORT}/chat/status`)).body);
        assert.ok(st.bytes_out > 0 && st.bytes_out < st.bytes_out_raw,
                  `bytes_out ${st.bytes_out}, bytes_out_raw ${st.bytes_out_raw}`);
        log(`# status: bytes_out ${st.bytes_out}, bytes_out_raw ${st.bytes_out_raw}`);
    });

    await check('leaving is not a disconnection: no reconnect, presence leave for the others', async () => {
        await carol.click('#leave');
        await waitForNotice(alice, 'carol left');
        await waitForMembers(alice, ['alice (you)', 'bob']);

        assert.ok(await carol.isVisible('#login-form'));
        assert.equal(await carol.getAttribute('#conn', 'data-state'), 'offline');

        const leaves = await frames(carol, 'out', 'leave');
        assert.deepEqual(leaves.map((f) => ({ type: f.type, room: f.room })),
                         [{ type: 'leave', room: ROOM }]);

        const nframes = (await frames(carol, 'in')).length;
        await sleep(2500);
        assert.equal((await frames(carol, 'in')).length, nframes, 'no new connection');
        assert.equal(await carol.getAttribute('#conn', 'data-state'), 'offline');
    });

    await check('coming back later marks the messages that are new since the last visit', async () => {
        const t = 'while carol was away';

        await say(bob, t);
        sent.push(t);
        await waitForMessage(alice, t);

        await carol.reload();
        assert.equal(await carol.inputValue('#name'), 'carol', 'name remembered');
        assert.equal(await carol.inputValue('#room'), ROOM, 'room remembered');
        await carol.click('#connect');
        await carol.waitForSelector('#conn[data-state="connected"]');
        await waitForMessage(carol, t);

        const order = await carol.$$eval('#log li', (els) => els.map((e) =>
            e.classList.contains('divider') ? '--' : e.querySelector('.text')
                ? e.querySelector('.text').textContent : null).filter((x) => x !== null));
        assert.deepEqual(order, [...sent.slice(0, -1), '--', t]);
    });

    await check('too many messages: the rate_limited error is shown with its delay', async () => {
        /* chat_rate 10r/s burst=20 */
        await bob.evaluate((room) => {
            for (let i = 0; i < 40; i++) {
                window.__chat.sendRaw({ type: 'send', room, content: 'flood ' + i, ref: 'f' + i });
            }
        }, ROOM);

        await bob.waitForSelector('#banner:not([hidden])');
        assert.match(await bob.textContent('#banner-text'),
                     /too fast; try again in \d+ s.*rate_limited/);

        const err = (await frames(bob, 'in', 'error')).find((e) => e.code === 'rate_limited');
        assert.ok(err, 'an error frame');
        assert.equal(typeof err.retry_after_ms, 'number');
        assert.match(err.ref, /^f\d+$/);
    });

    await check('nginx reload: the old workers close with 1001, the pages reconnect and catch up', async () => {
        const pages = [alice, bob];
        const lost = [];

        for (const p of pages) {
            lost.push((await notices(p)).filter((t) => /Connection lost/.test(t)).length);
        }

        process.kill(nginx.pid, 'SIGHUP');

        for (let i = 0; i < pages.length; i++) {
            await waitFor(pages[i], (k) => Array.from(
                document.querySelectorAll('#log li.notice'))
                .filter((e) => /Connection lost/.test(e.textContent)).length > k,
                lost[i], 'a "Connection lost" notice', 20000);
            const t = (await notices(pages[i])).filter((x) => /Connection lost/.test(x)).pop();
            assert.match(t, /going away, code 1001/);
        }

        for (const p of pages) {
            await p.waitForSelector('#conn[data-state="connected"]', { timeout: 15000 });
        }

        const t = 'after the reload';
        await say(bob, t);
        await waitForMessage(alice, t);

        const a = await msgTexts(alice);
        assert.equal(count(a, t), 1);
        assert.equal(new Set(a).size, a.length, 'no duplicates');
        assert.deepEqual(await msgTexts(bob), a);

        /* the replay after the reload was complete: the zone kept the history */
        const last = (await frames(alice, 'in', 'history')).pop();
        assert.equal(last.complete, true);
    });

    await check('no console errors, no page errors, no requests to other hosts', async () => {
        assert.deepEqual(externalRequests, []);
        assert.deepEqual(consoleErrors, []);
    });

    await browser.close();
    browser = null;

    await check('nginx stops gracefully and its error.log has no crash, alert or critical error', async () => {
        assert.equal(await stopNginx(), 'graceful');
        assert.equal(nginx.exitCode, 0, 'nginx exit code');

        const bad = errorLog().split('\n').filter((l) =>
            /\[(?:alert|crit|emerg)\]|exited on signal|AddressSanitizer|runtime error/.test(l));
        assert.deepEqual(bad, []);
    });
}

async function cleanup() {
    if (browser) {
        await browser.close().catch(() => {});
    }

    await stopNginx().catch(() => {});

    if (tmp) {
        if (failed || process.env.E2E_KEEP) {
            log(`# kept ${tmp} (error.log, chat.conf)`);

            if (failed) {
                const tail = errorLog().split('\n').slice(-40).join('\n');
                diag('error.log tail:\n' + tail);
            }

        } else {
            fs.rmSync(tmp, { recursive: true, force: true });
        }
    }
}

process.on('SIGINT', () => { cleanup().finally(() => process.exit(130)); });
process.on('SIGTERM', () => { cleanup().finally(() => process.exit(143)); });

main()
    .catch((e) => {
        failed++;
        log(`not ok ${++n} - setup`);
        diag(e && e.stack ? e.stack : String(e));
    })
    .then(cleanup)
    .then(() => {
        log(`${passed} passed, ${failed} failed`);
        process.exitCode = failed ? 1 : 0;
    });
