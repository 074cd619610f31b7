# Another server's row committed late is delivered here once, in the
# same place for every member (issue 12: order after a restart).
#
# A server that has just started (or a room just followed) answers its
# members' resumes from storage: the rows of other servers numbered before
# the follow are history, in id order.  Another server's rows commit in id
# order per worker only: a row can be committed after a later one of
# another of its workers (its PostgreSQL queue was longer).  A first reply
# then lacked it and gave the later ones; a second reply, a moment later,
# gave it in id order, before those: the first member never had it (or
# had it only from a fill-in, after live messages), the second had it
# earlier in its order (the soak on seed 42: 99 members out of order, all
# just after their server restarted).  Now a row a reply finds between
# rows an earlier reply gave, never had here, is delivered into the zone
# at once, like a live message that came late: to every member here, after
# what they have, and later replies give it where it came.
#
# A made-up server on Redis (t/lib/Test/Chat/Relay.pm) whose rows are
# written into the messages table as its storage would.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status);
use Test::Chat::Redis;
use Test::Chat::Pg;
use Test::Chat::Relay qw(member live history_of contents room_channel
                         announce store_row);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;

plan tests => 10;

my $SID = '00000000abcdef05';
my $TAG = '0000abcdef05';
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
            chat_history 10;
        }
        location = /chat/status {
            chat_status chat;
        }
_EOC_
    workers => 2,
);

$pg->wait_up($t, 2);
ok(poll(5, sub { (status($t)->{redis} // '') eq 'up' }), 'relay up');
announce($redis, $SID);

# the made-up server's messages of 10 s ago, before anyone here followed
# the room: history here.  n2 is not committed yet.
my $T = (int(now() * 1000) - 10000) * 1000;
sub id_of { ($T + $_[0]) . "-$TAG" }
sub c     { 'n' . $_[0] }

store_row($pg, id_of(0), $ROOM, 'eve', c(0));
store_row($pg, id_of(1000), $ROOM, 'eve', c(1));
store_row($pg, id_of(3000), $ROOM, 'eve', c(3));

# a member resuming after n0 (had on that server): storage answers
my $a = member($t, 'a', $ROOM, since => id_of(0));
is(contents(history_of($a)), 'n1 n3', "a's resume: what storage has");
room_channel($redis, $ROOM);

# n2 commits now
store_row($pg, id_of(2000), $ROOM, 'eve', c(2));

# b resumes after n0 too: n2 is between what a was given, never had here
my $b = member($t, 'b', $ROOM, since => id_of(0));
is(contents(history_of($b)), 'n1 n3', "b's resume: as a's (n2 comes after)");
is(live($b), 'n2', 'b: n2 came then, once');
is(live($a), 'n2', 'a: n2 came, once (old: never)');

# c resumes after n0: n2 where it came here, after n3
my $c = member($t, 'c', $ROOM, since => id_of(0));
is(contents(history_of($c)), 'n1 n3 n2', "c's resume: the order a and b saw");
is(live($c), '', 'c: nothing more');

# a row older than anything given is history as before, in its place
store_row($pg, id_of(-1000), $ROOM, 'eve', c(-1));
my $d = member($t, 'd', $ROOM, since => id_of(-2000));
is(contents(history_of($d)), 'n-1 n0 n1 n3 n2',
   "d's resume from further back: the older row in id order");
is(live($a) . live($d), '', 'nobody got it live');

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);
