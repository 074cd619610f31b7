# The relay delivers each message once, and republishes little (SPEC §5
# "at most once per connection", SPEC §8 "cannot make servers republish
# their history more than once per room per few seconds"; issue 12).
#
# Two servers (one worker each) on one private redis-server: A keeps 50
# messages per room, B only 5 (chat_history).
#
# 1. After Redis restarts, each server's subscriber comes back and the
#    servers ask each other for what they missed.  A message B's member
#    already had must not come again, also when B's ring no longer holds
#    it (the old code dropped only ids still in the receiver's ring: 15 of
#    A's 20 messages came twice).
# 2. A member joining and leaving a room on B 50 times (B follows the room
#    again at each join) must not make A publish its history of the room
#    each time: the old code republished A's 20 messages per join (over
#    1,000 PUBLISH, each delivered again to the member joining).
# 3. The sync request carries what the requester has: a server that did
#    miss messages (its subscriber was away) gets exactly those, once.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();
use JSON::PP ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status client send_json take join_room
                        settle extract collect send_msg ack_id);
use Test::Chat::Redis;

plan skip_all => 'no redis-server'
    unless Test::Chat::Redis->available;

plan tests => 25;

my $ZONE = 'chat';

sub server_conf {
    my ($url, $history) = @_;
    return (
        http => "chat_zone $ZONE 4m;\n    chat_redis $url;",
        server => <<"_EOC_",
        location = /chat {
            chat $ZONE;
            chat_user \$arg_user;
            chat_history $history;
            chat_request_rate off;
        }
        location = /chat/status {
            chat_status $ZONE;
        }
_EOC_
        workers => 1,
    );
}

sub redis_up {
    my ($t, $timeout) = @_;
    return poll($timeout // 10, sub { (status($t)->{redis} // '') eq 'up' },
                0.05);
}

sub publishes {
    my $redis = shift;
    my @info = $redis->cli('INFO', 'commandstats');
    for (@info) {
        return $1 if /^cmdstat_publish:calls=(\d+)/;
    }
    return 0;
}

sub numsub {
    my ($redis, $ch) = @_;
    my @r = $redis->cli('PUBSUB', 'NUMSUB', $ch);
    return $r[1] // 0;
}

my $is_msg = sub { $_[0]{type} eq 'message' };

# the ids of message frames seen twice by a client (all it ever received)
sub twice {
    my $c = shift;
    my %n;
    $n{ $_->{id} }++ for grep { $_->{type} eq 'message' } @{ $c->{all} };
    return grep { $n{$_} > 1 } sort keys %n;
}

my $redis = Test::Chat::Redis->start;

my $A = Test::Chat::Nginx->new(server_conf($redis->url, 50));
my $B = Test::Chat::Nginx->new(server_conf($redis->url, 5));

ok(redis_up($A) && redis_up($B), 'both servers: relay up');

my $a1 = client($A, 'a1');
my $b1 = client($B, 'b1');

ok(join_room($a1, 'r') && join_room($b1, 'r'), 'a1 (A) and b1 (B) joined r');
ok(poll(5, sub { numsub($redis, "chat:0:$ZONE:r:r") == 2 }),
   'both servers subscribed to r');

# --- 1. no copies after Redis restarts ---------------------------------------

my @ids;
for my $i (0 .. 19) {
    push @ids, ack_id(send_msg($a1, 'r', "m$i", "m$i"));
}
is(scalar(grep { defined } @ids), 20, 'a1 sent 20 messages, all acked');

my @got = collect($b1, $is_msg, 20, 5);
is(join(' ', map { $_->{id} } @got), join(' ', map { $_ // '' } @ids),
   'b1 on B got the 20 messages, in order');

ok($redis->kill('KILL'), 'redis-server killed');
ok(poll(5, sub { (status($A)->{redis} // '') eq 'down' }), 'A: redis down');
ok($redis->start_again, 'redis-server started again');
ok(redis_up($A, 15) && redis_up($B, 15), 'both servers: relay up again');
ok(poll(5, sub { numsub($redis, "chat:0:$ZONE:r:r") == 2 }),
   'both servers subscribed to r again');

# what a republish would bring comes within a second or two; wait beyond
# the 3 s a room's sync answers may be deferred
settle(4, $b1, $a1);
my @again = twice($b1);
is(scalar(@again), 0, 'b1 got none of the 20 messages a second time')
    or diag(scalar(@again) . " delivered twice: @again[0 .. ($#again > 4 ? 4 : $#again)]");
is(scalar(twice($a1)), 0, 'a1 got nothing twice');

# a copy of a1's first message, as a server would publish it again (its
# id is older than everything else B had of A): dropped, counted
{
    my $m = $got[0] || {};
    my ($tag) = ($m->{id} // '') =~ /-([0-9a-f]{12})$/;
    my $json = JSON::PP->new->canonical->encode({ map { $_ => $m->{$_} }
                                                  qw(type room id user content ts) });
    my $n = ($redis->cli('PUBLISH', "chat:0:$ZONE:r:r",
                         "0000$tag M $m->{id} $json"))[0] // 0;
    ok($tag && $n >= 1, 'a copy of m0 published again on the room channel');
    settle(1, $b1);
    is(scalar(twice($b1)), 0, 'b1 did not get it again');
    cmp_ok(status($B)->{relay_duplicates} // -1, '>', 0,
           'B counted the copy (relay_duplicates in status)');
}

my $after = ack_id(send_msg($a1, 'r', 'after', 'after'));
my @a = collect($b1, sub { $_[0]{type} eq 'message' && $_[0]{content} eq 'after' }, 1, 5);
is(scalar(@a), 1, 'a message after the restart reaches b1');
settle(0.5, $b1);
is(scalar(twice($b1)), 0, '... once');

# --- 2. joins and leaves do not make A republish ------------------------------

my $a2 = client($A, 'a2');
ok(join_room($a2, 'churn'), 'a2 joined churn on A');
my $sent = 0;
for my $i (0 .. 19) {
    $sent++ if ack_id(send_msg($a2, 'churn', "c$i", "c$i"));
}
is($sent, 20, 'a2 sent 20 messages to churn');

my $b2 = client($B, 'b2');
my $before = publishes($redis);
my $pairs = 0;
for my $i (1 .. 50) {
    join_room($b2, 'churn') or last;
    send_json($b2, type => 'leave', room => 'churn');
    take($b2, sub { $_[0]{type} eq 'left' }, 3) or last;
    $pairs++;
}
is($pairs, 50, 'b2 joined and left churn on B 50 times');
settle(4, $b2);
my $n = publishes($redis) - $before;

# each pair: B's J, S, L (3); A answers with presence at most once per 3 s;
# and, still within the servers' first seconds, room r's startup requests
# and answers (a subscription made before every server was known is asked
# again once they are: relay-fresh.t; A republishes r's ring, 20, once)
cmp_ok($n, '<=', 3 * 50 + 45,
       "PUBLISH calls for 50 join/leave pairs: $n (no history republished)");
my @old = grep { $_->{type} eq 'message' } @{ $b2->{all} };
is(scalar(@old), 0, 'b2 got no message of churn sent before it joined')
    or diag(scalar(@old) . ' old messages delivered again');

# --- 3. a server that missed messages gets them, once -------------------------

# B's subscriber connection is killed (its publisher stays): what A sends
# then never reaches B; B subscribes again and asks for it
my @clients = $redis->cli('CLIENT', 'LIST');
my $killed = 0;
for (@clients) {
    next unless /\bsub=(\d+)/ && $1 > 0;
    # one of the two subscribers: B's is the one with the later id (B
    # started second), but any will do for B if it is B's; kill both: A
    # and B each ask the other
    my ($id) = /\bid=(\d+)/;
    $killed += ($redis->cli('CLIENT', 'KILL', 'ID', $id))[0] // 0;
}
ok($killed >= 1, "subscriber connections killed: $killed");

my @during;
for my $i (0 .. 4) {
    push @during, ack_id(send_msg($a1, 'r', "d$i", "d$i"));
}
ok(poll(10, sub { numsub($redis, "chat:0:$ZONE:r:r") == 2 }),
   'both subscribed to r again');
my @d = collect($b1, sub { $_[0]{type} eq 'message' && $_[0]{content} =~ /^d\d$/ }, 5, 8);
settle(4, $b1);
push @d, extract($b1, sub { $_[0]{type} eq 'message' && $_[0]{content} =~ /^d\d$/ });
my %dn;
$dn{ $_->{content} }++ for @d;
is(join(' ', map { "$_:" . ($dn{$_} // 0) } map { "d$_" } 0 .. 4),
   join(' ', map { "d$_:1" } 0 .. 4),
   'b1 got each message sent while its server was not subscribed, once');
