/*
 * Browser client for ngx_chat_module: the page around ngx-chat-client
 * (clients/js/, served as /ngx-chat-client.js by conf-examples/chat.conf).
 * The library does the protocol: reconnection with back-off, the re-join
 * with "since" = the last id seen, dedupe, queued sends with their acks,
 * rate-limit retries.  This file only draws what it reports:
 *
 *   - first join of a room in this page: history 50; the messages new
 *     since the previous visit are marked (the last id seen is kept in
 *     localStorage, key "ngx-chat:last-id:" + room; ids are compared for
 *     equality only);
 *   - connection lost / reconnected / missed messages recovered / gap
 *     ("complete": false) notices;
 *   - user text is only ever put into the page with textContent.
 *
 * window.__chat is a small debug and test hook (see the end of the file).
 */

import { connect } from './ngx-chat-client.js';

const MAX_FRAME_BYTES = 4096;           /* chat_max_message_size in chat.conf */
const HISTORY_ON_JOIN = 50;
const OLDER_PAGE = 50;
const STORE = 'ngx-chat:';
const NAME_RE = /^[A-Za-z0-9_.\-]{1,32}$/;
const MAX_DEBUG_FRAMES = 1000;

const $ = (id) => document.getElementById(id);

const el = {
    conn: $('conn'),
    connText: $('conn-text'),
    reconnectNow: $('reconnect-now'),
    leave: $('leave'),
    login: $('login'),
    loginForm: $('login-form'),
    loginError: $('login-error'),
    name: $('name'),
    room: $('room'),
    chat: $('chat'),
    roomName: $('room-name'),
    me: $('me'),
    banner: $('banner'),
    bannerText: $('banner-text'),
    bannerClose: $('banner-close'),
    older: $('older'),
    log: $('log'),
    members: $('members'),
    memberCount: $('member-count'),
    composer: $('composer'),
    text: $('text')
};

const S = {
    client: null,
    room: null,
    joined: false,          /* joined on the current connection */
    joinedOnce: false,
    outage: false,          /* a "connection lost" notice is up */
    lastId: null,
    oldestId: null,
    shown: 0,
    members: new Set(),
    lastVisitId: null,
    dividerBefore: null,    /* the first message new since the last visit */
    olderPending: false,
    attempt: 0,
    bannerTimer: null
};

const debug = { frames: [] };

/* storage: localStorage may be unavailable (privacy modes, quotas) */

function storeGet(key) {
    try {
        return window.localStorage.getItem(STORE + key);
    } catch (e) {
        return null;
    }
}

function storeSet(key, value) {
    try {
        window.localStorage.setItem(STORE + key, value);
    } catch (e) {
        /* not fatal */
    }
}

function utf8Length(s) {
    return new TextEncoder().encode(s).length;
}

function record(dir, frame) {
    debug.frames.push({ dir, t: Date.now(), frame });

    if (debug.frames.length > MAX_DEBUG_FRAMES) {
        debug.frames.splice(0, debug.frames.length - MAX_DEBUG_FRAMES);
    }
}

/* connection state, shown in the header */

function setConn(state, text) {
    el.conn.dataset.state = state;

    if (el.connText.textContent !== text) {
        el.connText.textContent = text;
    }

    el.reconnectNow.hidden = (state !== 'reconnecting');
}

/* the message log */

function nearBottom() {
    return el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 40;
}

function scrollToBottom() {
    el.log.scrollTop = el.log.scrollHeight;
}

function appendToLog(li) {
    const stick = nearBottom();

    el.log.appendChild(li);

    if (stick) {
        scrollToBottom();
    }
}

function notice(text, kind) {
    const li = document.createElement('li');

    li.className = 'notice ' + (kind || 'info');
    li.textContent = text;
    appendToLog(li);
}

function messageElement(m) {
    const li = document.createElement('li');
    const head = document.createElement('p');
    const who = document.createElement('span');
    const body = document.createElement('p');
    const d = new Date(m.ts);

    li.className = 'msg';
    li.dataset.id = String(m.id);

    if (S.client && m.user === S.client.user) {
        li.classList.add('mine');
    }

    head.className = 'meta';
    who.className = 'user';
    who.textContent = String(m.user);
    head.appendChild(who);

    if (!isNaN(d.getTime())) {
        const time = document.createElement('time');

        time.dateTime = d.toISOString();
        time.title = d.toLocaleString();
        time.textContent = d.toLocaleTimeString([], {
            hour: '2-digit', minute: '2-digit'
        });
        head.appendChild(document.createTextNode(' '));
        head.appendChild(time);
    }

    body.className = 'text';
    body.textContent = String(m.content);

    li.appendChild(head);
    li.appendChild(body);

    return li;
}

function firstMessageShown() {
    if (S.shown === 0) {
        const empty = el.log.querySelector('.notice.empty');

        if (empty) {
            empty.remove();
        }
    }

    S.shown++;
}

/* a live or replayed message: the library gives each once, in order */
function onMessage(m) {
    if (m.room !== S.room) {
        return;
    }

    firstMessageShown();

    if (S.dividerBefore !== null && String(m.id) === S.dividerBefore) {
        const li = document.createElement('li');

        li.className = 'divider';
        li.textContent = 'New since your last visit';
        appendToLog(li);
        S.dividerBefore = null;
    }

    appendToLog(messageElement(m));

    S.lastId = String(m.id);
    storeSet('last-id:' + S.room, S.lastId);

    if (S.oldestId === null) {
        S.oldestId = S.lastId;
    }
}

/* the replay of a join, before its messages */
function onHistory(h) {
    if (h.room !== S.room) {
        return;
    }

    if (h.request === 'join') {
        const ids = h.messages.map((m) => String(m.id));
        const seen = S.lastVisitId === null ? -1 : ids.indexOf(S.lastVisitId);

        S.dividerBefore = (seen >= 0 && seen < ids.length - 1)
                          ? ids[seen + 1] : null;
        el.older.hidden = (h.messages.length < HISTORY_ON_JOIN);

        if (h.messages.length === 0) {
            notice('No messages in #' + S.room + ' yet. Say hello!',
                   'info empty');
        }

    } else if (h.request === 'rejoin' && h.complete !== false
               && h.messages.length > 0)
    {
        const n = h.messages.length;

        /* after the messages themselves */
        setTimeout(() => notice(n + ' missed message' + (n === 1 ? '' : 's')
                                + ' recovered.', 'info'), 0);
    }
}

function onGap(g) {
    if (g.room === S.room) {
        setTimeout(() => notice('Some messages sent while you were away could'
            + ' not be recovered: the server keeps only recent history.',
            'warn'), 0);
    }
}

function onJoined(j) {
    if (j.room !== S.room) {
        return;
    }

    const first = !S.joinedOnce;

    S.joined = true;
    S.joinedOnce = true;
    setConn('connected', 'Connected');

    if (S.outage) {
        S.outage = false;
        notice('Reconnected.', 'info');
    }

    if (first) {
        scrollToBottom();
        el.text.focus();
    }

    refreshMembers();
}

/* members */

function refreshMembers() {
    const c = S.client;

    c.who(S.room).then((users) => {
        if (c === S.client) {
            S.members = new Set(users);
            renderMembers();
        }
    }, () => {});
}

function renderMembers() {
    const me = S.client ? S.client.user : null;
    const names = Array.from(S.members).sort((a, b) => {
        if (a === me) { return -1; }
        if (b === me) { return 1; }
        return a.localeCompare(b);
    });

    el.members.textContent = '';

    for (const name of names) {
        const li = document.createElement('li');

        li.textContent = name;

        if (name === me) {
            const you = document.createElement('span');

            you.className = 'you';
            you.textContent = ' (you)';
            li.appendChild(you);
        }

        el.members.appendChild(li);
    }

    el.memberCount.textContent = String(names.length);
}

function onPresence(p) {
    if (p.room !== S.room || typeof p.user !== 'string') {
        return;
    }

    if (p.event === 'join') {
        S.members.add(p.user);
        notice(p.user + ' joined', 'presence');

    } else if (p.event === 'leave') {
        S.members.delete(p.user);
        notice(p.user + ' left', 'presence');
    }

    renderMembers();
}

/* errors */

function showBanner(text) {
    el.bannerText.textContent = text;
    el.banner.hidden = false;

    clearTimeout(S.bannerTimer);
    S.bannerTimer = setTimeout(hideBanner, 15000);
}

function hideBanner() {
    clearTimeout(S.bannerTimer);
    el.banner.hidden = true;
    el.bannerText.textContent = '';
}

function showError(e, extra) {
    const code = e && typeof e.code === 'string' ? e.code : 'error';
    let text = e && e.message ? e.message : 'error';

    if (code === 'rate_limited' && typeof e.retryAfterMs === 'number') {
        text = 'You are sending messages too fast; try again in '
               + Math.max(1, Math.ceil(e.retryAfterMs / 1000)) + ' s';
    }

    text = 'Error: ' + text + (extra || '') + ' [' + code + ']';
    showBanner(text);
    notice(text, 'error');
}

/* the connection */

function describeClose(code, reason) {
    const what = {
        1000: 'closed',
        1001: 'the server is going away',
        1002: 'protocol error',
        1006: 'connection dropped',
        1008: 'policy violation',
        1009: 'message too big',
        1011: 'server error',
        4000: 'dropped by this page',
        4408: 'no answer from the server'
    }[code] || 'closed';

    return what + ', code ' + code + (reason ? ': ' + reason : '');
}

function onState(state, d) {
    if (state === 'open') {
        el.me.textContent = S.client.user;
        setConn('connecting', 'Joining #' + S.room + '\u2026');
        return;
    }

    if (state === 'connecting') {
        setConn('connecting', 'Connecting\u2026');
        return;
    }

    if (state === 'closed') {
        setConn('offline', 'Not connected');
        return;
    }

    /* reconnecting */
    S.joined = false;
    S.attempt = d.attempt || 0;

    if (!S.outage) {
        S.outage = true;
        notice((S.joinedOnce ? 'Connection lost (' : 'Could not connect (')
               + describeClose(d.code, d.reason) + '). Retrying\u2026', 'warn');
    }

    setConn('reconnecting', d.delay === null || d.delay === undefined
            ? 'Offline \u2014 waiting for a new token'
            : 'Offline \u2014 reconnecting in '
              + Math.max(1, Math.round(d.delay / 1000)) + ' s');
}

/* entering and leaving a room */

function start(name, room) {
    S.room = room;
    S.joined = false;
    S.joinedOnce = false;
    S.outage = false;
    S.lastId = null;
    S.oldestId = null;
    S.shown = 0;
    S.members = new Set();
    S.dividerBefore = null;
    S.olderPending = false;
    S.lastVisitId = storeGet('last-id:' + room);

    storeSet('name', name);
    storeSet('room', room);

    el.log.textContent = '';
    el.members.textContent = '';
    el.memberCount.textContent = '0';
    el.roomName.textContent = room;
    el.me.textContent = name;
    el.older.hidden = true;
    el.older.disabled = false;
    el.log.setAttribute('aria-label', 'Messages in #' + room);
    hideBanner();

    el.login.hidden = true;
    el.chat.hidden = false;
    el.leave.hidden = false;
    document.title = '#' + room + ' \u2014 nginx chat';

    /* a page opened with ?token=JWT passes it on (chat_jwt $arg_token) */
    const token = new URLSearchParams(location.search).get('token');
    const c = connect('/chat', { user: name, retryRateLimited: true,
                                 maxMessageSize: MAX_FRAME_BYTES,
                                 token: token || undefined });

    S.client = c;
    c.on('frame', record);
    c.on('state', onState);
    c.on('joined', onJoined);
    c.on('history', onHistory);
    c.on('message', onMessage);
    c.on('gap', onGap);
    c.on('presence', onPresence);
    c.on('error', (e) => {
        if (e.code !== 'token_expired') {
            showError(e);
        }
    });

    c.join(room, { history: HISTORY_ON_JOIN }).catch((e) => {
        if (c === S.client && e.code !== 'closed') {
            showError(e, ' (could not join #' + room + ')');
        }
    });
}

function leave() {
    const c = S.client;

    S.client = null;
    S.joined = false;

    if (c) {
        const bye = c.state === 'open' ? c.leave(S.room) : Promise.resolve();

        bye.catch(() => {}).finally(() => c.close());
    }

    setConn('offline', 'Not connected');
    hideBanner();

    el.chat.hidden = true;
    el.leave.hidden = true;
    el.login.hidden = false;
    document.title = 'nginx chat';
    el.name.focus();
}

/* UI events */

el.loginForm.addEventListener('submit', (ev) => {
    const name = el.name.value.trim();
    const room = el.room.value.trim();

    ev.preventDefault();
    el.loginError.textContent = '';

    if (!NAME_RE.test(name)) {
        el.loginError.textContent = 'Please choose a name of 1 to 32'
            + ' letters, digits, "_", "." or "-".';
        el.name.setAttribute('aria-invalid', 'true');
        el.name.focus();
        return;
    }

    el.name.removeAttribute('aria-invalid');

    if (room === '' || utf8Length(room) > 128) {
        el.loginError.textContent = 'Please choose a room name'
            + ' (at most 128 bytes).';
        el.room.setAttribute('aria-invalid', 'true');
        el.room.focus();
        return;
    }

    el.room.removeAttribute('aria-invalid');

    start(name, room);
});

el.composer.addEventListener('submit', (ev) => {
    const text = el.text.value;
    const c = S.client;

    ev.preventDefault();

    if (text.trim() === '' || !c) {
        return;
    }

    /* while reconnecting the library queues it and sends it once */
    c.send(S.room, text).catch((e) => {
        if (c !== S.client) {
            return;
        }

        if (el.text.value === '') {
            el.text.value = text;       /* give the unsent text back */
        }

        if (e.code === 'too_big') {
            showBanner('That message is too long to send.');

        } else {
            showError(e, ' (your message was not sent)');
        }
    });

    el.text.value = '';
    el.text.focus();
});

el.older.addEventListener('click', () => {
    const c = S.client;

    if (!c || !S.joined || S.olderPending || S.oldestId === null) {
        return;
    }

    S.olderPending = true;
    el.older.disabled = true;

    c.history(S.room, { limit: OLDER_PAGE, before: S.oldestId }).then((h) => {
        const anchor = el.log.querySelector('.msg');
        const height = el.log.scrollHeight;

        S.olderPending = false;
        el.older.disabled = false;

        for (const m of h.messages) {
            el.log.insertBefore(messageElement(m), anchor);
        }

        if (h.messages.length) {
            S.oldestId = String(h.messages[0].id);
        }

        /* keep what the reader was looking at in place */
        el.log.scrollTop += el.log.scrollHeight - height;
        el.older.hidden = (h.messages.length < OLDER_PAGE);

        if (h.messages.length < OLDER_PAGE) {
            const li = document.createElement('li');

            li.className = 'notice info';
            li.textContent = h.complete === false
                ? 'Older messages are no longer kept by the server.'
                : 'This is the beginning of #' + S.room + '.';
            el.log.insertBefore(li, el.log.firstChild);
        }
    }, (e) => {
        S.olderPending = false;
        el.older.disabled = false;
        showError(e);
    });
});

el.leave.addEventListener('click', leave);
el.reconnectNow.addEventListener('click', () => S.client && S.client.reconnect());
el.bannerClose.addEventListener('click', hideBanner);

window.addEventListener('online', () => S.client && S.client.reconnect());

/* prefill the form with what was used last time */

{
    const name = storeGet('name');
    const room = storeGet('room');

    if (name && NAME_RE.test(name)) {
        el.name.value = name;
    }

    if (room) {
        el.room.value = room;
    }
}

/*
 * Debug and test hook.  dropConnection() closes the socket from this
 * side with code 4000, which the library handles like any unexpected
 * close: it reconnects and joins again with "since".  sendRaw() writes a
 * frame past the library (its replies surface as unmatched "error"
 * events).
 */

window.__chat = {
    frames: debug.frames,

    get client() {
        return S.client;
    },

    dropConnection() {
        const ws = S.client && S.client._ws;

        if (!ws) {
            return false;
        }

        ws.close(4000, 'dropped for testing');
        return true;
    },

    sendRaw(obj) {
        const ws = S.client && S.client._ws;

        if (!ws || ws.readyState !== WebSocket.OPEN) {
            return false;
        }

        record('out', obj);
        ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
        return true;
    },

    state() {
        return {
            conn: el.conn.dataset.state,
            me: S.client ? S.client.user : null,
            room: S.room,
            joined: S.joined,
            lastId: S.lastId,
            attempt: S.attempt,
            members: Array.from(S.members).sort()
        };
    }
};
