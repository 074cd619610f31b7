/*
 * ngx-chat-client: the client of ngx_chat_module (SPEC sections 4, 5, 8
 * and 10), for browsers and Node 18+ (global WebSocket, or the `ws`
 * package passed as options.WebSocket).  No runtime dependencies.
 *
 *   const chat = connect('wss://host/chat', { user: 'alice' });
 *   chat.on('message', (m) => console.log(m.user, m.content));
 *   await chat.join('lobby', { history: 50 });
 *   const id = await chat.send('lobby', 'hello');
 *
 * What it does for you:
 *   - reconnection with exponential back-off and jitter; no retry after
 *     a close 1008 "token expired" until a new token is there (the
 *     refreshToken callback or setToken());
 *   - every joined room is joined again with "since" = the last id seen;
 *     messages are deduplicated by id; "complete": false on such a resume
 *     is a "gap" event;
 *   - sends made while disconnected are queued and sent once, in order,
 *     after their room is joined again; a send whose ack was lost with the
 *     connection is recognised in the replay (same user, room and content)
 *     instead of being sent twice;
 *   - rate_limited sends retried after retry_after_ms when asked to;
 *   - JWT refresh ({"type":"refresh"}) through a callback before "exp".
 */

export const VERSION = '0.1.0';

const STATES = ['connecting', 'open', 'reconnecting', 'closed'];

const DEFAULTS = {
    backoffMin: 1000,           /* first retry delay (before jitter) */
    backoffMax: 30000,
    backoffFactor: 2,
    connectTimeout: 10000,      /* from new WebSocket to "welcome" */
    retryRateLimited: false,    /* true or a number of retries */
    maxRateLimitRetries: 5,
    refreshBefore: 30000,       /* ms before exp the token is refreshed */
    maxMessageSize: 4096,       /* chat_max_message_size of the server */
    dedupeWindow: 5000,         /* ids remembered per room */
    userParam: 'user',
    tokenParam: 'token',
    historyOnRejoin: 1000       /* rejoin of a room where no id was seen */
};

export class ChatError extends Error {
    constructor(code, message, frame) {
        super(message || code);
        this.name = 'ChatError';
        this.code = code;

        if (frame) {
            this.frame = frame;

            if (typeof frame.retry_after_ms === 'number') {
                this.retryAfterMs = frame.retry_after_ms;
            }
        }
    }
}

/* exp (ms since the epoch) of a JWT, or null; no signature check */
export function tokenExpiry(token) {
    try {
        const part = String(token).split('.')[1];
        let b64 = part.replace(/-/g, '+').replace(/_/g, '/');

        while (b64.length % 4) {
            b64 += '=';
        }

        const bin = atob(b64);
        const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
        const claims = JSON.parse(new TextDecoder().decode(bytes));

        return typeof claims.exp === 'number' ? claims.exp * 1000 : null;

    } catch (e) {
        return null;
    }
}

function utf8Length(s) {
    return new TextEncoder().encode(s).length;
}

export function connect(url, options) {
    return new ChatClient(url, options);
}

export class ChatClient {

    constructor(url, options) {
        const o = Object.assign({}, DEFAULTS, options || {});

        this.options = o;
        this.url = url;
        this.token = o.token === undefined ? null : o.token;
        this.user = null;               /* from "welcome" */
        this.state = 'connecting';

        this._WS = o.WebSocket || globalThis.WebSocket;

        if (typeof this._WS !== 'function') {
            throw new TypeError('ngx-chat-client: no WebSocket: pass'
                                + ' { WebSocket } (e.g. from the "ws" package)');
        }

        this._listeners = new Map();
        this._ws = null;
        this._attempt = 0;
        this._timer = null;             /* reconnect or connect timeout */
        this._retryTimer = null;        /* rate-limited sends */
        this._refreshTimer = null;
        this._seq = 0;
        this._rooms = new Map();        /* room -> state, see _room() */
        this._outbox = [];              /* sends not on the wire, by seq */
        this._inflight = new Map();     /* ref -> send, awaiting ack */
        this._requests = new Map();     /* ref -> join/leave/who/history */
        this._replies = new Map();      /* "type room" -> [request] */
        this._refreshing = [];          /* refresh requests awaiting reply */
        this._pausedUntil = 0;          /* rate_limited: no send before */
        this._waitingToken = false;     /* closed 1008 "token expired" */
        this._closedByUser = false;

        /* a listener added right after connect() sees "connecting" */
        queueMicrotask(() => this._open());
    }

    /* events */

    on(event, fn) {
        if (!this._listeners.has(event)) {
            this._listeners.set(event, new Set());
        }

        this._listeners.get(event).add(fn);
        return this;
    }

    off(event, fn) {
        const set = this._listeners.get(event);

        if (set) {
            if (fn) {
                set.delete(fn);

            } else {
                set.clear();
            }
        }

        return this;
    }

    once(event, fn) {
        const w = (...args) => {
            this.off(event, w);
            fn.apply(this, args);
        };

        return this.on(event, w);
    }

    _emit(event, ...args) {
        const set = this._listeners.get(event);

        if (!set) {
            return;
        }

        for (const fn of Array.from(set)) {
            try {
                fn.apply(this, args);

            } catch (e) {
                /* a listener's bug must not break the protocol state */
                setTimeout(() => { throw e; }, 0);
            }
        }
    }

    _setState(state, detail) {
        if (this.state === state && state !== 'reconnecting') {
            return;
        }

        this.state = state;
        this._emit('state', state, detail || {});
        this._emit(state, detail || {});
    }

    /* the public requests */

    join(room, opts) {
        const r = this._room(room);
        const o = opts || {};

        r.wanted = true;
        r.joinOpts = {};

        if (o.since !== undefined && o.since !== null) {
            /* the next (re)join replays from there; dedupe drops what
             * was seen already */
            r.joinOpts.since = String(o.since);
            r.lastId = String(o.since);

        } else if (o.history) {
            r.joinOpts.history = o.history;
        }

        return new Promise((resolve, reject) => {
            r.joinWaiters.push({ resolve, reject });

            if (this._isOpen()) {
                this._sendJoin(room, r, r.joinOpts);
            }
        });
    }

    leave(room) {
        const r = this._rooms.get(room);

        if (r) {
            r.wanted = false;
            this._rooms.delete(room);
            this._rejectJoin(r, new ChatError('left', 'left the room'));
        }

        for (const s of this._outbox.filter((e) => e.room === room)) {
            this._outbox.splice(this._outbox.indexOf(s), 1);
            s.reject(new ChatError('left', 'left the room before sending'));
        }

        if (!this._isOpen()) {
            /* the next connection simply does not join it */
            return Promise.resolve();
        }

        return this._request({ type: 'leave', room }, 'left');
    }

    send(room, content, opts) {
        const o = opts || {};
        let retries = o.retryRateLimited !== undefined
                      ? o.retryRateLimited : this.options.retryRateLimited;

        if (retries === true) {
            retries = this.options.maxRateLimitRetries;
        }

        if (this.state === 'closed') {
            return Promise.reject(new ChatError('closed', 'client closed'));
        }

        if (typeof content !== 'string') {
            return Promise.reject(new ChatError('bad_request',
                                                'content must be a string'));
        }

        const seq = ++this._seq;
        const ref = 's' + seq;
        const frame = { type: 'send', room, content, ref };

        if (utf8Length(JSON.stringify(frame)) > this.options.maxMessageSize) {
            return Promise.reject(new ChatError('too_big',
                'message over maxMessageSize (' + this.options.maxMessageSize
                + ' bytes)'));
        }

        return new Promise((resolve, reject) => {
            this._outbox.push({ seq, ref, room, content, resolve, reject,
                                retries: retries || 0, maybeSent: false,
                                seenId: null });
            this._flush();
        });
    }

    history(room, opts) {
        const o = opts || {};
        const f = { type: 'history', room };

        if (o.limit !== undefined) {
            f.limit = o.limit;
        }

        if (o.before !== undefined && o.before !== null) {
            f.before = String(o.before);
        }

        return this._request(f, 'history', true).then((h) => ({
            room, messages: h.messages, complete: h.complete
        }));
    }

    who(room) {
        return this._request({ type: 'who', room }, 'who', true)
            .then((f) => Array.isArray(f.users) ? f.users.map(String) : []);
    }

    /* a new token: refresh on the open connection, or reconnect with it */
    setToken(token) {
        if (this._isOpen()) {
            /* the token changes when the server says "refreshed" */
            this._sendRefresh(token);
            return;
        }

        this.token = token;

        if (this._waitingToken) {
            this._waitingToken = false;
            this._attempt = 0;
            this._open();
        }
    }

    /* reconnect at once (e.g. on the browser's "online" event) */
    reconnect() {
        if (this.state === 'reconnecting' && !this._waitingToken) {
            clearTimeout(this._timer);
            this._open();
        }
    }

    close() {
        const err = new ChatError('closed', 'client closed');

        this._closedByUser = true;
        clearTimeout(this._timer);
        clearTimeout(this._retryTimer);
        clearTimeout(this._refreshTimer);

        if (this._ws) {
            const ws = this._ws;

            this._ws = null;
            this._detach(ws);

            try {
                ws.close(1000, 'bye');
            } catch (e) {
                /* already closing */
            }
        }

        this._shutdown(err, { code: 1000, reason: 'closed by client' });
    }

    _shutdown(err, detail) {
        for (const r of this._rooms.values()) {
            this._rejectJoin(r, err);
        }

        this._rooms.clear();
        this._failAll(err);
        this._setState('closed', detail);
    }

    get rooms() {
        return Array.from(this._rooms.keys());
    }

    lastId(room) {
        const r = this._rooms.get(room);

        return r ? r.lastId : null;
    }

    /* the connection */

    _isOpen() {
        return this.state === 'open' && this._ws !== null;
    }

    _url() {
        let base = this.url;

        if (typeof base === 'string' && /^\//.test(base)
            && globalThis.location)
        {
            base = (globalThis.location.protocol === 'https:' ? 'wss:' : 'ws:')
                   + '//' + globalThis.location.host + base;
        }

        const u = new URL(base);

        if (this.options.user !== undefined && this.options.user !== null) {
            u.searchParams.set(this.options.userParam,
                               String(this.options.user));
        }

        if (this.token !== null && this.token !== undefined) {
            u.searchParams.set(this.options.tokenParam, String(this.token));
        }

        return u.toString();
    }

    _tokenExpired() {
        if (this.token === null || this.token === undefined) {
            return false;
        }

        const exp = tokenExpiry(this.token);

        return exp !== null && exp <= Date.now();
    }

    _open() {
        let ws;

        if (this._closedByUser) {
            return;
        }

        clearTimeout(this._timer);

        if (this._tokenExpired()) {
            this._needToken({ code: 0, reason: 'token expired' });
            return;
        }

        if (!this._announced) {
            this._announced = true;
            this._emit('state', 'connecting', {});
            this._emit('connecting', {});
        }

        try {
            ws = new this._WS(this._url());

        } catch (e) {
            this._emit('error', new ChatError('connect_failed', String(e)));
            this._scheduleReconnect({ code: 0, reason: String(e) });
            return;
        }

        this._ws = ws;
        this._welcomed = false;

        ws.onmessage = (ev) => {
            if (ws === this._ws) {
                this._onData(ev.data);
            }
        };

        ws.onclose = (ev) => {
            if (ws === this._ws) {
                this._onClose(ev.code, ev.reason || '');
            }
        };

        ws.onerror = () => {
            /* a close event follows */
        };

        this._timer = setTimeout(() => {
            if (ws === this._ws && !this._welcomed) {
                this._detach(ws);

                try {
                    ws.close();
                } catch (e) {
                    /* not open yet */
                }

                this._onClose(4408, 'no welcome in time');
            }
        }, this.options.connectTimeout);
    }

    _detach(ws) {
        ws.onmessage = ws.onclose = null;
        ws.onerror = () => {};
    }

    _onClose(code, reason) {
        const ws = this._ws;

        if (ws) {
            this._detach(ws);
        }

        this._ws = null;
        clearTimeout(this._timer);
        clearTimeout(this._refreshTimer);
        this._disconnected();

        if (this._closedByUser) {
            return;
        }

        if (code === 1008 && /token expired/i.test(reason)) {
            this._needToken({ code, reason });
            return;
        }

        if (code === 1008 && /^disconnected$/i.test(reason)) {
            /* a backend's chat_api "disconnect": coming back is not ours */
            this._closedByUser = true;
            this._emit('error', new ChatError('disconnected',
                'disconnected by the server (chat_api)'));
            this._shutdown(new ChatError('disconnected', 'disconnected'),
                           { code, reason });
            return;
        }

        this._scheduleReconnect({ code, reason });
    }

    /* what was on the wire of a connection that is gone */
    _disconnected() {
        for (const r of this._rooms.values()) {
            r.joined = false;
            r.joinSent = false;
        }

        /* sends without an ack: maybe accepted, look for them in the replay */
        for (const s of this._inflight.values()) {
            if (s.seenId !== null) {
                s.resolve(s.seenId);

            } else {
                s.maybeSent = true;
                this._requeue(s);
            }
        }

        this._inflight.clear();

        /* other requests: join is redone by the rejoin, who/history again */
        const again = [];

        for (const q of this._requests.values()) {
            if (q.frame.type === 'leave') {
                q.resolve({ type: 'left', room: q.frame.room });

            } else if (q.frame.type === 'who' || q.frame.type === 'history') {
                again.push(q);

            } else if (q.frame.type === 'join') {
                /* the room's joinWaiters are still pending */
            }
        }

        this._requests.clear();
        this._replies.clear();
        this._refreshing = [];
        this._again = again.concat(this._again || []);
    }

    _scheduleReconnect(detail) {
        const o = this.options;
        const cap = Math.min(o.backoffMax,
                             o.backoffMin * Math.pow(o.backoffFactor,
                                                     this._attempt));
        /* "equal jitter": between half and all of the back-off */
        const delay = Math.round(cap / 2 + Math.random() * cap / 2);

        this._attempt++;
        clearTimeout(this._timer);
        this._timer = setTimeout(() => this._open(), delay);
        this._setState('reconnecting', Object.assign({
            attempt: this._attempt, delay
        }, detail));
    }

    _needToken(detail) {
        const cb = this.options.refreshToken;

        this._waitingToken = true;
        this._setState('reconnecting', Object.assign({
            attempt: this._attempt, delay: null, waitingForToken: true
        }, detail));
        this._emit('error', new ChatError('token_expired',
            'the token expired: waiting for a new one'));

        if (typeof cb !== 'function') {
            return;                     /* setToken() goes on */
        }

        Promise.resolve().then(() => cb(this.token)).then((t) => {
            const exp = t ? tokenExpiry(t) : null;

            if (exp !== null && exp <= Date.now()) {
                /* not again and again: wait for setToken() */
                this._emit('error', new ChatError('refresh_failed',
                    'refreshToken returned an expired token'));
                return;
            }

            if (t && this._waitingToken && !this._closedByUser) {
                this.setToken(t);
            }
        }, (e) => {
            this._emit('error', new ChatError('refresh_failed', String(e)));
        });
    }

    _frame(f) {
        if (!this._ws) {
            return false;
        }

        this._emit('frame', 'out', f);
        this._ws.send(JSON.stringify(f));
        return true;
    }

    _onData(data) {
        let f;

        if (typeof data !== 'string') {
            try {
                data = new TextDecoder().decode(data);
            } catch (e) {
                return;
            }
        }

        try {
            f = JSON.parse(data);
        } catch (e) {
            return;
        }

        if (!f || typeof f !== 'object') {
            return;
        }

        this._emit('frame', 'in', f);

        switch (f.type) {
        case 'welcome':
            this._onWelcome(f);
            break;
        case 'joined':
            this._onJoined(f);
            break;
        case 'history':
            this._onHistory(f);
            break;
        case 'message':
            this._onMessage(f, false);
            break;
        case 'ack':
            this._onAck(f);
            break;
        case 'presence':
            this._emit('presence', f);
            break;
        case 'who':
        case 'left':
            this._reply(f.type, f.room, f);
            break;
        case 'refreshed':
            this._onRefreshed(f);
            break;
        case 'error':
            this._onError(f);
            break;
        default:
            break;
        }
    }

    _onWelcome(f) {
        const again = this._again || [];

        this._welcomed = true;
        this._again = [];
        clearTimeout(this._timer);
        this.user = String(f.user);
        this._attempt = 0;
        this._setState('open', { user: this.user });
        this._emit('welcome', f);
        this._scheduleRefresh(null);

        for (const [room, r] of this._rooms) {
            if (!r.wanted) {
                continue;
            }

            if (r.everJoined && r.lastId !== null) {
                this._sendJoin(room, r, { since: r.lastId });

            } else if (r.everJoined) {
                this._sendJoin(room, r, { history: this.options.historyOnRejoin });

            } else {
                this._sendJoin(room, r, r.joinOpts);
            }
        }

        for (const q of again) {
            this._wire(q);
        }

        this._flush();
    }

    _room(room) {
        let r = this._rooms.get(room);

        if (!r) {
            r = {
                wanted: false,
                joined: false,          /* joined on this connection */
                joinSent: false,        /* join sent on this connection */
                everJoined: false,
                joinOpts: {},
                joinWaiters: [],
                lastId: null,
                seen: new Set()
            };
            this._rooms.set(room, r);
        }

        return r;
    }

    _sendJoin(room, r, opts) {
        const f = { type: 'join', room, ref: 'j' + (++this._seq) };

        if (r.joinSent) {
            /*
             * joined (or joining) on this connection already: the server
             * answers "joined" again, without a replay
             */

        } else if (opts.since !== undefined) {
            f.since = opts.since;

        } else if (opts.history) {
            f.history = opts.history;
        }

        const q = {
            frame: f,
            rejoin: r.everJoined,
            expectHistory: f.since !== undefined || f.history !== undefined,
            resolve: () => {},
            reject: () => {}
        };

        r.joinSent = true;
        this._requests.set(f.ref, q);
        this._queueReply('joined', room, q);
        this._frame(f);
    }

    _queueReply(type, room, q) {
        const k = type + ' ' + room;

        if (!this._replies.has(k)) {
            this._replies.set(k, []);
        }

        this._replies.get(k).push(q);
    }

    _takeReply(type, room) {
        const k = type + ' ' + room;
        const list = this._replies.get(k);

        if (!list || list.length === 0) {
            return null;
        }

        const q = list.shift();

        if (list.length === 0) {
            this._replies.delete(k);
        }

        return q;
    }

    _dropReply(q) {
        for (const [k, list] of this._replies) {
            const i = list.indexOf(q);

            if (i >= 0) {
                list.splice(i, 1);

                if (list.length === 0) {
                    this._replies.delete(k);
                }
            }
        }
    }

    _reply(type, room, f) {
        const q = this._takeReply(type, room);

        if (q) {
            this._requests.delete(q.frame.ref);
            q.resolve(f);
        }
    }

    _request(frame, replyType, again) {
        if (this.state === 'closed') {
            return Promise.reject(new ChatError('closed', 'client closed'));
        }

        return new Promise((resolve, reject) => {
            const q = { frame, replyType, resolve, reject, again };

            frame.ref = frame.type[0] + (++this._seq);

            if (this._isOpen()) {
                this._wire(q);

            } else {
                this._again = this._again || [];
                this._again.push(q);
            }
        });
    }

    _wire(q) {
        const type = q.frame.type === 'leave' ? 'left' : q.frame.type;

        this._requests.set(q.frame.ref, q);
        this._queueReply(type, q.frame.room, q);
        this._frame(q.frame);
    }

    _onJoined(f) {
        const q = this._takeReply('joined', f.room);
        const r = this._rooms.get(f.room);

        if (!q) {
            return;
        }

        if (!r || !r.wanted) {
            /* left meanwhile: its replay, if any, is swallowed */
            if (q.expectHistory) {
                this._queueReply('history', f.room, q);

            } else {
                this._requests.delete(q.frame.ref);
            }

            return;
        }

        q.members = f.members;

        if (q.expectHistory) {
            this._queueReply('history', f.room, q);
            return;
        }

        this._requests.delete(q.frame.ref);
        this._roomJoined(f.room, r, q, [], true);
    }

    _roomJoined(room, r, q, fresh, complete) {
        const first = !r.everJoined;

        r.joined = true;
        r.everJoined = true;

        if (q.frame.since !== undefined && complete === false) {
            this._emit('gap', { room, since: q.frame.since });
        }

        const res = { room, members: q.members, messages: fresh, complete };

        this._emit('joined', res, { rejoin: !first && q.rejoin });

        for (const w of r.joinWaiters.splice(0)) {
            w.resolve(res);
        }

        this._flush();
    }

    _rejectJoin(r, err) {
        for (const w of r.joinWaiters.splice(0)) {
            w.reject(err);
        }
    }

    _onHistory(f) {
        const q = this._takeReply('history', f.room);
        const msgs = Array.isArray(f.messages) ? f.messages : [];
        const complete = f.complete !== false;

        if (!q) {
            return;
        }

        this._requests.delete(q.frame.ref);

        if (q.frame.type === 'history') {
            this._emit('history', { room: f.room, messages: msgs, complete,
                                    request: 'history' });
            q.resolve({ messages: msgs, complete });
            return;
        }

        /* the replay of a join */
        const r = this._rooms.get(f.room);

        if (!r || !r.wanted) {
            return;
        }

        const fresh = [];

        for (const m of msgs) {
            if (this._accept(f.room, r, m)) {
                fresh.push(m);
            }
        }

        this._emit('history', { room: f.room, messages: fresh, complete,
                                request: q.rejoin ? 'rejoin' : 'join',
                                since: q.frame.since });

        for (const m of fresh) {
            this._emit('message', m, { replay: true });
        }

        this._roomJoined(f.room, r, q, fresh, complete);
    }

    /* dedupe by id, advance lastId, recognise our own unacked sends */
    _accept(room, r, m) {
        if (!m || typeof m !== 'object' || m.id === undefined) {
            return false;
        }

        const id = String(m.id);

        if (r.seen.has(id)) {
            return false;
        }

        r.seen.add(id);

        if (r.seen.size > this.options.dedupeWindow) {
            r.seen.delete(r.seen.values().next().value);
        }

        r.lastId = id;

        if (this.user !== null && m.user === this.user) {
            this._recognise(room, m);
        }

        return true;
    }

    _recognise(room, m) {
        const content = m.content;

        for (const s of this._inflight.values()) {
            if (s.seenId === null && s.room === room && s.content === content) {
                s.seenId = String(m.id);
                return;
            }
        }

        for (let i = 0; i < this._outbox.length; i++) {
            const s = this._outbox[i];

            if (s.maybeSent && s.room === room && s.content === content) {
                this._outbox.splice(i, 1);
                s.resolve(String(m.id));
                return;
            }
        }
    }

    _onMessage(m) {
        const r = this._rooms.get(m.room);

        if (!r || !r.wanted) {
            return;
        }

        if (this._accept(m.room, r, m)) {
            this._emit('message', m, { replay: false });
        }
    }

    _onAck(f) {
        const s = this._inflight.get(f.ref);

        if (!s) {
            return;
        }

        this._inflight.delete(f.ref);
        s.resolve(String(f.id));
    }

    _onError(f) {
        const err = new ChatError(String(f.code), f.message, f);
        const ref = typeof f.ref === 'string' ? f.ref : null;
        const s = ref !== null ? this._inflight.get(ref) : undefined;

        if (s) {
            this._inflight.delete(ref);

            if (f.code === 'rate_limited' && s.retries > 0) {
                s.retries--;
                this._pausedUntil = Math.max(this._pausedUntil, Date.now()
                                             + (f.retry_after_ms || 1000));
                this._requeue(s);
                this._emit('retry', { ref, room: s.room,
                                      retryAfterMs: f.retry_after_ms });
                this._flush();
                return;
            }

            s.reject(err);
            return;
        }

        const q = ref !== null ? this._requests.get(ref) : undefined;

        if (q) {
            this._requests.delete(ref);
            this._dropReply(q);

            if (q.frame.type === 'join' && this._rooms.has(q.frame.room)) {
                this._rooms.get(q.frame.room).joinSent = false;
            }

            if (f.code === 'rate_limited'
                && (q.frame.type === 'join' || q.again))
            {
                /* joins always, who/history too: idempotent */
                setTimeout(() => {
                    if (!this._isOpen()) {
                        return;
                    }

                    if (q.frame.type === 'join') {
                        const r = this._rooms.get(q.frame.room);

                        if (r && r.wanted) {
                            this._sendJoin(q.frame.room, r,
                                           q.frame.since !== undefined
                                           ? { since: q.frame.since }
                                           : { history: q.frame.history });
                        }

                    } else {
                        this._wire(q);
                    }
                }, f.retry_after_ms || 1000);
                return;
            }

            if (q.frame.type === 'join') {
                const r = this._rooms.get(q.frame.room);

                if (r) {
                    r.wanted = false;
                    this._rooms.delete(q.frame.room);
                    this._rejectJoin(r, err);
                }

                this._emit('error', err);
                return;
            }

            q.reject(err);
            return;
        }

        if (ref !== null && ref[0] === 'r' && this._refreshing.length) {
            this._refreshing.shift();
            this._emit('error', new ChatError('refresh_failed',
                                              f.message || f.code, f));
            return;
        }

        this._emit('error', err);
    }

    /* the outbox: sends in order, each once */

    _requeue(s) {
        let i = this._outbox.length;

        while (i > 0 && this._outbox[i - 1].seq > s.seq) {
            i--;
        }

        this._outbox.splice(i, 0, s);
    }

    _flush() {
        if (!this._isOpen() || this._outbox.length === 0) {
            return;
        }

        const wait = this._pausedUntil - Date.now();

        if (wait > 0) {
            clearTimeout(this._retryTimer);
            this._retryTimer = setTimeout(() => this._flush(), wait);
            return;
        }

        const held = new Set();
        const keep = [];

        for (const s of this._outbox) {
            const r = this._rooms.get(s.room);

            /* a room being joined again: its sends wait for its replay */
            if (held.has(s.room) || (r && r.wanted && !r.joined)) {
                held.add(s.room);
                keep.push(s);
                continue;
            }

            this._inflight.set(s.ref, s);
            this._frame({ type: 'send', room: s.room, content: s.content,
                          ref: s.ref });
        }

        this._outbox = keep;
    }

    _failAll(err) {
        for (const s of this._outbox.splice(0)) {
            s.reject(err);
        }

        for (const s of this._inflight.values()) {
            s.reject(err);
        }

        this._inflight.clear();

        for (const q of this._requests.values()) {
            q.reject(err);
        }

        for (const q of this._again || []) {
            q.reject(err);
        }

        this._again = [];
        this._requests.clear();
        this._replies.clear();
    }

    /* token refresh (SPEC section 10) */

    _scheduleRefresh(expMs) {
        const cb = this.options.refreshToken;

        clearTimeout(this._refreshTimer);

        if (typeof cb !== 'function' || this.token === null) {
            return;
        }

        const exp = expMs || tokenExpiry(this.token);

        if (exp === null) {
            return;
        }

        const left = exp - Date.now();
        const lead = Math.min(this.options.refreshBefore, left / 2);

        this._refreshTimer = setTimeout(() => {
            Promise.resolve().then(() => cb(this.token)).then((t) => {
                if (t && this._isOpen()) {
                    this._sendRefresh(t);
                }
            }, (e) => {
                this._emit('error', new ChatError('refresh_failed', String(e)));
            });
        }, Math.max(0, left - lead));
    }

    _sendRefresh(token) {
        const f = { type: 'refresh', token, ref: 'r' + (++this._seq) };

        this._refreshing.push({ token, ref: f.ref });
        this._frame(f);
    }

    _onRefreshed(f) {
        const q = this._refreshing.shift();

        if (!q) {
            return;
        }

        this.token = q.token;

        /* "exp" in ms (the SPEC); a value in seconds is accepted too */
        let exp = typeof f.exp === 'number' ? f.exp : tokenExpiry(q.token);

        if (exp !== null && exp < 1e12) {
            exp *= 1000;
        }

        this._emit('refreshed', { exp });
        this._scheduleRefresh(exp);
    }
}

export { STATES };
export default connect;
