# The relay keeps what it has to publish until Redis has taken it, across
# a reload and across the relaying worker's death (SPEC §5: an acked
# message is never lost, relay resumes when Redis is back; issue 12).
#
# Server A (2 workers) and server B (1 worker) on one private redis-server;
# a1 on A and b1 on B in room "h".
#
# 1. Redis is down; a1 sends 5 messages (acked, delivered on A); A is
#    reloaded: its relaying worker shuts down.  It hands its queue over to
#    a new worker through the zone at once; when Redis is back, b1 gets
#    the 5 messages, once each.  (The old code dropped the queue with the
#    worker, or kept it in a worker that never reconnects while shutting
#    down and that no other worker could take the relay from.)
# 2. Redis is down; a1 sends 5 more; the relaying worker is killed with
#    SIGKILL.  The zone knows the oldest bus entry Redis had not taken: the
#    worker that takes the relay over reads the bus again from there, and
#    b1 gets the 5 messages once Redis is back.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status client send_json take join_room
                        settle extract collect send_msg ack_id conn);
use Test::Chat::Redis;

plan skip_all => 'no redis-server'
    unless Test::Chat::Redis->available;

plan tests => 33;

my $ZONE = 'chat';

sub server_conf {
    my ($url, $workers) = @_;
    return (
        http => "chat_zone $ZONE 4m;\n    chat_redis $url;\n"
                . "    log_format chatpid '\$arg_tag \$pid';",
        server => <<"_EOC_",
        listen 127.0.0.1:%%PORT_1%% reuseport;
        location = /chat {
            chat $ZONE;
            chat_user \$arg_user;
            access_log %%SERVROOT%%/logs/pid.log chatpid;
        }
        location = /chat/status {
            chat_status $ZONE;
        }
_EOC_
        workers => $workers,
    );
}

sub redis_is {
    my ($t, $want, $timeout) = @_;
    return poll($timeout // 10,
                sub { (status($t)->{redis} // '') eq $want }, 0.05);
}

# the pid of the worker that relays (the last one that said so)
sub relay_owner {
    my ($t, $since) = @_;
    my $pid;
    my $deadline = now() + 5;
    while (now() < $deadline) {
        my $log = $t->error_log(since => $since);
        while ($log =~ /(\d+)#\d+: \*?\d* ?chat: this worker relays zone/g) {
            $pid = $1;
        }
        return $pid if $pid && kill 0, $pid;
        Time::HiRes::sleep(0.05);
    }
    return $pid;
}

sub contents {
    my ($c, $re, $n, $timeout) = @_;
    my @m = collect($c, sub { $_[0]{type} eq 'message' && $_[0]{content} =~ $re },
                    $n, $timeout);
    settle(1, $c);
    push @m, extract($c, sub { $_[0]{type} eq 'message' && $_[0]{content} =~ $re });
    return join ' ', map { $_->{content} } @m;
}

my $redis = Test::Chat::Redis->start;

my $A = Test::Chat::Nginx->new(server_conf($redis->url, 2));
my $B = Test::Chat::Nginx->new(server_conf($redis->url, 1));

ok(redis_is($A, 'up') && redis_is($B, 'up'), 'both servers: relay up');

my $owner = relay_owner($A, 0);
ok($owner, "A's relaying worker: " . ($owner // 'none'));

# a1 on the relaying worker: after the reload it keeps that worker alive
my $a1 = { user => 'a1', name => 'a1', inbox => [], all => [] };
$a1->{ws} = eval { conn($A, 'a1', pid => $owner) };
ok($a1->{ws}, 'a1 connected to the relaying worker') or diag($@);
my $b1 = client($B, 'b1');

ok(join_room($a1, 'h') && join_room($b1, 'h'), 'a1 (A) and b1 (B) joined h');
ok(poll(5, sub { my @r = $redis->cli('PUBSUB', 'NUMSUB', "chat:0:$ZONE:r:h"); ($r[1] // 0) == 2 }),
   'both servers subscribed to h');
ok(ack_id(send_msg($a1, 'h', 'pre', 'pre')), 'a1 sent "pre"');
is(contents($b1, qr/^pre$/, 1, 5), 'pre', 'b1 got it through Redis');

# --- 1. reload while Redis is down -------------------------------------------

ok($redis->kill('KILL'), 'redis-server killed');
ok(redis_is($A, 'down', 5), 'A: redis down');

my $acked = 0;
for my $i (0 .. 4) {
    $acked++ if ack_id(send_msg($a1, 'h', "r$i", "r$i"));
}
is($acked, 5, 'a1 sent 5 messages while Redis is down, all acked');

my $mark = $A->log_mark;
ok($A->reload, 'A reloaded') or diag($A->reload_error);
ok(kill(0, $owner), 'the old relaying worker is still there (a1 keeps it)');

ok($redis->start_again, 'redis-server started again');
ok(redis_is($A, 'up', 15), 'A: relay up again (a new worker relays)');
is(contents($b1, qr/^r\d$/, 5, 10), 'r0 r1 r2 r3 r4',
   'b1 got the 5 messages sent before the reload, once each, in order');

ok(ack_id(send_msg($a1, 'h', 'post', 'post')), 'a1 (old worker) sent "post"');
is(contents($b1, qr/^post$/, 1, 5), 'post', 'b1 got it');

# --- 2. the relaying worker killed while Redis is down ------------------------

my $owner2 = relay_owner($A, $mark);
ok($owner2 && $owner2 != $owner, "the new relaying worker: " . ($owner2 // 'none'));

ok($redis->kill('KILL'), 'redis-server killed again');
ok(redis_is($A, 'down', 5), 'A: redis down');
$acked = 0;
for my $i (0 .. 4) {
    $acked++ if ack_id(send_msg($a1, 'h', "k$i", "k$i"));
}
is($acked, 5, 'a1 sent 5 more, all acked');
ok($owner2 && kill('KILL', $owner2), 'the relaying worker killed with SIGKILL');

ok($redis->start_again, 'redis-server started again');
is(contents($b1, qr/^k\d$/, 5, 15), 'k0 k1 k2 k3 k4',
   'b1 got the 5 messages the killed worker had not published, once each');

# --- 3. the relaying worker killed with all of a room's members here -------
#
# b1 sends while A has no relaying worker (killed, respawned, taking the
# relay over, subscribing again); c1, A's only member of the room, was on
# the killed worker and comes back with "since": what B sent meanwhile
# reaches it once, or (no PostgreSQL here, and A did not follow a room
# without members) its history reply says complete:false, never true with
# something missing.

my $owner3 = relay_owner($A, 0);
my $c1 = { user => 'c1', name => 'c1', inbox => [], all => [] };
$c1->{ws} = eval { conn($A, 'c1', pid => $owner3) };
ok($c1->{ws} && join_room($c1, 'k'), "c1 on the relaying worker $owner3, in k");
ok(join_room($b1, 'k'), 'b1 joined k');
ok(poll(5, sub { my @r = $redis->cli('PUBSUB', 'NUMSUB', "chat:0:$ZONE:r:k"); ($r[1] // 0) == 2 }),
   'both servers subscribed to k');
ok(ack_id(send_msg($b1, 'k', 'k-pre', 'k-pre')), 'b1 sent "k-pre"');
my @pre = collect($c1, sub { $_[0]{type} eq 'message' && $_[0]{content} eq 'k-pre' }, 1, 5);
ok(@pre, 'c1 got it');
my $since = $pre[0] ? $pre[0]{id} : '';

ok(kill('KILL', $owner3), 'the relaying worker killed');
my @k;
for my $i (0 .. 2) {
    push @k, ack_id(send_msg($b1, 'k', "kg$i", "kg$i"));
}
is(scalar(grep { defined } @k), 3, 'b1 sent 3 messages meanwhile');

my $c2 = client($A, 'c1', name => 'c1 again');
ok(join_room($c2, 'k', since => $since), 'c1 back, joined k with since');
my $h = take($c2, sub { $_[0]{type} eq 'history' }, 5);
my @got = map { $_->{content} } @{ $h ? $h->{messages} : [] };
push @got, map { $_->{content} } collect($c2, sub { $_[0]{type} eq 'message' && $_[0]{content} =~ /^kg/ }, 3 - @got, 8);
settle(1, $c2);
push @got, map { $_->{content} } extract($c2, sub { $_[0]{type} eq 'message' && $_[0]{content} =~ /^kg/ });
# the room had no member on A while its relay was gone: A did not follow
# it, so without PostgreSQL its ring cannot know what B sent then; the
# reply must say so (complete:false), or have it all
my $ok = join(' ', @got) eq 'kg0 kg1 kg2'
         || ($h && !$h->{complete} && !grep { $_ !~ /^kg\d$/ } @got);
my %n;
$n{$_}++ for @got;
ok($ok && !(grep { $_ > 1 } values %n),
   'c1 got what b1 sent while A had no relay, or a reply that says it may not have')
    or diag('got [' . join(' ', @got) . '], complete: '
            . ($h ? ($h->{complete} ? 'true' : 'false') : 'none'));
