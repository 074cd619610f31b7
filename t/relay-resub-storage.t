# What another server published while our subscriber was away comes from
# storage when no republish brings it (issue 12).
#
# Redis keeps nothing for a subscriber that is away: a server whose
# subscriber reconnects asks the others to publish again what it may have
# missed ("S +"), and takes their republishes inside the gap.  When that
# answer does not come whole (the other server's relay itself was down,
# its answer crossed our relaying worker's change, a reload), the gap was
# given up at the next resubscription, and what fell in it never reached
# the members here, connected the whole time, though every row was in
# PostgreSQL (the soak on seed 42: 357 acked messages).  Now, with
# storage, each resubscription also reads, after a few seconds, the room's
# rows from a little before what we had of each server, and delivers those
# of other servers we never had (each at most once: the seen window), also
# of a server we did not know yet (seed 7: one restarted just before the
# outage, 8,088 deliveries).
#
# A made-up server on Redis (t/lib/Test/Chat/Relay.pm) that publishes
# and stores its messages, stays alive (heartbeats), and never answers a
# sync request, and a second one first heard of during the outage;
# nginx's Redis user is switched off (connections killed, AUTH refused)
# while they "publish" messages nobody here hears.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status);
use Test::Chat::Redis;
use Test::Chat::Pg;
use Test::Chat::Relay qw(member live_for room_channel announce publish
                         store_row);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;

plan tests => 9;

my $SID = '00000000abcdef01';
my $TAG = '0000abcdef01';
my $ROOM = 'room';

my $redis = Test::Chat::Redis->start;
my $pg = Test::Chat::Pg->start;

$redis->cli('ACL', 'SETUSER', 'relay', 'on', '>secret', '~*', '&*',
            '+@all');

my $t = Test::Chat::Nginx->new(
    http => "chat_zone chat 1m;\n    chat_redis "
            . $redis->url(user => 'relay', password => 'secret')
            . ";\n    " . $pg->directive,
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
        }
        location = /chat/status {
            chat_status chat;
        }
_EOC_
    workers => 1,
);

$pg->wait_up($t, 2);
ok(poll(5, sub { (status($t)->{redis} // '') eq 'up' }), 'relay up');

my $m1 = member($t, 'm1', $ROOM);
my $channel = room_channel($redis, $ROOM);

# numbers after the follow, as the made-up server's clock says
my $T = int(now() * 1000) * 1000;
sub id_of { ($T + $_[0]) . "-$TAG" }
sub c     { 'n' . ($T + $_[0]) }

# the made-up server's message: stored there, published
sub send_n {
    my ($n, $live) = @_;
    store_row($pg, id_of($n), $ROOM, 'eve', c($n));
    publish($redis, $channel, $SID, M => id_of($n), $ROOM, c($n)) if $live;
}

announce($redis, $SID);
send_n(1000, 1);
is(live_for($redis, $SID, $m1, 1.5), c(1000),
   'a live message of the other server');

# our subscriber away: what the other server publishes meanwhile is lost
# in Redis; it is in storage
$redis->cli('ACL', 'SETUSER', 'relay', 'off');
$redis->cli('CLIENT', 'KILL', 'USER', 'relay');
ok(poll(5, sub { (status($t)->{redis} // '') eq 'down' }), 'relay down');

send_n(2000, 1);
send_n(3000, 1);
announce($redis, $SID);

# and a server we never heard of before (it started just now): its first
# messages, unheard here too
my $SID2 = '00000000abcdef09';
my $TAG2 = '0000abcdef09';
sub id2_of { ($T + $_[0]) . "-$TAG2" }
for my $n (2500, 3500) {
    store_row($pg, id2_of($n), $ROOM, 'fay', 'f' . ($T + $n));
    publish($redis, $channel, $SID2, M => id2_of($n), $ROOM,
            'f' . ($T + $n), user => 'fay');
}

# back: nginx asks again ("S +"), nobody answers; a live message closes
# the gap from above
$redis->cli('ACL', 'SETUSER', 'relay', 'on');
ok(poll(15, sub { announce($redis, $SID);
                  (status($t)->{redis} // '') eq 'up' }), 'relay up again');
poll(5, sub { grep { $_ eq $channel }
              $redis->cli('PUBSUB', 'CHANNELS', "*:r:$ROOM") });

send_n(4000, 1);

# the live one, and the two in the gap from storage, once each (old: the
# live one only); in whichever order the catch-up and the live one come
my $got = live_for($redis, $SID, $m1, 10);
like(" $got ", qr/ \Q${\ c(4000)}\E /, 'the next live message');
my @other = grep { /^n/ } split / /, $got;
is(join(' ', sort @other), join(' ', c(2000), c(3000), c(4000)),
   'what the gap lost came from storage, once each')
    or diag("got: $got");

# the server unknown when we asked again: its two from storage as well
# (old: only of servers we had a mark of)
my @new = grep { /^f/ } split / /, $got;
is(join(' ', sort @new), 'f' . ($T + 2500) . ' f' . ($T + 3500),
   'a server not known before the outage: from storage, once each')
    or diag("got: $got");

is(live_for($redis, $SID, $m1, 2), '',
   'nothing more (no copy of the live ones)');

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);
