# The wire protocol (SPEC §4): welcome, join/joined, send/message/ack, leave,
# escaping, and every error code with its ref; one worker, so that the
# order of frames on a connection is deterministic.

use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Util qw(conn req_next wait_type);
use JSON::PP ();
use Time::HiRes ();

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

# --- error cases: [name, request (hash or raw text), code, expected ref] ----
# Every one is sent by eve, a member of room "eroom"; eve must get exactly
# this error as the next frame, and the connection must keep working.

my $R129 = 'r' x 129;
my $E43  = "\x{20ac}" x 43;          # 43 characters, 129 bytes

my @errors = (
    [ 'not JSON',                'hello',                                       'bad_request' ],
    [ 'truncated JSON',          '{"type":"join","room":"x"',                   'bad_request' ],
    [ 'trailing garbage',        '{"type":"who","room":"eroom"} x',             'bad_request' ],
    [ 'bad escape',              '{"type":"send","room":"eroom","content":"\\x"}', 'bad_request' ],
    [ 'empty text message',      '',                                            'bad_request' ],
    [ 'JSON array',              '[{"type":"who","room":"eroom"}]',             'bad_request' ],
    [ 'JSON string',             '"join"',                                      'bad_request' ],
    [ 'JSON number',             '42',                                          'bad_request' ],
    [ 'JSON null',               'null',                                        'bad_request' ],
    [ 'missing type',            { room => 'eroom', ref => 'e1' },              'bad_request', 'e1' ],
    [ 'type is a number',        { type => 5, room => 'eroom', ref => 'e2' },   'bad_request', 'e2' ],
    [ 'type is null',            { type => undef, room => 'eroom', ref => 'e2n' }, 'bad_request', 'e2n' ],
    [ 'unknown type',            { type => 'shout', room => 'eroom', ref => 'e3' }, 'bad_request', 'e3' ],
    [ 'type in upper case',      { type => 'JOIN', room => 'x', ref => 'e3u' }, 'bad_request', 'e3u' ],
    [ 'join without room',       { type => 'join', ref => 'e4' },               'bad_request', 'e4' ],
    [ 'send without room',       { type => 'send', content => 'x', ref => 'e5' }, 'bad_request', 'e5' ],
    [ 'who without room',        { type => 'who', ref => 'e5w' },               'bad_request', 'e5w' ],
    [ 'room is a number',        { type => 'join', room => 7, ref => 'e6' },    'bad_request', 'e6' ],
    [ 'room is null',            { type => 'join', room => undef, ref => 'e6n' }, 'bad_request', 'e6n' ],
    [ 'room is an array',        { type => 'join', room => ['a'], ref => 'e6a' }, 'bad_request', 'e6a' ],
    [ 'room ""',                 { type => 'join', room => '', ref => 'e7' },   'bad_request', 'e7' ],
    [ 'send to room ""',         { type => 'send', room => '', content => 'x', ref => 'e7s' }, 'bad_request', 'e7s' ],
    [ 'room of 129 bytes',       { type => 'join', room => $R129, ref => 'e8' }, 'bad_request', 'e8' ],
    [ 'room of 129 bytes (43 chars)', { type => 'join', room => $E43, ref => 'e9' }, 'bad_request', 'e9' ],
    [ 'content missing',         { type => 'send', room => 'eroom', ref => 'c1' }, 'bad_request', 'c1' ],
    [ 'content is a number',     { type => 'send', room => 'eroom', content => 42, ref => 'c2' }, 'bad_request', 'c2' ],
    [ 'content is null',         { type => 'send', room => 'eroom', content => undef, ref => 'c3' }, 'bad_request', 'c3' ],
    [ 'content is an object',    { type => 'send', room => 'eroom', content => { a => 1 }, ref => 'c4' }, 'bad_request', 'c4' ],
    [ 'content is an array',     { type => 'send', room => 'eroom', content => ['x'], ref => 'c5' }, 'bad_request', 'c5' ],
    [ 'content is true',         { type => 'send', room => 'eroom', content => JSON::PP::true, ref => 'c6' }, 'bad_request', 'c6' ],
    [ 'ref is a number',         { type => 'send', room => 'eroom', content => 'x', ref => 5 }, 'bad_request' ],
    [ 'ref is an object',        { type => 'send', room => 'eroom', content => 'x', ref => { a => 1 } }, 'bad_request' ],
    [ 'ref is null',             { type => 'send', room => 'eroom', content => 'x', ref => undef }, 'bad_request' ],
    [ 'U+0000 in content',       '{"type":"send","room":"eroom","content":"a\u0000b","ref":"z1"}', 'bad_request', 'z1' ],
    [ 'U+0000 alone as content', '{"type":"send","room":"eroom","content":"\u0000","ref":"z2"}', 'bad_request', 'z2' ],
    [ 'U+0000 in room',          '{"type":"join","room":"ro\u0000om","ref":"z3"}', 'bad_request', 'z3' ],
    [ 'U+0000 in ref',           '{"type":"send","room":"eroom","content":"x","ref":"r\u0000"}', 'bad_request' ],
    [ 'lone high surrogate in content', '{"type":"send","room":"eroom","content":"a\ud800b","ref":"s1"}', 'bad_request', 's1' ],
    [ 'lone low surrogate in content',  '{"type":"send","room":"eroom","content":"\udc00","ref":"s2"}', 'bad_request', 's2' ],
    [ 'high surrogate at the end',      '{"type":"send","room":"eroom","content":"ab\ud83d","ref":"s3"}', 'bad_request', 's3' ],
    [ 'two high surrogates',            '{"type":"send","room":"eroom","content":"\ud800\ud800","ref":"s4"}', 'bad_request', 's4' ],
    [ 'lone surrogate in room',         '{"type":"join","room":"r\ud800","ref":"s5"}', 'bad_request', 's5' ],
    [ 'lone surrogate in ref',          '{"type":"send","room":"eroom","content":"x","ref":"\ud800"}', 'bad_request' ],
    [ 'send to a room not joined',      { type => 'send', room => 'elsewhere', content => 'x', ref => 'n1' }, 'not_member', 'n1' ],
    [ 'leave a room not joined',        { type => 'leave', room => 'elsewhere', ref => 'n2' }, 'not_member', 'n2' ],
    [ 'history of a room not joined',   { type => 'history', room => 'elsewhere', ref => 'n3' }, 'not_member', 'n3' ],
    [ 'who of a room not joined',       { type => 'who', room => 'elsewhere', ref => 'n4' }, 'not_member', 'n4' ],
    [ 'send without ref, not member',   { type => 'send', room => 'elsewhere', content => 'x' }, 'not_member' ],
);

# A request whose only fault is in a string field ("\u0000", a lone
# surrogate: well-formed escapes, so the JSON text is valid) still carries
# a valid "ref", and the error echoes it (SPEC §4): the z* and s* cases
# above expect their ref back; a fault in the ref itself loses it.

my @contents = (
    [ 'plain',           'hello world' ],
    [ 'empty',           '' ],
    [ 'quotes',          'say "hi" "" "' ],
    [ 'backslashes',     'back\\slash \\\\ \\n \\u0041 \\' ],
    [ 'newlines',        "line1\nline2\r\nline3\r" ],
    [ 'tab, bs, ff',     "a\tb\bc\fd" ],
    [ 'control chars',   join('', map { chr } 1 .. 31) . "\x7f" ],
    [ 'slash and html',  '</script><b>&amp;</b>' ],
    [ 'latin-1',         "Jos\x{e9} \x{fc}ber \x{df}" ],
    [ 'cjk',             "\x{65e5}\x{672c}\x{8a9e}" ],
    [ 'emoji',           "\x{1f600} \x{1f468}\x{200d}\x{1f469}\x{200d}\x{1f467}" ],
    [ 'line separators', "a\x{2028}b\x{2029}c\x{feff}" ],
    [ 'json-looking',    '{"type":"message","content":"x"}' ],
    [ 'mixed',           "\"\\\n\x{1f600}\x01\t\x{e9}\\\"" ],
);

# --- sends as raw text: [name, text, content delivered, ref] -----------------
# A "send" whose members are all plain strings is read in place
# (src/ngx_chat_jflat.c); everything else goes to jansson.  Both must give
# the same answer.

my @raw_sends = (
    [ 'plain strings',           qq({"type":"send","room":"raw","content":"plain \x{e9} \x{1f600} <>&'/","ref":"p1"}),
      "plain \x{e9} \x{1f600} <>&'/", 'p1' ],
    [ 'whitespace between tokens', qq( {\n "type" : "send" ,\t"room":"raw",\r\n"content":"sp" , "ref":"p2" } \n),
      'sp', 'p2' ],
    [ 'members in another order', '{"ref":"p3","content":"order","room":"raw","type":"send"}', 'order', 'p3' ],
    [ 'an unknown member',       '{"type":"send","room":"raw","content":"extra","extra":"x","ref":"p4"}', 'extra', 'p4' ],
    [ 'escapes',                 '{"type":"send","room":"raw","content":"a\\u0041\\n\\"","ref":"p5"}', "aA\n\"", 'p5' ],
    [ 'a duplicate member: the last counts', '{"type":"send","room":"raw","content":"first","content":"second","ref":"p6"}',
      'second', 'p6' ],
    [ 'nine members',            '{"type":"send","room":"raw","content":"nine","a":"1","b":"2","c":"3","d":"4","e":"5","ref":"p7"}',
      'nine', 'p7' ],
    [ 'a number beside',         '{"type":"send","room":"raw","content":"num","n":1,"ref":"p8"}', 'num', 'p8' ],
    [ 'empty strings',           '{"type":"send","room":"raw","content":"","ref":""}', '', '' ],
);

plan tests => 94 + 5 * @errors + 2 * @contents + 3 * @raw_sends;

# one connection sends hundreds of requests here: chat_request_rate (its
# own test is t/requestrate.t) is off
my $t = Test::Chat::Nginx->new(
    http   => "chat_zone chat 1m;\nchat_request_rate off;",
    server => <<'_EOC_',
        location = /chat  { chat chat; chat_user $arg_user; }
        location = /chatx { chat chat; chat_user $http_x_user; }
        location = /chat2 { chat chat; chat_user $arg_user; chat_max_rooms 2; }
_EOC_
    workers => 1,
);

# --- helpers -----------------------------------------------------------------

sub quiet {        # frames arriving within $secs, as a list
    my ($ws, $secs) = @_;
    return $ws->drain_json($secs || 0.3);
}

sub now_ms { int(Time::HiRes::time() * 1000) }

# --- welcome -------------------------------------------------------------------

{
    my $ws = $t->ws(path => '/chat?user=ann');
    ok($ws->ok, 'ann upgraded') or diag($ws->error);
    my $f = $ws->recv_frame(timeout => 3);
    is($f && $f->{type}, 'text', 'first frame is a text frame');
    my $w = $f ? eval { $JSON->decode($f->{payload}) } : undef;
    is($w && $w->{type}, 'welcome', 'first frame is welcome');
    is($w && $w->{user}, 'ann', 'welcome carries the user id');
}

{
    my $user = 'we"ird\\us\'er';
    my $ws = $t->ws(path => '/chatx', headers => { 'X-User' => $user });
    ok($ws->ok, 'user from a header: upgraded') or diag($ws->error);
    my $w = $ws->recv_json(3);
    is($w && $w->{user}, $user, 'welcome: quotes and backslash escaped') or diag($ws->error);
    like($ws->{last_raw} || '', qr/"user":"we\\"ird\\\\us'er"/, 'welcome raw JSON escapes');
}

{
    my $user = "ctl\x01\x1f\ttab";
    my $ws = $t->ws(path => '/chatx', headers => { 'X-User' => $user });
    my $w = $ws->ok ? $ws->recv_json(3) : undef;
    is($w && $w->{user}, $user, 'welcome: control characters in the user id escaped')
        or diag($ws->error);
}

{
    my $user = "Jos\x{e9} \x{2603}";
    my $bytes = $user;
    utf8::encode($bytes);
    my $ws = $t->ws(path => '/chatx', headers => { 'X-User' => $bytes });
    my $w = $ws->ok ? $ws->recv_json(3) : undef;
    is($w && $w->{user}, $user, 'welcome: UTF-8 user id') or diag($ws->error);
}

{
    my $ws = $t->ws(path => '/chat?user=a%20b%22c');
    my $w = $ws->ok ? $ws->recv_json(3) : undef;
    is($w && $w->{user}, 'a%20b%22c', 'chat_user $arg_user is used as is, not URL-decoded');
}

{
    # not valid UTF-8: the output must still be valid (UTF-8) JSON, or the
    # handshake refused
    my $ws = $t->ws(path => '/chatx', headers => { 'X-User' => "bad\xff\xfeuser" });
    if ($ws->ok) {
        my $m = $ws->recv_message(3);
        my $p = $m ? $m->{payload} : '';
        my $d = eval { $JSON->decode($p) };
        ok($d && $d->{type} eq 'welcome', 'a non-UTF-8 user id still gives valid UTF-8 JSON')
            or diag("welcome payload: " . join(' ', map { sprintf '%02x', ord } split //, $p));
    } else {
        pass('a non-UTF-8 user id is refused (' . ($ws->status || '?') . ')');
    }
}

# --- join / joined --------------------------------------------------------------

my $ann = conn($t, 'ann');
my $bob = conn($t, 'bob');
my $cat = conn($t, 'cat');

is_deeply(req_next($ann, { type => 'join', room => 'lobby' }),
          { type => 'joined', room => 'lobby', members => 1 }, 'ann joined lobby, members 1');
is_deeply(req_next($bob, { type => 'join', room => 'lobby' }),
          { type => 'joined', room => 'lobby', members => 2 }, 'bob joined lobby, members 2');
is_deeply(req_next($cat, { type => 'join', room => 'lobby' }),
          { type => 'joined', room => 'lobby', members => 3 }, 'cat joined lobby, members 3');
ok(wait_type($ann, 'presence', sub { $_[0]{user} eq 'cat' }), 'ann saw cat arrive');
ok(wait_type($bob, 'presence', sub { $_[0]{user} eq 'cat' }), 'bob saw cat arrive');

# --- send / message / ack -------------------------------------------------------

my %ids;
{
    my $before = now_ms();
    $ann->send_json({ type => 'send', room => 'lobby', content => 'hello', ref => 'r1' });
    my $m = $ann->recv_json(3);
    my $raw = $ann->{last_raw} || '';
    my $a = $ann->recv_json(3);
    my $after = now_ms();

    is($m && $m->{type}, 'message', 'sender gets its own message first');
    is($m && $m->{room}, 'lobby', 'message room');
    is($m && $m->{user}, 'ann', 'message user');
    is($m && $m->{content}, 'hello', 'message content');
    like($raw, qr/"id":"[0-9]+-[0-9a-f]{12}"/,
         'message id is a string: a number and the server tag');
    like($raw, qr/"ts":[0-9]+[,}]/, 'ts is a JSON number');
    ok($m && $m->{ts} =~ /^\d+$/ && $m->{ts} >= $before - 2000 && $m->{ts} <= $after + 2000,
       'ts is milliseconds since the epoch, close to now')
        or diag("ts " . ($m ? $m->{ts} : 'none') . ", now $before..$after");

    is($a && $a->{type}, 'ack', 'then the ack');
    is($a && $a->{ref}, 'r1', 'ack echoes the ref');
    is($a && $a->{id}, $m && $m->{id}, 'ack id is the message id');
    like($ann->{last_raw} || '', qr/"id":"[0-9]+-[0-9a-f]{12}"/,
         'ack id is a string');

    for my $pair ([ bob => $bob ], [ cat => $cat ]) {
        my $o = $pair->[1]->recv_json(3);
        is_deeply($o, $m, "$pair->[0] got the same message object");
    }
    $ids{ $m->{id} }++ if $m;
}

{
    $bob->send_json({ type => 'send', room => 'lobby', content => 'no ref here' });
    my $m = $bob->recv_json(3);
    my $a = $bob->recv_json(3);
    is($m && $m->{content}, 'no ref here', 'send without ref: message');
    ok($a && $a->{type} eq 'ack' && !exists $a->{ref} && defined $a->{id},
       'send without ref: ack without ref') or diag(explain $a);
    is(($ann->recv_json(3) || {})->{content}, 'no ref here', 'ann got bob\'s message');
    is(($cat->recv_json(3) || {})->{content}, 'no ref here', 'cat got bob\'s message');
    $ids{ $m->{id} }++ if $m;
}

{
    # ann and bob send 5 each without waiting; everybody sees the same order
    for my $i (1 .. 5) {
        $ann->send_json({ type => 'send', room => 'lobby', content => "a$i", ref => "ra$i" });
        $bob->send_json({ type => 'send', room => 'lobby', content => "b$i", ref => "rb$i" });
    }
    my %seq;
    my %acks;
    for my $pair ([ ann => $ann ], [ bob => $bob ], [ cat => $cat ]) {
        my ($name, $ws) = @$pair;
        my @got;
        my $deadline = Time::HiRes::time() + 5;
        while (@got < 10 && Time::HiRes::time() < $deadline) {
            my $f = $ws->recv_json(3) or last;
            if ($f->{type} eq 'message') { push @got, $f }
            elsif ($f->{type} eq 'ack') { push @{ $acks{$name} }, $f }
        }
        $seq{$name} = \@got;
    }
    # the last acks may follow the last message
    for my $pair ([ ann => $ann ], [ bob => $bob ]) {
        while (@{ $acks{ $pair->[0] } || [] } < 5) {
            my $f = wait_type($pair->[1], 'ack') or last;
            push @{ $acks{ $pair->[0] } }, $f;
        }
    }
    is(scalar @{ $seq{cat} }, 10, 'cat got all 10 messages');
    my @cat_ids = map { $_->{id} } @{ $seq{cat} };
    is_deeply([ map { $_->{id} } @{ $seq{ann} } ], \@cat_ids, 'ann saw the same order as cat');
    is_deeply([ map { $_->{id} } @{ $seq{bob} } ], \@cat_ids, 'bob saw the same order as cat');
    is_deeply([ grep { /^a/ } map { $_->{content} } @{ $seq{cat} } ], [ map { "a$_" } 1 .. 5 ],
              'ann\'s messages in the order sent');
    is_deeply([ grep { /^b/ } map { $_->{content} } @{ $seq{cat} } ], [ map { "b$_" } 1 .. 5 ],
              'bob\'s messages in the order sent');
    is_deeply([ map { $_->{ref} } @{ $acks{ann} || [] } ], [ map { "ra$_" } 1 .. 5 ], 'ann got 5 acks in order');
    is_deeply([ map { $_->{ref} } @{ $acks{bob} || [] } ], [ map { "rb$_" } 1 .. 5 ], 'bob got 5 acks in order');
    my %by_content = map { $_->{content} => $_->{id} } @{ $seq{cat} };
    is_deeply([ map { $_->{id} } @{ $acks{ann} || [] } ], [ map { $by_content{"a$_"} } 1 .. 5 ],
              'ack ids match the message ids');
    $ids{$_}++ for @cat_ids;
    is(scalar(grep { $ids{$_} > 1 } keys %ids), 0, 'ids are unique');
    is(scalar keys %ids, 12, '12 distinct ids');
    ok(!grep({ !/^[0-9]+-[0-9a-f]{12}$/ } keys %ids),
       'all ids are strings: a number and the server tag');
}

# --- escaping round trip ----------------------------------------------------

{
    my $n = 0;
    my @echo_bad;
    for my $c (@contents) {
        my ($name, $text) = @$c;
        $n++;
        $ann->send_json({ type => 'send', room => 'lobby', content => $text, ref => "esc$n" });
        my $m = wait_type($bob, 'message');
        is($m && $m->{content}, $text, "content round trip: $name") or diag($bob->error);
        my $own = wait_type($ann, 'message');
        my $ack = wait_type($ann, 'ack');
        ok($own && $own->{content} eq $text && $ack && $ack->{ref} eq "esc$n",
           "sender's copy and ack: $name");
        wait_type($cat, 'message');
    }

    # escapes written by the client are decoded, a surrogate pair included
    $ann->send_text('{"type":"send","room":"lobby","content":"\u00e9\ud83d\ude00\u0001\/\"\\\\","ref":"raw"}');
    my $m = wait_type($bob, 'message');
    is($m && $m->{content}, "\x{e9}\x{1f600}\x{01}/\"\\", 'client escapes decoded (surrogate pair accepted)');
    wait_type($ann, 'ack');
    wait_type($cat, 'message');
}

{
    # user ids and room names are escaped too
    my $user = 'q"u\\o';
    my $room = "ro\"om\\\n\x{1f600}";
    my $q = $t->ws(path => '/chatx', headers => { 'X-User' => $user });
    $q->recv_json(3);
    is_deeply(req_next($q, { type => 'join', room => $room }),
              { type => 'joined', room => $room, members => 1 }, 'joined: room name escaped');
    is_deeply(req_next($ann, { type => 'join', room => $room }),
              { type => 'joined', room => $room, members => 2 }, 'second user in the escaped room');
    my $p = wait_type($q, 'presence');
    ok($p && $p->{room} eq $room && $p->{user} eq 'ann', 'presence: room name escaped');
    $q->send_json({ type => 'send', room => $room, content => 'x' });
    my $m = wait_type($ann, 'message');
    ok($m && $m->{user} eq $user && $m->{room} eq $room, 'message: user id and room name escaped')
        or diag(explain $m);
    my $w = req_next($ann, { type => 'who', room => $room });
    is_deeply([ sort @{ $w && $w->{users} || [] } ], [ sort 'ann', $user ], 'who: user ids escaped');
    is_deeply(req_next($ann, { type => 'leave', room => $room }), { type => 'left', room => $room },
              'left: room name escaped');
    $q->close;
}

# --- 128-byte room names ---------------------------------------------------------

{
    my $r128 = 'R' x 128;
    is_deeply(req_next($cat, { type => 'join', room => $r128 }),
              { type => 'joined', room => $r128, members => 1 }, 'a 128-byte room name is accepted');
    my $e128 = ("\x{20ac}" x 42) . 'ab';     # 128 bytes
    is_deeply(req_next($cat, { type => 'join', room => $e128 }),
              { type => 'joined', room => $e128, members => 1 }, 'a 128-byte room name of 44 characters');
    is(req_next($cat, { type => 'leave', room => $r128 })->{type}, 'left', 'leave it');
    is(req_next($cat, { type => 'leave', room => $e128 })->{type}, 'left', 'leave the other');
}

# --- error codes -------------------------------------------------------------------

my $eve = conn($t, 'eve');
my $lis = conn($t, 'lis');
is(req_next($eve, { type => 'join', room => 'eroom' })->{members}, 1, 'eve in eroom');
is(req_next($lis, { type => 'join', room => 'eroom' })->{members}, 2, 'lis listens in eroom');
ok(wait_type($eve, 'presence', sub { $_[0]{user} eq 'lis' }), 'eve saw lis');

for my $e (@errors) {
    my ($name, $r, $code, $ref) = @$e;
    my $got = req_next($eve, $r);
    is($got && $got->{type}, 'error', "$name: error") or diag(explain $got);
    is($got && $got->{code}, $code, "$name: code $code");
    ok($got && defined $got->{message} && !ref $got->{message} && length $got->{message},
       "$name: message is a text");
    {
        if (defined $ref) {
            is($got && $got->{ref}, $ref, "$name: ref echoed");
        } else {
            ok($got && !exists $got->{ref}, "$name: no ref");
        }
    }
    my $w = req_next($eve, { type => 'who', room => 'eroom' });
    is($w && $w->{type}, 'who', "$name: connection still works")
        or diag(explain $w);
}

{
    # nothing refused reached the room: lis's first message is this one
    $eve->send_json({ type => 'send', room => 'eroom', content => 'after the errors', ref => 'ok' });
    my $a = wait_type($eve, 'ack');
    is($a && $a->{ref}, 'ok', 'a valid send after all the errors is acked');
    my @got = grep { $_->{type} eq 'message' } quiet($lis, 0.4);
    is_deeply([ map { $_->{content} } @got ], [ 'after the errors' ],
              'none of the refused requests was delivered');
}

# --- too_many_rooms -----------------------------------------------------------------

{
    my $max = conn($t, 'max', path => '/chat2');
    is(req_next($max, { type => 'join', room => 'm1' })->{type}, 'joined', 'max joins m1');
    is(req_next($max, { type => 'join', room => 'm2' })->{type}, 'joined', 'max joins m2');
    my $e = req_next($max, { type => 'join', room => 'm3', ref => 'third' });
    is($e && $e->{code}, 'too_many_rooms', 'chat_max_rooms 2: third join refused');
    is($e && $e->{ref}, 'third', 'too_many_rooms echoes the ref');
    is(req_next($max, { type => 'who', room => 'm3' })->{code}, 'not_member', 'the refused join did not join');
    is(req_next($max, { type => 'join', room => 'm1' })->{type}, 'joined', 'joining a joined room at the limit: joined');
    is(req_next($max, { type => 'leave', room => 'm1' })->{type}, 'left', 'leave m1');
    is_deeply(req_next($max, { type => 'join', room => 'm3' }), { type => 'joined', room => 'm3', members => 1 },
              'after a leave the third room can be joined');
    $max->close;
}

{
    my $many = conn($t, 'many');
    my $ok = 0;
    for my $i (1 .. 32) {
        my $r = req_next($many, { type => 'join', room => "many$i" });
        $ok++ if $r && $r->{type} eq 'joined';
    }
    is($ok, 32, 'default chat_max_rooms: 32 rooms joined');
    my $e = req_next($many, { type => 'join', room => 'many33' });
    is($e && $e->{code}, 'too_many_rooms', 'the 33rd is too_many_rooms');
    $many->close;
}

# --- joining twice, leaving -------------------------------------------------------------

{
    my $x = conn($t, 'xan');
    my $y = conn($t, 'yul');
    is(req_next($x, { type => 'join', room => 'dup' })->{members}, 1, 'xan joined dup');
    is(req_next($y, { type => 'join', room => 'dup' })->{members}, 2, 'yul joined dup');
    ok(wait_type($x, 'presence', sub { $_[0]{user} eq 'yul' && $_[0]{event} eq 'join' }),
       'xan saw yul join');
    is_deeply(req_next($y, { type => 'join', room => 'dup' }), { type => 'joined', room => 'dup', members => 2 },
              'joining again: joined again, members not doubled');

    # barrier: anything the second join caused reaches xan before this
    $y->send_json({ type => 'send', room => 'dup', content => 'sync1' });
    my $m = wait_type($x, 'message');
    is($m && $m->{content}, 'sync1', 'xan got the sync message');
    is(scalar(grep { $_->{type} eq 'presence' } @{ $x->skipped }), 0,
       'no second presence for a second join');
    $x->clear_skipped;
    wait_type($y, 'ack');

    my $w = req_next($x, { type => 'who', room => 'dup' });
    is_deeply([ sort @{ $w->{users} || [] } ], [ 'xan', 'yul' ], 'who lists yul once');

    is_deeply(req_next($y, { type => 'leave', room => 'dup' }), { type => 'left', room => 'dup' },
              'one leave after two joins: left');
    my $p = wait_type($x, 'presence');
    ok($p && $p->{user} eq 'yul' && $p->{event} eq 'leave', 'xan saw yul leave');
    $y->clear_skipped;
    my $e = req_next($y, { type => 'send', room => 'dup', content => 'still here?', ref => 'gone' });
    is($e && $e->{code}, 'not_member', 'membership is a set: after one leave, send is not_member');
    is($e && $e->{ref}, 'gone', 'with the ref');
    is(req_next($y, { type => 'leave', room => 'dup' })->{code}, 'not_member', 'a second leave is not_member');

    $x->send_json({ type => 'send', room => 'dup', content => 'after leave' });
    wait_type($x, 'ack');
    my @late = grep { $_->{type} eq 'message' || $_->{type} eq 'presence' } quiet($y, 0.4);
    is(scalar @late, 0, 'no more messages from a room left') or diag(explain \@late);

    is_deeply(req_next($y, { type => 'join', room => 'dup' }), { type => 'joined', room => 'dup', members => 2 },
              'join again after leaving');
    $x->send_json({ type => 'send', room => 'dup', content => 'back' });
    is((wait_type($y, 'message') || {})->{content}, 'back', 'messages flow again');
}

{
    # leave on the lobby: bob stops getting lobby messages, others still do
    is_deeply(req_next($bob, { type => 'leave', room => 'lobby' }), { type => 'left', room => 'lobby' },
              'bob left lobby');
    $ann->send_json({ type => 'send', room => 'lobby', content => 'bob is gone' });
    is((wait_type($cat, 'message') || {})->{content}, 'bob is gone', 'cat still gets lobby messages');
    my @late = grep { $_->{type} eq 'message' } quiet($bob, 0.4);
    is(scalar @late, 0, 'bob gets no lobby messages after leaving');
}

# --- one order for all members, across two workers --------------------------------------

{
    my $t2 = Test::Chat::Nginx->new(
        http   => "chat_zone chat 1m;\nlog_format chatpid '\$arg_tag \$pid';",
        server => <<'_EOC_',
        listen 127.0.0.1:%%PORT_1%% reuseport;
        location = /chat { chat chat; chat_user $arg_user;
                           access_log %%SERVROOT%%/logs/pid.log chatpid; }
_EOC_
        workers => 2,
    );
    my @W = sort { $a <=> $b } $t2->worker_pids;
    my $tag = 0;
    my $on = sub {          # a connection of $user on worker $pid
        my ($user, $pid) = @_;
        for (1 .. 60) {
            $tag++;
            my $ws = $t2->ws(port => $t2->port(1), path => "/chat?user=$user&tag=$tag");
            $ws->recv_json(3);
            my $deadline = Time::HiRes::time() + 3;
            my $got;
            while (!$got && Time::HiRes::time() < $deadline) {
                if (open my $fh, '<', $t2->servroot . '/logs/pid.log') {
                    while (<$fh>) { $got = $1 if /^$tag (\d+)$/ }
                }
                Time::HiRes::sleep(0.02) unless $got;
            }
            return $ws if $got && $got == $pid;
            $ws->close;
        }
        die "no connection on worker $pid";
    };
    my @c = map { $on->("o$_", $W[ $_ % 2 ]) } 0 .. 5;
    for my $ws (@c) {
        $ws->send_json({ type => 'join', room => 'ord' });
        wait_type($ws, 'joined');
    }
    for my $i (0 .. 3) {
        $c[$i]->send_raw(join '', map {
            Test::Chat::WS->build_frame(opcode => 1,
                payload => qq({"type":"send","room":"ord","content":"o$i-$_"}))
        } 1 .. 10);
    }
    my @seqs;
    for my $ws (@c) {
        my @ids;
        my @contents;
        my $deadline = Time::HiRes::time() + 5;
        while (@ids < 40 && Time::HiRes::time() < $deadline) {
            my $f = $ws->recv_json(3) or last;
            next unless $f->{type} eq 'message';
            push @ids, $f->{id};
            push @contents, $f->{content};
        }
        push @seqs, [ \@ids, \@contents ];
    }
    is_deeply([ map { scalar @{ $_->[0] } } @seqs ], [ (40) x 6 ],
              'two workers: each of 6 members got the 40 messages');
    is(scalar(grep { join(',', @{ $_->[0] }) ne join(',', @{ $seqs[0][0] }) } @seqs), 0,
       'two workers: the same order on every connection');
    my %seen;
    $seen{$_}++ for @{ $seqs[0][0] };
    is(scalar keys %seen, 40, 'two workers: 40 distinct ids, none delivered twice');
    my $in_order = 1;
    for my $i (0 .. 3) {
        my @mine = grep { /^o$i-/ } @{ $seqs[0][1] };
        $in_order = 0 unless join(',', @mine) eq join(',', map { "o$i-$_" } 1 .. 10);
    }
    ok($in_order, 'two workers: each sender\'s messages in the order sent');
    $t2->stop;
}

# --- raw sends: the in-place reader and jansson agree -------------------------

{
    my $rs = conn($t, 'rawsender');
    my $rr = conn($t, 'rawreader');
    is(req_next($rs, { type => 'join', room => 'raw' })->{type}, 'joined', 'raw sends: sender joined');
    req_next($rr, { type => 'join', room => 'raw' });
    wait_type($rs, 'presence');
    for my $c (@raw_sends) {
        my ($name, $text, $content, $ref) = @$c;
        $rs->send_text($text);
        my $ack = wait_type($rs, 'ack');
        is($ack && $ack->{ref}, $ref, "raw send ($name): ack with its ref");
        my $m = wait_type($rr, 'message');
        is($m && $m->{content}, $content, "raw send ($name): content delivered");
        is($m && $m->{id}, $ack && $ack->{id}, "raw send ($name): the acked id");
    }
}

{
    my @bad = grep { /\[(?:alert|crit|emerg)\]|exited on signal/ } split /\n/, $t->error_log;
    is(scalar @bad, 0, 'no alerts or crashed workers in error.log') or diag(join "\n", @bad);
}
