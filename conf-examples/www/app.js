/*
 * Browser client for ngx_chat_module: plain JavaScript, native WebSocket,
 * no build step and no external resources.
 *
 * Protocol (one JSON object per text frame) and behaviour:
 *   - connect to ws(s)://<this host>/chat?user=NAME, wait for "welcome";
 *   - first join of a room in this page: {"type":"join","history":50};
 *     after an unexpected close: reconnect with backoff 1 s, 2 s, 4 s ...
 *     at most 10 s, and re-join with {"since": <last message id seen>} so
 *     that the server replays what was missed ("complete":false means it
 *     could not replay everything);
 *   - message ids are opaque strings, ordered by their leading number;
 *   - the last seen message id of each room is kept in localStorage
 *     (key "ngx-chat:last-id:" + room) and used to mark the messages that
 *     are new since the previous visit;
 *   - user text is only ever put into the page with textContent.
 *
 * window.__chat is a small debug and test hook (see the end of the file).
 */

'use strict';

(function () {

    var MAX_FRAME_BYTES = 4096;          /* chat_max_message_size in chat.conf */
    var HISTORY_ON_JOIN = 50;
    var OLDER_PAGE = 50;
    var BACKOFF_MIN_MS = 1000;
    var BACKOFF_MAX_MS = 10000;
    var STORE = 'ngx-chat:';
    var NAME_RE = /^[A-Za-z0-9_.\-]{1,32}$/;
    var MAX_DEBUG_FRAMES = 1000;
    var JOIN_REF = 'join';

    function $(id) { return document.getElementById(id); }

    var el = {
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

    var S = {
        name: null,             /* the name asked for */
        me: null,               /* the user id the server gave us (welcome) */
        room: null,
        ws: null,
        wanted: false,          /* the user wants to be in the room */
        joined: false,          /* joined on the current connection */
        joinedOnce: false,      /* joined S.room before in this page */
        attempt: 0,             /* reconnection attempts since last join */
        timer: null,
        outage: false,          /* a "connection lost" notice is up */
        lastId: null,           /* newest message id seen in S.room */
        oldestId: null,
        seen: new Set(),
        members: new Set(),
        expectJoinHistory: false,
        rejoining: false,       /* this join is a re-join after an outage */
        rejoinSince: null,
        olderPending: false,
        lastVisitId: null,
        refSeq: 0,
        pending: new Map(),     /* ref -> text, until acked */
        bannerTimer: null
    };

    var debug = { frames: [] };

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

    /*
     * Message ids are opaque strings to the server ("since" and "before"
     * send them back as they came).  Today they are a growing decimal
     * number, maybe followed by a server tag ("-name" with a relay): the
     * page orders by that number, then by the whole string.
     */

    function idNumber(id) {
        var m = /^[0-9]+/.exec(id);

        return m ? m[0].replace(/^0+(?=[0-9])/, '') : '';
    }

    function cmpId(a, b) {
        var na, nb;

        a = String(a);
        b = String(b);
        na = idNumber(a);
        nb = idNumber(b);

        if (na.length !== nb.length) {
            return na.length < nb.length ? -1 : 1;
        }

        if (na !== nb) {
            return na < nb ? -1 : 1;
        }

        return a < b ? -1 : (a > b ? 1 : 0);
    }

    function isId(v) {
        return (typeof v === 'string' && v.length > 0 && v.length <= 128)
               || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0);
    }

    function utf8Length(s) {
        return new TextEncoder().encode(s).length;
    }

    function record(dir, frame) {
        debug.frames.push({ dir: dir, t: Date.now(), frame: frame });

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
        var stick = nearBottom();

        el.log.appendChild(li);

        if (stick) {
            scrollToBottom();
        }
    }

    function notice(text, kind) {
        var li = document.createElement('li');

        li.className = 'notice ' + (kind || 'info');
        li.textContent = text;
        appendToLog(li);
    }

    function formatTime(ts) {
        var d = new Date(ts);

        if (isNaN(d.getTime())) {
            return null;
        }

        return d;
    }

    function messageElement(m, id) {
        var li = document.createElement('li');
        var head = document.createElement('p');
        var who = document.createElement('span');
        var body = document.createElement('p');
        var d = formatTime(m.ts);

        li.className = 'msg';
        li.dataset.id = id;

        if (S.me !== null && m.user === S.me) {
            li.classList.add('mine');
        }

        head.className = 'meta';
        who.className = 'user';
        who.textContent = String(m.user);
        head.appendChild(who);

        if (d) {
            var time = document.createElement('time');

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

    /*
     * Live and replayed messages go at the end, in id order among the
     * messages after the last notice; pages of older messages go before
     * the first message shown (anchor).
     */

    function insertMessage(li, id, anchor) {
        var stick, node;

        if (anchor !== undefined) {
            el.log.insertBefore(li, anchor);
            return;
        }

        stick = nearBottom();
        node = el.log.lastElementChild;

        while (node && node.classList.contains('msg')
               && cmpId(node.dataset.id, id) > 0)
        {
            node = node.previousElementSibling;
        }

        el.log.insertBefore(li, node ? node.nextSibling : el.log.firstChild);

        if (stick) {
            scrollToBottom();
        }
    }

    function addMessage(m, anchor) {
        if (!m || typeof m !== 'object' || !isId(m.id)) {
            return false;
        }

        if (m.room !== undefined && m.room !== S.room) {
            return false;
        }

        var id = String(m.id);

        if (S.seen.has(id)) {
            return false;
        }

        S.seen.add(id);

        if (S.seen.size === 1) {
            /* the "no messages yet" notice has had its day */
            var empty = el.log.querySelector('.notice.empty');

            if (empty) {
                empty.remove();
            }
        }

        insertMessage(messageElement(m, id), id, anchor);

        if (S.lastId === null || cmpId(id, S.lastId) > 0) {
            S.lastId = id;
            rememberLastId(S.room, id);
        }

        if (S.oldestId === null || cmpId(id, S.oldestId) < 0) {
            S.oldestId = id;
        }

        return true;
    }

    function rememberLastId(room, id) {
        var key = 'last-id:' + room;
        var old = storeGet(key);

        /* another tab may have seen more of this room already */
        if (old === null || !isId(old) || cmpId(id, old) > 0) {
            storeSet(key, id);
        }
    }

    /* members */

    function renderMembers() {
        var names = Array.from(S.members).sort(function (a, b) {
            if (a === S.me) { return -1; }
            if (b === S.me) { return 1; }
            return a.localeCompare(b);
        });

        el.members.textContent = '';

        names.forEach(function (name) {
            var li = document.createElement('li');

            li.textContent = name;

            if (name === S.me) {
                var you = document.createElement('span');

                you.className = 'you';
                you.textContent = ' (you)';
                li.appendChild(you);
            }

            el.members.appendChild(li);
        });

        el.memberCount.textContent = String(names.length);
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

    /* the WebSocket */

    function send(obj) {
        if (!S.ws || S.ws.readyState !== WebSocket.OPEN) {
            return false;
        }

        record('out', obj);
        S.ws.send(JSON.stringify(obj));
        return true;
    }

    function connect() {
        var ws, url, token;

        clearTimeout(S.timer);
        S.timer = null;

        url = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//'
              + location.host + '/chat?user=' + encodeURIComponent(S.name);

        /* a page opened with ?token=JWT passes it on (chat_jwt $arg_token) */
        token = new URLSearchParams(location.search).get('token');

        if (token) {
            url += '&token=' + encodeURIComponent(token);
        }

        setConn('connecting', S.outage ? 'Reconnecting\u2026' : 'Connecting\u2026');

        try {
            ws = new WebSocket(url);
        } catch (e) {
            scheduleReconnect();
            return;
        }

        S.ws = ws;
        S.joined = false;

        ws.onmessage = function (ev) {
            if (ws === S.ws) {
                onFrame(ev.data);
            }
        };

        ws.onclose = function (ev) {
            if (ws === S.ws) {
                onClose(ev);
            }
        };

        ws.onerror = function () {
            /* a close event follows */
        };
    }

    function describeClose(ev) {
        var what = {
            1000: 'closed',
            1001: 'the server is going away',
            1002: 'protocol error',
            1006: 'connection dropped',
            1008: 'policy violation',
            1009: 'message too big',
            1011: 'server error',
            4000: 'dropped by this page',
            4001: 'could not join the room'
        }[ev.code] || 'closed';

        var s = what + ', code ' + ev.code;

        if (ev.reason) {
            s += ': ' + ev.reason;
        }

        return s;
    }

    function onClose(ev) {
        var unconfirmed = S.pending.size;

        S.ws = null;
        S.joined = false;
        S.expectJoinHistory = false;
        S.olderPending = false;
        S.pending.clear();

        if (!S.wanted) {
            setConn('offline', 'Not connected');
            return;
        }

        if (!S.outage) {
            S.outage = true;
            notice((S.joinedOnce ? 'Connection lost (' : 'Could not connect (')
                   + describeClose(ev) + '). Retrying\u2026', 'warn');
        }

        if (unconfirmed) {
            notice(unconfirmed + ' message(s) were not confirmed by the server;'
                   + ' they will show up here if it got them.', 'warn');
        }

        scheduleReconnect();
    }

    function scheduleReconnect() {
        var delay = Math.min(BACKOFF_MIN_MS * Math.pow(2, S.attempt),
                             BACKOFF_MAX_MS);

        S.attempt++;
        clearTimeout(S.timer);
        S.timer = setTimeout(connect, delay);

        setConn('reconnecting', 'Offline \u2014 reconnecting in '
                                + Math.round(delay / 1000) + ' s');
    }

    function reconnectNow() {
        if (S.wanted && S.ws === null) {
            connect();
        }
    }

    function onFrame(data) {
        var f;

        try {
            f = JSON.parse(data);
        } catch (e) {
            return;
        }

        if (!f || typeof f !== 'object') {
            return;
        }

        record('in', f);

        switch (f.type) {
        case 'welcome':
            onWelcome(f);
            break;
        case 'joined':
            onJoined(f);
            break;
        case 'history':
            onHistory(f);
            break;
        case 'message':
            if (f.room === S.room) {
                addMessage(f);
            }
            break;
        case 'ack':
            S.pending.delete(f.ref);
            break;
        case 'presence':
            onPresence(f);
            break;
        case 'who':
            if (f.room === S.room && Array.isArray(f.users)) {
                S.members = new Set(f.users.map(String));
                renderMembers();
            }
            break;
        case 'error':
            onError(f);
            break;
        default:
            break;
        }
    }

    function onWelcome(f) {
        var join = { type: 'join', room: S.room, ref: JOIN_REF };

        S.me = String(f.user);
        el.me.textContent = S.me;

        setConn('connecting', 'Joining #' + S.room + '\u2026');

        S.rejoining = S.joinedOnce;

        if (S.rejoining && S.lastId !== null) {
            join.since = S.lastId;
            S.rejoinSince = S.lastId;

        } else {
            join.history = HISTORY_ON_JOIN;
            S.rejoinSince = null;
        }

        S.expectJoinHistory = true;
        send(join);
    }

    function onJoined(f) {
        var first = !S.joinedOnce;

        if (f.room !== S.room) {
            return;
        }

        S.joined = true;
        S.joinedOnce = true;
        S.attempt = 0;

        setConn('connected', 'Connected');

        if (S.outage) {
            S.outage = false;
            notice('Reconnected.', 'info');
        }

        send({ type: 'who', room: S.room });

        if (first) {
            el.text.focus();
        }
    }

    function onHistory(f) {
        var msgs, oldNewest, sawOld, divider;

        if (f.room !== S.room) {
            return;
        }

        msgs = Array.isArray(f.messages) ? f.messages : [];

        if (S.expectJoinHistory) {
            S.expectJoinHistory = false;

            if (!S.rejoining) {
                /* the first join in this page: mark what is new */
                oldNewest = S.lastVisitId;
                sawOld = false;
                divider = false;

                msgs.forEach(function (m) {
                    if (oldNewest !== null && isId(m.id) && !divider) {
                        if (cmpId(String(m.id), oldNewest) <= 0) {
                            sawOld = true;

                        } else if (sawOld) {
                            var li = document.createElement('li');

                            li.className = 'divider';
                            li.textContent = 'New since your last visit';
                            appendToLog(li);
                            divider = true;
                        }
                    }

                    addMessage(m);
                });

                el.older.hidden = (msgs.length < HISTORY_ON_JOIN);

                if (msgs.length === 0) {
                    notice('No messages in #' + S.room + ' yet. Say hello!',
                           'info empty');
                }

                scrollToBottom();
                return;
            }

            /* re-join after a reconnection: the messages we missed */

            var added = 0;

            msgs.forEach(function (m) {
                if (addMessage(m)) {
                    added++;
                }
            });

            if (f.complete === false && S.rejoinSince !== null) {
                notice('Some messages sent while you were away could not be'
                       + ' recovered: the server keeps only recent history.',
                       'warn');

            } else if (added) {
                notice(added + ' missed message' + (added === 1 ? '' : 's')
                       + ' recovered.', 'info');
            }

            return;
        }

        if (S.olderPending) {
            var anchor = el.log.querySelector('.msg');
            var h = el.log.scrollHeight;

            S.olderPending = false;
            el.older.disabled = false;

            msgs.forEach(function (m) {
                addMessage(m, anchor);
            });

            /* keep what the reader was looking at in place */
            el.log.scrollTop += el.log.scrollHeight - h;

            el.older.hidden = (msgs.length < OLDER_PAGE);

            if (msgs.length < OLDER_PAGE) {
                var li = document.createElement('li');

                li.className = 'notice info';
                li.textContent = (f.complete === false)
                    ? 'Older messages are no longer kept by the server.'
                    : 'This is the beginning of #' + S.room + '.';
                el.log.insertBefore(li, el.log.firstChild);
            }
        }
    }

    function onPresence(f) {
        var user;

        if (f.room !== S.room || typeof f.user !== 'string') {
            return;
        }

        user = f.user;

        if (f.event === 'join') {
            S.members.add(user);
            notice(user + ' joined', 'presence');

        } else if (f.event === 'leave') {
            S.members.delete(user);
            notice(user + ' left', 'presence');
        }

        renderMembers();
    }

    function onError(f) {
        var text = typeof f.message === 'string' ? f.message : 'error';
        var code = typeof f.code === 'string' ? f.code : 'error';
        var pending;

        if (code === 'rate_limited' && typeof f.retry_after_ms === 'number') {
            text = 'You are sending messages too fast; try again in '
                   + Math.max(1, Math.ceil(f.retry_after_ms / 1000)) + ' s';
        }

        if (typeof f.ref === 'string' && S.pending.has(f.ref)) {
            /* give the unsent text back */
            pending = S.pending.get(f.ref);
            S.pending.delete(f.ref);

            if (el.text.value === '') {
                el.text.value = pending;
            }

            text += ' (your message was not sent)';
        }

        showBanner('Error: ' + text + ' [' + code + ']');
        notice('Error: ' + text + ' [' + code + ']', 'error');

        if (f.ref === JOIN_REF && !S.joined && S.ws) {
            /* the join failed (the zone may be full): try again later */
            S.ws.close(4001, 'join failed');
        }
    }

    /* entering and leaving a room */

    function start(name, room) {
        S.name = name;
        S.room = room;
        S.me = null;
        S.wanted = true;
        S.joined = false;
        S.joinedOnce = false;
        S.attempt = 0;
        S.outage = false;
        S.lastId = null;
        S.oldestId = null;
        S.seen = new Set();
        S.members = new Set();
        S.pending.clear();
        S.lastVisitId = storeGet('last-id:' + room);

        if (S.lastVisitId !== null && !isId(S.lastVisitId)) {
            S.lastVisitId = null;
        }

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

        connect();
    }

    function leave() {
        var ws = S.ws;

        S.wanted = false;
        clearTimeout(S.timer);
        S.timer = null;

        if (ws) {
            if (S.joined) {
                send({ type: 'leave', room: S.room });
            }

            S.ws = null;
            ws.close(1000, 'bye');
        }

        S.joined = false;
        setConn('offline', 'Not connected');
        hideBanner();

        el.chat.hidden = true;
        el.leave.hidden = true;
        el.login.hidden = false;
        document.title = 'nginx chat';
        el.name.focus();
    }

    /* UI events */

    el.loginForm.addEventListener('submit', function (ev) {
        var name = el.name.value.trim();
        var room = el.room.value.trim();

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

    el.composer.addEventListener('submit', function (ev) {
        var text = el.text.value;
        var ref, frame;

        ev.preventDefault();

        if (text.trim() === '') {
            return;
        }

        if (!S.joined) {
            showBanner('Not connected: your message was not sent'
                       + ' (it stays in the box).');
            return;
        }

        ref = 'r' + (++S.refSeq);
        frame = { type: 'send', room: S.room, content: text, ref: ref };

        if (utf8Length(JSON.stringify(frame)) > MAX_FRAME_BYTES) {
            showBanner('That message is too long to send.');
            return;
        }

        S.pending.set(ref, text);
        send(frame);
        el.text.value = '';
        el.text.focus();
    });

    el.older.addEventListener('click', function () {
        if (!S.joined || S.olderPending || S.oldestId === null) {
            return;
        }

        S.olderPending = true;
        el.older.disabled = true;
        send({ type: 'history', room: S.room, limit: OLDER_PAGE,
               before: S.oldestId });
    });

    el.leave.addEventListener('click', leave);
    el.reconnectNow.addEventListener('click', reconnectNow);
    el.bannerClose.addEventListener('click', hideBanner);

    window.addEventListener('online', reconnectNow);

    /* prefill the form with what was used last time */

    (function () {
        var name = storeGet('name');
        var room = storeGet('room');

        if (name && NAME_RE.test(name)) {
            el.name.value = name;
        }

        if (room) {
            el.room.value = room;
        }
    })();

    /*
     * Debug and test hook.  dropConnection() closes the socket from this
     * side with code 4000, which the page handles like any unexpected
     * close: it reconnects and re-joins with "since".
     */

    window.__chat = {
        frames: debug.frames,

        dropConnection: function () {
            if (S.ws === null) {
                return false;
            }

            S.ws.close(4000, 'dropped for testing');
            return true;
        },

        sendRaw: function (obj) {
            if (!S.ws || S.ws.readyState !== WebSocket.OPEN) {
                return false;
            }

            record('out', obj);
            S.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
            return true;
        },

        state: function () {
            return {
                conn: el.conn.dataset.state,
                me: S.me,
                room: S.room,
                joined: S.joined,
                lastId: S.lastId,
                attempt: S.attempt,
                members: Array.from(S.members).sort()
            };
        }
    };

})();
