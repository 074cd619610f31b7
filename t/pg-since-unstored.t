# A resume whose `since` storage does not have (issue 12): storage answers
# by the time in the id's number ("<ms * 1000 + n>-<tag>") instead of with
# nothing.
#
# - An id in the ring but not committed yet (its row comes later), or
#   never (delivered live, its sender's worker killed before the commit):
#   the zone knows it, so the reply, storage's rows after it and the ring,
#   is complete (old: "complete": false and only the ring, so the soak's
#   client filled in with a history request and saw what it missed out of
#   place).
# - An id nobody here knows: "complete": false as before (SPEC §3), but
#   with what storage has after its time, not the ring alone (old: the
#   rows between it and the ring were left out).

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
use Test::Chat::Relay qw(member history_of contents room_channel publish
                         store_row);

plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;
plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;

plan tests => 10;

my $pg = Test::Chat::Pg->start;
my $redis = Test::Chat::Redis->start;

my $server = <<'_EOC_';
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 5;
        }
        location = /chat/status {
            chat_status chat;
        }
_EOC_

sub reply {
    my $h = history_of($_[0]) or return;
    return (contents($h), $h->{complete});
}

# --- one server, no Redis: an id nobody knows ---------------------------------

my $t = Test::Chat::Nginx->new(http => "chat_zone chat 1m;\n    "
                                       . $pg->directive,
                               server => $server, workers => 1);
$pg->wait_up($t, 2);

my $alice = member($t, 'alice', 'r');
my @ids;
for my $n (1 .. 8) {
    $alice->send_json({ type => 'send', room => 'r', content => "m$n" });
    my $ack = $alice->recv_until(sub { $_[0]{type} eq 'ack' }, 5);
    push @ids, $ack ? $ack->{id} : '';
    Time::HiRes::sleep(0.02);
}
ok(!grep({ !length } @ids), 'eight messages acked');

# numbered between m2 and m3, never sent: the ring holds m4 .. m8
my ($n2) = $ids[1] =~ /^(\d+)-/;
my ($n3) = $ids[2] =~ /^(\d+)-/;
my $never = int(($n2 + $n3) / 2) . '-000000000000';
my ($c, $complete) = reply(member($t, 'bob', 'r', since => $never));
is($c, 'm3 m4 m5 m6 m7 m8',
   'since an id never stored, older than the ring: what storage has after '
   . 'its time (old: m4 .. m8, m3 left out)');
ok(!$complete, '... not complete: the id is not known');

($c, $complete) = reply(member($t, 'carol', 'r', since => $ids[1]));
is("$c " . ($complete ? 'complete' : 'incomplete'),
   'm3 m4 m5 m6 m7 m8 complete', 'since m2 (stored): as before');

$t->stop;

# --- with Redis: an id the ring has, not stored -------------------------------

my $b = Test::Chat::Nginx->new(
    http => "chat_zone chat 1m;\n    chat_redis " . $redis->url . ";\n    "
            . $pg->directive,
    server => $server, workers => 1);
$pg->wait_up($b, 2);
ok(poll(10, sub { (status($b)->{redis} // '') eq 'up' }), 'relay up');

my $SID = '00000000e0e0e0e0';
my $TAG = '0000e0e0e0e0';

my $dan = member($b, 'dan', 'q');
my $channel = room_channel($redis, 'q');

# x: delivered live, never stored (its sender's worker died first);
# numbered before dan's join (its sender's clock), as is y below: what
# comes after x is history here, not promised live
my $x = (int(now() * 1000) - 5000) * 1000 . "-$TAG";
publish($redis, $channel, $SID, M => $x, 'q', 'x');
my $m = $dan->recv_until(sub { $_[0]{type} eq 'message' }, 3);
is($m && $m->{content}, 'x', 'dan: x live');

# dan goes; the room is not followed once the relay unsubscribes (5 s)
$dan->disconnect;
ok(poll(12, sub { !grep { length } $redis->cli('PUBSUB', 'CHANNELS',
                                               '*:r:q') }),
   'the relay left the room');

# meanwhile e stored y, numbered after x (nobody here to hear it)
my ($xn) = $x =~ /^(\d+)-/;
store_row($pg, ($xn + 1000) . "-$TAG", 'q', 'eve', 'y');

# dan resumes since x: in the ring, before the hole, so storage answers
($c, $complete) = reply(member($b, 'dan', 'q', since => $x));
is($c, 'y', 'since x (in the ring, not stored): y from storage (old: '
            . 'nothing)');
ok($complete, '... complete: the ring knows x (old: not complete)');

my @bad = $b->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);
