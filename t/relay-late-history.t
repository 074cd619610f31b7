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
# Also: a resume after such a late message is answered from storage, not
# from the ring (the history storage gave the others never was in it); the
# row a resume is after counts as had here (a reply reaching further back
# must not find it "late" and deliver it again); a late row no reply finds
# comes from storage a few seconds later (the room's catch-up), and a
# republish of one (another server answering a sync request) is taken.
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
use Test::Chat::Relay qw(member live live_for history_of contents
                         room_channel announce publish store_row);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;

plan tests => 31;

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

# a resume after the late one: storage answers (the member may have had
# it on another server, not n3), not the ring, where nothing is after it
# (old: nothing, complete)
my $e2 = member($t, 'e2', $ROOM, since => id_of(2000));
is(contents(history_of($e2)), 'n-1 n0 n1 n3',
   'a resume after the late one: from storage, 60 s back');

# the row a resume is after is had by its member: not late for the next
# reply, which reaches further back (old: delivered live again to all)
my $R4 = 'room4';
store_row($pg, id_of($_ * 1000 + 30), $R4, 'eve', "q$_") for 0 .. 4;
my $g = member($t, 'g', $R4, since => id_of(2030));
is(contents(history_of($g)), 'q0 q1 q3 q4', "g's resume after q2");
my $h2 = member($t, 'h', $R4, since => id_of(1030));
is(contents(history_of($h2)), 'q0 q2 q3 q4', "h's resume after q1: q2 in "
   . 'its place');
is(live($g) . live($h2), '', 'q2 is not delivered again');
my $k = member($t, 'k', $R4, since => id_of(2030));
is(contents(history_of($k)), 'q0 q1 q3 q4', "k's resume after q2: as g's");

# a row committed later still, no other reply finding it: read from
# storage a few seconds after the reply, delivered late, once
my $R2 = 'room2';
store_row($pg, id_of(10), $R2, 'eve', 'm0');
store_row($pg, id_of(1010), $R2, 'eve', 'm1');
store_row($pg, id_of(3010), $R2, 'eve', 'm3');
my $e = member($t, 'e', $R2, since => id_of(10));
is(contents(history_of($e)), 'm1 m3', "e's resume");
store_row($pg, id_of(2010), $R2, 'eve', 'm2');

is(live_for($redis, $SID, $e, 12), 'm2',
   'e: the late row came from storage, once (old: never)');

# a republish of history between what replies gave (the other server's
# answer to a sync request; not committed yet): late too, delivered
my $R3 = 'room3';
store_row($pg, id_of(20), $R3, 'eve', 'p0');
store_row($pg, id_of(1020), $R3, 'eve', 'p1');
store_row($pg, id_of(3020), $R3, 'eve', 'p3');
my $f = member($t, 'f', $R3, since => id_of(20));
is(contents(history_of($f)), 'p1 p3', "f's resume");
my $ch3 = room_channel($redis, $R3);
publish($redis, $ch3, $SID, R => id_of(2020), $R3, 'p2');
publish($redis, $ch3, $SID, R => id_of(1020), $R3, 'p1');
is(live($f), 'p2', 'f: the republished late one, not what it had '
   . '(old: nothing)');
publish($redis, $ch3, $SID, R => id_of(-480), $R3, 'p-0.5');
is(live($f), '', 'a republish of history before what replies gave: '
   . 'refused');

# a row numbered after the newest a reply gave, before the follow: the
# reply gave all there was up to the follow, so it came late too
my $R5 = 'room5';
store_row($pg, id_of(40), $R5, 'eve', 'r0');
store_row($pg, id_of(1040), $R5, 'eve', 'r1');
my $x = member($t, 'x', $R5, since => id_of(40));
is(contents(history_of($x)), 'r1', "x's resume");

# z had that server's messages up to after r2 (on another server): r2 is
# not for it
my $z = member($t, 'z', $R5, since => id_of(2540));
is(contents(history_of($z)), 'r0 r1', "z's resume: 60 s back");

store_row($pg, id_of(2040), $R5, 'eve', 'r2');
my $y = member($t, 'y', $R5, since => id_of(40));
is(contents(history_of($y)), 'r1', "y's resume: r2 comes after (old: "
   . 'r1 r2)');
is(live($x) . ' ' . live($y) . ' ' . live($z), 'r2 r2 ',
   'x and y got it live, once; z, whose since is after it, not');

# a row numbered before a resume's since, of another server than the
# since's: in the 60 s before it a just-restarted server gives again (the
# member may lack it), so late too, and not for the member to skip
my $R6 = 'room6';
my $since6 = ($T + 3060) . '-0000abcdef06';
store_row($pg, id_of(60), $R6, 'eve', 's0');
store_row($pg, id_of(1060), $R6, 'eve', 's1');
my $p = member($t, 'p', $R6, since => $since6);
is(contents(history_of($p)), 's0 s1', "p's resume: 60 s back");
store_row($pg, id_of(2060), $R6, 'eve', 's2');
my $q = member($t, 'q', $R6, since => $since6);
is(contents(history_of($q)), 's0 s1', "q's resume: s2 comes after (old: "
   . 's0 s1 s2)');
is(live($p) . ' ' . live($q), 's2 s2', 'both got it live, once');

# a since of this server's own life (a message it delivered live) is no
# reason to skip a late one: the zone did not deliver it before (the soak,
# seed 42: a member that lacked it had it only 16 s later, out of place)
my $R7 = 'room7';
store_row($pg, id_of(70), $R7, 'eve', 't0');
store_row($pg, id_of(1070), $R7, 'eve', 't1');
my $g7 = member($t, 'g7', $R7, since => id_of(70));
is(contents(history_of($g7)), 't1', "g7's resume");
my $ch7 = room_channel($redis, $R7);
my $live = (int(now() * 1000) + 5000) * 1000 . "-$TAG";
publish($redis, $ch7, $SID, M => $live, $R7, 't9');
is(live($g7), 't9', 'a live message of that server');
my $w = member($t, 'w', $R7, since => $live);
store_row($pg, id_of(2070), $R7, 'eve', 't2');
my $h7 = member($t, 'h7', $R7, since => id_of(70));
is(contents(history_of($h7)), 't1 t9', "h7's resume: t2 comes after");
is(live($g7) . ' ' . live($h7) . ' ' . live($w), 't2 t2 t2',
   'all got it live, also w, whose since is after it (old: not w)');

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);
