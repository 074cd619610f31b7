# The HTTP API for backends (SPEC §11), on one nginx of two workers without
# Redis or PostgreSQL: publish, broadcast, who, history, disconnect, the
# errors (400, 405, 413), and access control by nginx's allow/deny and
# auth_request.  t/api-pg.t and t/api-redis.t do the same with storage and
# with two servers.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP ();
use Test::Chat::Nginx;
use Test::Chat::Util qw(now req client take status);

my $JSON = JSON::PP->new->utf8->canonical;

my $t = Test::Chat::Nginx->new(
    http      => 'chat_zone chat 1m;',
    server    => <<'_EOS_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_max_message_size 1k;
        }
        location = /api {
            chat_api chat;
            chat_max_message_size 1k;
            allow 127.0.0.1;
            deny all;
        }
        location = /api-denied {
            chat_api chat;
            deny 127.0.0.1;
        }
        location = /api-auth {
            auth_request /auth;
            chat_api chat;
        }
        location = /auth {
            internal;
            if ($http_x_secret = "let-me-in") {
                return 204;
            }
            return 401;
        }
        location = /chat/status {
            chat_status chat;
        }
_EOS_
    workers   => 2,
    log_level => 'info',
);

# post($path, $body or {json}, headers => {...}, method => 'POST'):
# { status, json, body }
sub post {
    my ($path, $body, %o) = @_;
    $body = $JSON->encode($body) if ref $body;
    my $m = $o{method} || 'POST';
    my $h = $o{headers} || {};
    my $req = "$m $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            . "Content-Type: application/json\r\n"
            . join('', map { "$_: $h->{$_}\r\n" } sort keys %$h)
            . (defined $body ? "Content-Length: " . length($body) . "\r\n\r\n$body"
                             : "\r\n");
    my $r = $t->http($req, timeout => 5);
    $r->{json} = eval { $JSON->decode($r->{body}) };
    return $r;
}

sub members {
    my ($room, @users) = @_;
    my @c;
    for my $u (@users) {
        my $c = client($t, $u);
        $c->{ws}->send_json({ type => 'join', room => $room });
        take($c, sub { $_[0]{type} eq 'joined' }, 3) or diag("$u: not joined");
        push @c, $c;
    }
    return @c;
}

# --- publish -----------------------------------------------------------------
my @m = members('lobby', 'ann', 'bob', 'cid', 'dan');
take($m[0], sub { $_[0]{type} eq 'presence' && $_[0]{user} eq 'dan' }, 3);

my $in0 = status($t)->{messages_in};
my $r = post('/api', { type => 'publish', room => 'lobby', user => 'bot',
                       content => "hello \x{263a}" });
is($r->{status}, 200, 'publish: 200');
like($r->{json} && $r->{json}{id}, qr/^\d+-[0-9a-f]{12}$/, 'publish: {"id":ID}');
is($r->{headers}{'content-type'}, 'application/json', 'publish: application/json');
my $id = $r->{json} ? $r->{json}{id} : '';

for my $c (@m) {
    my $msg = take($c, sub { $_[0]{type} eq 'message' }, 3);
    ok($msg && $msg->{id} eq $id && $msg->{user} eq 'bot'
       && $msg->{content} eq "hello \x{263a}" && $msg->{room} eq 'lobby',
       "publish: $c->{user} gets the message like a client's send")
        or diag($JSON->encode($msg || {}));
}
is(status($t)->{messages_in}, $in0 + 1, 'publish: counted in messages_in');

# order: a client's send and API publishes interleave in id order
{
    # each send acked before the next publish: one order to expect
    $m[0]{ws}->send_json({ type => 'send', room => 'lobby', content => 'c1' });
    take($m[0], sub { $_[0]{type} eq 'ack' }, 3);
    my $a1 = post('/api', { type => 'publish', room => 'lobby', user => 'bot', content => 'a1' });
    $m[0]{ws}->send_json({ type => 'send', room => 'lobby', content => 'c2' });
    take($m[0], sub { $_[0]{type} eq 'ack' }, 3);
    my $a2 = post('/api', { type => 'publish', room => 'lobby', user => 'bot', content => 'a2' });
    my @got;
    while (@got < 4) {
        my $msg = take($m[3], sub { $_[0]{type} eq 'message' }, 3) or last;
        push @got, $msg->{content};
    }
    is_deeply(\@got, [qw(c1 a1 c2 a2)], 'publish: in order with clients\' sends');
}

# a room nobody is in keeps it as history
{
    my $p = post('/api', { type => 'publish', room => 'empty', user => 'bot', content => 'kept' });
    is($p->{status}, 200, 'publish to a room without members: 200');
    my $h = post('/api', { type => 'history', room => 'empty' });
    ok($h->{json} && @{ $h->{json}{messages} } == 1
       && $h->{json}{messages}[0]{content} eq 'kept'
       && $h->{json}{messages}[0]{id} eq $p->{json}{id},
       'the room keeps it: history has it') or diag($h->{body});
    my $c = client($t, 'late');
    $c->{ws}->send_json({ type => 'join', room => 'empty', history => 10 });
    my $hist = take($c, sub { $_[0]{type} eq 'history' }, 3);
    ok($hist && @{ $hist->{messages} } == 1 && $hist->{messages}[0]{content} eq 'kept',
       'a later join gets it as history');
    $c->{ws}->close;
}

# --- publish with an idempotency key: retries publish nothing new ---------------
{
    my ($k) = members('keyed', 'kim');
    my @r = map { post('/api', { type => 'publish', room => 'keyed', user => 'bot',
                                 content => 'once', key => 'order-42' }) } 1 .. 3;
    ok((grep { $_->{status} == 200 } @r) == 3, 'key: every retry 200');
    my %ids = map { ($_->{json} ? $_->{json}{id} : '') => 1 } @r;
    is(scalar keys %ids, 1, 'key: the same id every time');
    my @got;
    while (my $msg = take($k, sub { $_[0]{type} eq 'message' }, 1)) {
        push @got, $msg;
    }
    is(scalar @got, 1, 'key: one message delivered');
    my $o = post('/api', { type => 'publish', room => 'keyed', user => 'bot',
                           content => 'twice', key => 'order-43' });
    ok($o->{json} && !$ids{ $o->{json}{id} }, 'key: another key, another message');
    my $h = post('/api', { type => 'history', room => 'keyed' });
    is_deeply([ map { $_->{content} } @{ $h->{json}{messages} || [] } ], [qw(once twice)],
              'key: history holds each once');
    my $bad = post('/api', { type => 'publish', room => 'keyed', user => 'bot',
                             content => 'x', key => 42 });
    is($bad->{status}, 400, 'key: not a string: 400');
    $k->{ws}->close;
}

# --- broadcast ---------------------------------------------------------------
{
    my ($x) = members('bx', 'xena');
    my ($y) = members('by', 'yuri');
    my $b = post('/api', { type => 'broadcast', rooms => [ 'bx', 'by' ],
                           user => 'bot', content => 'to all' });
    is($b->{status}, 200, 'broadcast: 200');
    ok($b->{json} && ref $b->{json}{ids} eq 'ARRAY' && @{ $b->{json}{ids} } == 2,
       'broadcast: {"ids":[ID, ID]}') or diag($b->{body});
    my $mx = take($x, sub { $_[0]{type} eq 'message' }, 3);
    my $my = take($y, sub { $_[0]{type} eq 'message' }, 3);
    ok($mx && $my && $mx->{id} eq $b->{json}{ids}[0] && $my->{id} eq $b->{json}{ids}[1]
       && $mx->{room} eq 'bx' && $my->{room} eq 'by',
       'broadcast: one message per room, ids in order');
    $_->{ws}->close for $x, $y;
}

# --- who ---------------------------------------------------------------------
{
    my $w = post('/api', { type => 'who', room => 'lobby' });
    is($w->{status}, 200, 'who: 200');
    is_deeply([ sort @{ $w->{json}{users} || [] } ], [qw(ann bob cid dan)],
              'who: {"users":[...]}') or diag($w->{body});
    $w = post('/api', { type => 'who', room => 'nobody-here' });
    is_deeply($w->{json}, { users => [] }, 'who: an unknown room has no users');
}

# --- history -----------------------------------------------------------------
{
    my $h = post('/api', { type => 'history', room => 'lobby', limit => 3 });
    is($h->{status}, 200, 'history: 200');
    is_deeply([ map { $_->{content} } @{ $h->{json}{messages} || [] } ],
              [qw(a1 c2 a2)], 'history: the newest, oldest first') or diag($h->{body});
    is($h->{json}{complete}, JSON::PP::true, 'history: complete');
    is_deeply([ sort keys %{ $h->{json} || {} } ], [qw(complete messages)],
              'history: {"messages":[...],"complete":B} only');
    my $before = $h->{json}{messages}[0]{id};
    $h = post('/api', { type => 'history', room => 'lobby', limit => 10, before => $before });
    is_deeply([ map { $_->{content} } @{ $h->{json}{messages} || [] } ],
              [ "hello \x{263a}", 'c1' ], 'history: before an id') or diag($h->{body});
}

# --- disconnect --------------------------------------------------------------
{
    my @d = map { client($t, 'dora') } 1 .. 3;
    my $other = client($t, 'other');
    my $mark = $t->log_mark;
    my $r = post('/api', { type => 'disconnect', user => 'dora' });
    is($r->{status}, 200, 'disconnect: 200');
    is_deeply($r->{json}, { closed => 3 }, 'disconnect: {"closed":3}');
    for my $i (0 .. 2) {
        my ($code, $eof, $reason) = $d[$i]{ws}->expect_close(timeout => 3);
        ok($code && $code == 1008 && $reason eq 'disconnected' && $eof,
           "disconnect: connection $i closed with 1008 \"disconnected\"")
            or diag(($code // 'none') . ' ' . ($reason // ''));
    }
    $other->{ws}->send_json({ type => 'join', room => 'o' });
    ok(take($other, sub { $_[0]{type} eq 'joined' }, 3), 'another user stays connected');
    my @w = map { /(\d+)#/ ? $1 : () }
            grep { /disconnected by the API/ } split /\n/, $t->error_log(since => $mark);
    my %w = map { $_ => 1 } @w;
    ok(scalar(keys %w) >= 1, 'closed in the workers that held them (' . scalar(keys %w) . ')');
    $r = post('/api', { type => 'disconnect', user => 'dora' });
    is_deeply($r->{json}, { closed => 0 }, 'disconnect again: {"closed":0}');
    $other->{ws}->close;
}

# --- errors ------------------------------------------------------------------
{
    my $r = post('/api', undef, method => 'GET');
    is($r->{status}, 405, 'GET: 405');
    $r = post('/api', '{"type":"who","room":"lobby"}', method => 'PUT');
    is($r->{status}, 405, 'PUT: 405');

    my @bad = (
        [ 'not json', 'garbage' ],
        [ 'an array', '[1,2]' ],
        [ 'no type', { room => 'x' } ],
        [ 'unknown type', { type => 'shout', room => 'x' } ],
        [ 'publish without room', { type => 'publish', user => 'u', content => 'c' } ],
        [ 'publish with an empty room', { type => 'publish', room => '', user => 'u', content => 'c' } ],
        [ 'publish with a room of 129 bytes', { type => 'publish', room => 'r' x 129, user => 'u', content => 'c' } ],
        [ 'publish without user', { type => 'publish', room => 'r', content => 'c' } ],
        [ 'publish with a user of 257 bytes', { type => 'publish', room => 'r', user => 'u' x 257, content => 'c' } ],
        [ 'publish with content a number', { type => 'publish', room => 'r', user => 'u', content => 5 } ],
        [ 'a U+0000 in content', '{"type":"publish","room":"r","user":"u","content":"a\u0000b"}' ],
        [ 'duplicate members', '{"type":"publish","room":"r","room":"s","user":"u","content":"c"}' ],
        [ 'broadcast without rooms', { type => 'broadcast', user => 'u', content => 'c' } ],
        [ 'broadcast with a number in rooms', { type => 'broadcast', rooms => [ 'a', 1 ], user => 'u', content => 'c' } ],
        [ 'history with a negative limit', { type => 'history', room => 'r', limit => -1 } ],
        [ 'who without room', { type => 'who' } ],
        [ 'disconnect without user', { type => 'disconnect' } ],
    );
    for my $b (@bad) {
        my $r = post('/api', $b->[1]);
        ok($r->{status} == 400 && $r->{json} && $r->{json}{error} eq 'bad_request'
           && length $r->{json}{message},
           "$b->[0]: 400 bad_request with a message") or diag("$r->{status} $r->{body}");
    }

    my $r2 = post('/api', { type => 'publish', room => 'r', user => 'u', content => 'x' x 1025 });
    ok($r2->{status} == 413 && $r2->{json} && $r2->{json}{error},
       'content past chat_max_message_size: 413') or diag("$r2->{status} $r2->{body}");
    $r2 = post('/api', { type => 'publish', room => 'r', user => 'u', content => 'x' x 1024 });
    is($r2->{status}, 200, 'content of exactly chat_max_message_size: 200');
    $r2 = post('/api', '{"type":"who","room":"r","pad":"' . ('y' x 80000) . '"}');
    is($r2->{status}, 413, 'a body past the envelope: 413');

    my $msgs = 0;
    my $w = status($t)->{messages_in};
    post('/api', { type => 'publish', room => 'r', user => 'u', content => 5 });
    is(status($t)->{messages_in}, $w, 'a refused publish publishes nothing');
}

# --- access control is nginx's --------------------------------------------------
{
    my $r = post('/api-denied', { type => 'publish', room => 'lobby', user => 'x', content => 'no' });
    is($r->{status}, 403, 'deny: 403 before the API');
    $r = post('/api-auth', { type => 'who', room => 'lobby' });
    is($r->{status}, 401, 'auth_request refusing: 401');
    $r = post('/api-auth', { type => 'who', room => 'lobby' },
              headers => { 'X-Secret' => 'let-me-in' });
    is($r->{status}, 200, 'auth_request allowing: 200');
    my $msg = take($m[0], sub { $_[0]{type} eq 'message' && $_[0]{content} eq 'no' }, 1);
    ok(!$msg, 'the denied publish reached nobody');
}

$_->{ws}->close for @m;

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
is(scalar @bad, 0, 'no [alert], [crit] or [emerg] in error.log')
    or diag(join "\n", @bad);

undef $t;

done_testing();
