# A message a history reply left out as "it comes live" comes, from
# storage when no copy does (issue 12).
#
# A history reply from PostgreSQL leaves out another server's message sent
# since the room was followed here and not delivered here yet: its copy
# (live, or the republish answering our sync request) will bring it to
# every member alike (t/relay-pending.t).  When no copy came (it was
# published between our follow and the moment Redis confirmed our
# subscription, and the sync answer did not come whole: the other server's
# relay was down, or restarted), the promise was never kept: members here,
# connected throughout, had it only from a later resume's overlap, out of
# place (the soak on seed 7 after a server restart: 282 members out of
# order).  Now each row left out so is also read from storage a few
# seconds later and delivered, once, unless its copy came meanwhile.
#
# A made-up server on Redis (t/lib/Test/Chat/Relay.pm) that stores its
# message and never publishes it.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status);
use Test::Chat::Redis;
use Test::Chat::Pg;
use Test::Chat::Relay qw(live_for member room_channel announce publish store_row
                         history_of contents);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;

plan tests => 7;

my $SID = '00000000abcdef02';
my $TAG = '0000abcdef02';
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
            chat_history 2;
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
announce($redis, $SID);

# numbers after the follow (m1's join), as the made-up server's clock says
my $T = int(now() * 1000) * 1000;
sub id_of { ($T + $_[0]) . "-$TAG" }
sub c     { 'n' . ($T + $_[0]) }

# its first message, live and stored: the room has a mark of it
store_row($pg, id_of(1000), $ROOM, 'eve', c(1000));
publish($redis, $channel, $SID, M => id_of(1000), $ROOM, c(1000));
is(live_for($redis, $SID, $m1, 1.5), c(1000),
   'a live message of the other server');

# its second: stored, and no copy of it ever comes here
store_row($pg, id_of(2000), $ROOM, 'eve', c(2000));

# a member whose join reads storage (history 2 in the zone: its 5 go
# further) is promised it live
my $m2 = member($t, 'm2', $ROOM, history => 5);
my $h = history_of($m2);
is(contents($h), c(1000), "m2's history: the one delivered here, the "
   . 'other left out (it comes live)');

# the promise kept, from storage, to both alike (old: never)
is(live_for($redis, $SID, $m1, 10), c(2000), 'm1: it came, once');
is(live_for($redis, $SID, $m2, 0.5), c(2000), 'm2: it came, once');

# its copy, late, is no second delivery
publish($redis, $channel, $SID, M => id_of(2000), $ROOM, c(2000));
is(live_for($redis, $SID, $m1, 1.5), '', 'a late copy: nothing');

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);
