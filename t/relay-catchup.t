# What a server gone left unpublished is delivered from storage even when
# the worker that began to read it dies, or the read fails (issue 12).
#
# A server stopped while Redis was down loses its relay queue; what it
# committed (acked) is in PostgreSQL.  Once it is dropped (7 s without a
# word) the relaying worker here reads, per room, the rows after the newest
# it had of that server and delivers them (relay-pending.t).  That read
# lived in one worker's memory: a kill -9 of that worker while PostgreSQL
# was down (the read waits for it) lost it for good, as did a read that
# failed; the chaos soak lost whole bursts so.  Now each room's catch-up
# is kept in the zone until done: the worker that relays next takes it up
# at once, a failed read is made again 15 s later.
#
# A made-up server on Redis (as relay-input.t does) and rows written into
# the table for it, as that server's storage would.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status worker_of);
use Test::Chat::Redis;
use Test::Chat::Pg;
use Test::Chat::Relay qw(room_channel announce publish store_row);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;

plan tests => 14;

my $SID = '00000000feedf00d';
my $TAG = '0000feedf00d';
my $ROOM = 'room';

my $redis = Test::Chat::Redis->start;
my $pg = Test::Chat::Pg->start;

my $t = Test::Chat::Nginx->new(
    http => "chat_zone chat 1m;\n    chat_redis " . $redis->url . ";\n    "
            . $pg->directive,
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
        }
        location = /chat/status {
            chat_status chat;
        }
_EOC_
    workers => 2,
    log_level => 'debug',
);

$pg->wait_up($t, 4);
ok(poll(5, sub { (status($t)->{redis} // '') eq 'up' }), 'relay up');

# the pid of the worker that relays (the last one that said so)
sub relay_owner {
    my ($since) = @_;
    my $pid;
    poll(10, sub {
        my $log = $t->error_log(since => $since);
        while ($log =~ /(\d+)#\d+: \*?\d* ?chat: this worker relays zone/g) {
            $pid = $1;
        }
        return $pid && kill 0, $pid;
    });
    return $pid;
}

my $owner = relay_owner(0);
ok($owner, "the relaying worker: " . ($owner // 'none'));

# m1 on the other worker: it stays when the relaying one is killed
my $m1;
for (1 .. 40) {
    my $ws = $t->ws(path => '/chat?user=m1');
    $ws->recv_json(3);
    my $w = worker_of($t, $ws, $t->worker_pids);
    if (defined $w && $w != $owner) {
        $m1 = $ws;
        last;
    }
    $ws->close;
}
ok($m1, 'm1 on the worker that does not relay');
$m1->send_json({ type => 'join', room => $ROOM });
$m1->recv_until(sub { $_[0]{type} eq 'joined' }, 3);

my $channel = room_channel($redis, $ROOM);

my $T = int(now() * 1000) * 1000;

sub store {
    my ($n) = @_;
    store_row($pg, "$n-$TAG", $ROOM, 'eve', "n$n", 'now()');
}

sub contents_within {
    my ($ws, $secs, $want) = @_;
    my @c;
    my $end = now() + $secs;
    while (now() < $end) {
        my $m = $ws->recv_json(0.5) or next;
        push @c, $m->{content} if $m->{type} eq 'message';
        last if defined $want && @c >= $want;
    }
    while (my $m = $ws->recv_json(1)) {
        push @c, $m->{content} if $m->{type} eq 'message';
    }
    return join ' ', @c;
}

# the made-up server: heard of, one message delivered here
announce($redis, $SID);
store($T + 1000);
publish($redis, $channel, $SID, M => ($T + 1000) . "-$TAG", $ROOM,
        'n' . ($T + 1000));
is(contents_within($m1, 3, 1), 'n' . ($T + 1000), 'm1 gets its first, live');

# two more committed there, never published: it stops (Redis was down)
my $mark = $t->log_mark;
store($T + 2000);
store($T + 3000);

# PostgreSQL goes down before the server is dropped: the catch-up read
# waits for it in the relaying worker
$pg->stop;
ok(poll(15, sub {
       $t->error_log(since => $mark)
           =~ /chat relay: "$ROOM" after \d+-$TAG from storage/
   }), 'the server is dropped; the relaying worker reads what it left');

# ... and is killed meanwhile
ok(kill('KILL', $owner), 'the relaying worker killed');
my $owner2;
poll(10, sub {
    my $o = relay_owner($mark);
    $owner2 = $o if $o && $o != $owner;
    $owner2;
});
ok($owner2, 'another worker relays');

$pg->start_again;

is(contents_within($m1, 25, 2), 'n' . ($T + 2000) . ' n' . ($T + 3000),
   'm1 gets both, once, live (old: never)');

my $c = () = $t->error_log(since => $mark)
    =~ /messages of another server delivered from storage/g;
ok($c >= 1, 'logged');

# --- a server gone while our request after an outage was unanswered ------
#
# our subscriber comes back after a Redis outage and asks the made-up
# server (now another one) for what it missed; what it sent during the
# outage never came, it stores two more that never come either, a live one
# comes after them (closing the gap), and it falls silent without
# answering.  The catch-up reads from the gap's low end (old: from the
# newest it had, the live one: the two were lost)

my $SID2 = '00000000feedf11d';
my $TAG2 = '0000feedf11d';
my $U = int(now() * 1000) * 1000;

sub publish2 {
    my ($n) = @_;
    publish($redis, $channel, $SID2, M => "$n-$TAG2", $ROOM, "u$n",
            user => 'fay');
}

sub store2 {
    my ($n) = @_;
    store_row($pg, "$n-$TAG2", $ROOM, 'fay', "u$n", 'now()');
}

announce($redis, $SID2);
store2($U + 1000);
publish2($U + 1000);
is(contents_within($m1, 3, 1), 'u' . ($U + 1000), 'm1 gets its first, live');

$redis->stop;
ok(poll(10, sub { (status($t)->{redis} // '') eq 'down' }), 'Redis down');
store2($U + 2000);
store2($U + 3000);
$redis->start_again;
ok(poll(15, sub { (status($t)->{redis} // '') eq 'up' }), 'Redis up again');
Time::HiRes::sleep(0.5);
announce($redis, $SID2);
store2($U + 4000);
publish2($U + 4000);
my $got = contents_within($m1, 20, 3);
is($got, join(' ', map { 'u' . ($U + $_) } 4000, 2000, 3000),
   'the live one, then the two lost in the outage once the server is '
   . 'dropped (old: never)');

my @bad = grep { !/exited on signal 9/ }
          $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert but the kill') or diag(join "\n", @bad);

$m1->disconnect;
