# Tracing: with error_log at "debug" (Debian's nginx is built --with-debug),
# every hop of a join and a send leaves a line with a stable prefix: the
# connection layer ("chat ws"), the protocol ("chat proto"), the zone
# ("chat zone"), its bus ("chat bus"), the fan-out ("chat fanout") and,
# with chat_redis, the relay ("chat relay").

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Redis;
use Time::HiRes ();

my $have_redis = -x '/usr/bin/redis-server' && Test::Chat::Redis->available;

plan tests => 15;

my $redis = $have_redis ? Test::Chat::Redis->start : undef;
my $http = 'chat_zone chat 1m;';
$http .= "\n    chat_redis " . $redis->url . ';' if $redis;

my $t = Test::Chat::Nginx->new(
    http => $http,
    log_level => 'debug',
    workers => 2,
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
        }
_EOC_
);

sub client {
    my ($user) = @_;
    my $ws = $t->ws(path => "/chat?user=$user");
    return undef unless $ws->ok;
    my $w = $ws->recv_json(3);
    return undef unless $w && $w->{type} eq 'welcome';
    $ws->send_json({ type => 'join', room => 'lobby' });
    for (1 .. 5) {
        my $m = $ws->recv_json(3) or last;
        return $ws if $m->{type} eq 'joined';
    }
    return undef;
}

my $mark = $t->log_mark;

my $alice = client('alice');
my $bob = client('bob');
ok($alice && $bob, 'alice and bob joined');

$alice->send_json({ type => 'send', room => 'lobby', content => 'hi',
                    ref => 'r1' });

my $got;
for (1 .. 10) {
    my $m = $bob->recv_json(3) or last;
    if ($m->{type} eq 'message') { $got = $m; last }
}
ok($got && $got->{content} eq 'hi', 'bob got the message');

# the relay publishes within its next event loop turn; give the log a moment
Time::HiRes::sleep(0.5);

my $log = $t->error_log(since => $mark);

sub traced {
    my ($re, $name) = @_;
    like($log, $re, $name);
}

traced(qr/\[debug\].*chat ws: upgrade for "alice"/, 'chat ws: the upgrade');
traced(qr/\[debug\].*chat proto: session of "alice" on zone "chat"/,
       'chat proto: the session');
traced(qr/\[debug\].*chat ws: text message of \d+ bytes/,
       'chat ws: a text message up');
traced(qr/\[debug\].*chat proto: "join" request for "lobby"/,
       'chat proto: the join request');
traced(qr/\[debug\].*chat zone: "bob" joined "lobby", 2 members, first 1/,
       'chat zone: the join, with its members');
traced(qr/\[debug\].*chat fanout: member of "lobby"/,
       'chat fanout: the local member');
traced(qr/\[debug\].*chat proto: "send" request for "lobby"/,
       'chat proto: the send request');
traced(qr/\[debug\].*chat zone: "alice" posted \d+\S* in "lobby"/,
       'chat zone: the post, with its id');
traced(qr/\[debug\].*chat bus: read \d+ bytes at \d+, lost 0/,
       'chat bus: a read');
traced(qr/\[debug\].*chat fanout: \d+ entries of "chat" to deliver/,
       'chat fanout: the delivery');

SKIP: {
    skip 'no redis-server', 2 unless $redis;

    traced(qr/\[debug\].*chat relay: SUBSCRIBE chat:0:chat:r:lobby/,
           'chat relay: the room subscribed');
    traced(qr/\[debug\].*chat relay: PUBLISH chat:0:chat:r:lobby/,
           'chat relay: the message published');
}

$alice->send_json({ type => 'leave', room => 'lobby' });
$alice->recv_json(3) for 1 .. 2;
Time::HiRes::sleep(0.2);

like($t->error_log(since => $mark), qr/\[debug\].*chat zone: "alice" left "lobby"/,
     'chat zone: the leave');
