# A row left out of a history reply because it comes live here
# (ngx_chat_remote_pending(): another server's message sent since the
# room was followed, not delivered yet) is a promise: its copy, when it
# comes (a republish answering our sync request), is taken and delivered
# (issue 12).
#
# A resume the zone cannot vouch for (since an id older than the follow:
# ngx_chat_remote_blind()) puts the other servers' recent messages of its
# reply into the room's seen window (ngx_chat_remote_had()), so that their
# late live copies are refused.  Those went in at the newest end: a reply
# of more than the window (4 x chat_history, at least 64) pushed the live
# ids out, and each one leaving raised its sender's floor above the
# promised row, whose republish was then refused for good.  The soak lost
# messages so after a server restart (a member's reply left the row out;
# another member's resume, 50 ms later, filled the window; the republish
# of our fresh request came 3 s later and was refused).  Now such ids are
# the window's oldest (what is ours, sent since the follow, is never
# added: the pending rules cover it), and a window full of them raises
# only their own senders' floors, to below the follow.
#
# A made-up server "e" publishes on the room's channel and writes its rows
# as a server would (relay-window.t, resume-overlap.t).

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
my $ZSID = '00000000cafecafe';
my $ZTAG = '0000cafecafe';

# 80 messages of another server from the last seconds, before the room is
# followed here: history
my $z0 = (int(now() * 1000) - 8000) * 1000;
store_row($pg, ($z0 + $_ * 50_000) . "-$ZTAG", 'r', 'zed', "z$_")
    for 0 .. 79;
Time::HiRes::sleep(0.05);

my $alice = member($t, 'alice', 'r');
my $channel = room_channel($redis, 'r');
announce($redis, $SID);
Time::HiRes::sleep(0.2);

# e1, sent since the follow, never came live (published before our
# subscription took); e2 came live
my $e = int(now() * 1000) * 1000;
store_row($pg, ($e + 1) . "-$TAG", 'r', 'eve', 'e1');
store_row($pg, ($e + 2) . "-$TAG", 'r', 'eve', 'e2');
publish($redis, $channel, $SID, M => ($e + 2) . "-$TAG", 'r', 'e2');

my $m = $alice->recv_until(sub { $_[0]{type} eq 'message' }, 3);
is($m && $m->{content}, 'e2', 'alice: e2 live');

# carol resumes since z0, before the follow: the reply leaves e1 out (it
# comes live) and gives the 79 after z0 and more (the overlap)
my $carol = member($t, 'carol', 'r', since => "$z0-$ZTAG");
my @c = split ' ', contents(history_of($carol));
ok(scalar(grep { /^z/ } @c) == 79 && !grep({ $_ eq 'e1' } @c),
   'carol: the 79 after z0, not e1 (pending)')
    or diag("@c");
ok((grep { $_ eq 'e2' } @c), '... e2, had here');

# e3 live: into the full window, whose oldest leaves it
store_row($pg, ($e + 3) . "-$TAG", 'r', 'eve', 'e3');
publish($redis, $channel, $SID, M => ($e + 3) . "-$TAG", 'r', 'e3');
is(live($carol), 'e3', 'e3 live');

# the answer to our sync request: e1 republished, e2 with it
publish($redis, $channel, $SID, R => ($e + 1) . "-$TAG", 'r', 'e1');
publish($redis, $channel, $SID, R => ($e + 2) . "-$TAG", 'r', 'e2');

is(live($alice), 'e3 e1', 'alice: e3, then e1 when it is republished, '
                          . 'once (old: refused, the floor above it)');
is(live($carol), 'e1', 'carol: e1 as her reply promised, once');

# a late live copy of a message in carol's reply is still refused
my $dups = status($t)->{relay_duplicates} // 0;
publish($redis, $channel, $ZSID, M => ($z0 + 79 * 50_000) . "-$ZTAG", 'r',
        'z79');
ok(poll(5, sub { (status($t)->{relay_duplicates} // 0) > $dups }),
   'a late copy of z79 (in carol\'s reply): refused as one');
is(live($alice), '', 'alice: not delivered');

# a new member's history: this server's order, as alice saw it
my $dan = member($t, 'dan', 'r', history => 3);
is(contents(history_of($dan)), 'e2 e3 e1', 'dan\'s history: e2 e3 e1');

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);

$_->disconnect for $alice, $carol, $dan;
