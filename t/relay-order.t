# A history reply from storage gives what the zone's ring holds in the
# order it came here (SPEC §3: one order for all members of one server),
# not in the ids' order (issue 12).  Ids of different servers are ordered
# by their clocks: another server's message that came late (its relay held
# it, or a republish) is after what it came after, for a member who joins
# with history (storage and the ring, merged) as for those who had it live
# and for the ring's own answer.  The chaos soak counted members so out of
# order.
#
# A made-up server "e" publishes on the room's channel and writes its rows
# as a server would (relay-window.t, relay-promise.t).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status);
use Test::Chat::Redis;
use Test::Chat::Pg;
use Test::Chat::Relay qw(member live history_of contents room_channel
                         announce publish store_row);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;

plan tests => 11;

my $redis = Test::Chat::Redis->start;
my $pg = Test::Chat::Pg->start;

my $t = Test::Chat::Nginx->new(
    http => "chat_zone chat 1m;\n    chat_redis " . $redis->url . ";\n    "
            . $pg->directive,
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 5;
        }
        location = /chat/status {
            chat_status chat;
        }
_EOC_
    workers => 1,
);
$pg->wait_up($t, 2);

ok(poll(10, sub { (status($t)->{redis} // '') eq 'up' }), 'relay up');

my $SID = '00000000e0e0e0e0';
my $TAG = '0000e0e0e0e0';

my $alice = member($t, 'alice', 'r');
my $channel = room_channel($redis, 'r');
announce($redis, $SID);
Time::HiRes::sleep(0.2);

# e's message n, stored there and published live here
sub message {
    my ($n, $content) = @_;
    store_row($pg, "$n-$TAG", 'r', 'eve', $content);
    publish($redis, $channel, $SID, M => "$n-$TAG", 'r', $content);
}

# alice's a0, then e's x2, then e's x1, numbered before x2, late
$alice->send_json({ type => 'send', room => 'r', content => 'a0' });
$alice->recv_until(sub { $_[0]{type} eq 'ack' }, 5);
my $e = int(now() * 1000) * 1000;
message($e + 2000, 'x2');
Time::HiRes::sleep(0.1);
message($e + 1000, 'x1');
is(live($alice), 'x2 x1', 'alice: x2 x1, as they came');

# history 10: more than the ring holds, storage answers with the ring
# merged (old: "a0 x1 x2")
my $bob = member($t, 'bob', 'r', history => 10);
is(contents(history_of($bob)), 'a0 x2 x1',
   'bob (history 10, from storage): a0 x2 x1');

# history 3: the ring's own answer
my $carol = member($t, 'carol', 'r', history => 3);
is(contents(history_of($carol)), 'a0 x2 x1',
   'carol (history 3, the ring): a0 x2 x1');

# a row storage alone has (before a0, never here) keeps its id's place
my $old = (int(now() * 1000) - 30_000) * 1000;
store_row($pg, "$old-0000cafecafe", 'r', 'zed', 'z0');
my $dan = member($t, 'dan', 'r', history => 10);
is(contents(history_of($dan)), 'z0 a0 x2 x1', 'dan: z0 (storage) a0 x2 x1');

# the next live one after, to all alike
$alice->send_json({ type => 'send', room => 'r', content => 'a1' });
is(live($bob) . ' / ' . live($dan), 'a1 / a1', 'then a1 live');

# --- "since" is after the id in this server's order, not the ids' ---------
#
# a resume since s1, which the ring holds before a hole (the room was not
# followed for a moment), is answered from storage merged with the ring:
# l, numbered before s1 (its sender's clock) but come here after it, is
# after s1 for the member (old: left out, as numbered before it; the soak
# lost it so, after a worker's kill -9, until a restart's overlap brought
# it back)

my $a2 = member($t, 'alice', 'o');
Time::HiRes::sleep(0.05);      # s1 numbered after the follow: ours
$a2->send_json({ type => 'send', room => 'o', content => 's1' });
my $ack = $a2->recv_until(sub { $_[0]{type} eq 'ack' }, 5);
my $s1 = $ack ? $ack->{id} : '';
$a2->disconnect;
ok(poll(12, sub { !grep { length } $redis->cli('PUBSUB', 'CHANNELS',
                                               '*:r:o') }),
   'the relay left room o');

my $b2 = member($t, 'bob', 'o');
my $ochan = room_channel($redis, 'o');

my ($s1n) = $s1 =~ /^(\d+)-/;
my $l = ($s1n - 1000) . "-$TAG";
store_row($pg, $l, 'o', 'eve', 'l');
publish($redis, $ochan, $SID, M => $l, 'o', 'l');
is(live($b2), 'l', 'bob: l live, after s1 here');

my $c2 = member($t, 'carol', 'o', since => $s1);
my $h = history_of($c2);
is(contents($h), 'l', 'carol since s1: l (old: nothing)');
ok($h && $h->{complete}, '... complete');
$_->disconnect for $b2, $c2;

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);

$_->disconnect for $alice, $bob, $carol, $dan;
