# A history reply from PostgreSQL leaves out another server's messages
# that this server will deliver live and has not yet (issue 12): the
# sender stores its message and publishes it; when the row is read before
# the copy (or the republish after an outage) arrives here, the member
# that joined got it in its history and then live again (the same id
# twice on one connection), and its place in the member's stream was not
# where the members already here got it (SPEC §3: the same order for all
# members of one server).  Now such rows come live only, to everyone here
# alike.
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
use Test::Chat::Util qw(now poll status);
use Test::Chat::Redis;
use Test::Chat::Pg;
use Test::Chat::Relay qw(member room_channel announce publish store_row);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;

plan tests => 14;

my $SID = '00000000deadbeef';
my $TAG = '0000deadbeef';
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

my $m1 = $t->ws(path => '/chat?user=m1');
$m1->recv_json(3);
$m1->send_json({ type => 'join', room => $ROOM });
ok($m1->recv_until(sub { $_[0]{type} eq 'joined' }, 3), 'm1 joined');

my $channel = room_channel($redis, $ROOM);

# numbers after the follow (m1's join), as the made-up server's clock says
my $T = int(now() * 1000) * 1000;
sub c { 'n' . ($T + $_[0]) }

# the made-up server's message $n (content "n$n"): published (M live, R
# republished), stored
sub publish_n {
    my ($kind, $n) = @_;
    publish($redis, $channel, $SID, $kind => "$n-$TAG", $ROOM, "n$n");
}

sub store {
    my ($n) = @_;
    store_row($pg, "$n-$TAG", $ROOM, 'eve', "n$n",
              'to_timestamp(1700000000.001)');
}

# what a member gets within a quiet second: history contents as "h:",
# live as "m:"
sub got {
    my ($ws) = @_;
    my @c;
    while (my $m = $ws->recv_json(1)) {
        push @c, map { "h:$_->{content}" } @{ $m->{messages} }
            if $m->{type} eq 'history';
        push @c, "m:$m->{content}" if $m->{type} eq 'message';
    }
    return join ' ', @c;
}

# the made-up server's first message: stored there, then live here
store($T + 1000);
publish_n(M => $T + 1000);
is(got($m1), 'm:' . c(1000), 'm1: the first message, live');

# its second: stored, and its copy not here yet
store($T + 2000);

# m2 joins, asking for more than the ring (2) holds: storage answers
my $m2 = member($t, 'm2', $ROOM, history => 10);
my $s2 = got($m2);
is($s2, 'h:' . c(1000),
   'm2\'s history: the first; not the second, which is not here yet '
   . '(old: in the history, then live again)');

# the copy arrives (a republish after an outage, or late)
publish_n(R => $T + 2000);
is(got($m1), 'm:' . c(2000), 'm1 gets the second live');
$s2 .= ' ' . got($m2);
is($s2, 'h:' . c(1000) . ' m:' . c(2000),
   'm2 too, once, in the same place as m1');

# a later join: now it is history
my $m3 = member($t, 'm3', $ROOM, history => 10);
is(got($m3), 'h:' . c(1000) . ' h:' . c(2000),
   'm3 joining later has both in its history');

# rows from before the room was followed here, and of servers never
# heard of: history as ever
store_row($pg, '1700000000500-0000cafecafe', $ROOM, 'zed', 'old',
          'to_timestamp(1699999999.0)');
my $m4 = member($t, 'm4', $ROOM, history => 10);
is(got($m4), 'h:old h:' . c(1000) . ' h:' . c(2000),
   'a row of a server never heard of here is history');

# a server known (its heartbeat) but with nothing delivered here yet in
# the room: its stored row comes live too (old: in the history, then again)
my $SID2 = '00000000beefbeef';
my $TAG2 = '0000beefbeef';
announce($redis, $SID2);
Time::HiRes::sleep(0.3);
my $n2 = $T + 3000;
store_row($pg, "$n2-$TAG2", $ROOM, 'bee', "b$n2",
          'to_timestamp(1700000000.002)');
my $m5 = member($t, 'm5', $ROOM, history => 10);
my $s5 = got($m5);
publish($redis, $channel, $SID2, R => "$n2-$TAG2", $ROOM, "b$n2",
        user => 'bee', ts => 1700000000002);
$s5 .= ' ' . got($m5);
is(scalar(() = $s5 =~ /b$n2/g), 1, "m5 has the known server's message once")
    or diag($s5);
like($s5, qr/ m:b$n2$/, '... live');

# --- a server gone with messages it committed and never published ---------
#
# the made-up server stores two more (committed: acked to its sender) and
# falls silent, its relay queue lost with it while Redis was down; once
# it is dropped (7 s without a word) this server reads them from storage
# and delivers them, once, to every member here

got($m1);    # what came before
announce($redis, $SID);
store($T + 4000);
store($T + 5000);
my $m6 = member($t, 'm6', $ROOM, history => 10);
my $s6 = got($m6);
unlike($s6, qr/n@{[ $T + 4000 ]}/,
       'a join meanwhile: not in its history (they will come live)');
my $live = '';
my $end = now() + 15;
while (now() < $end && $live !~ /n@{[ $T + 5000 ]}/) {
    my $m = $m1->recv_json(1) or next;
    $live .= " $m->{content}" if $m->{type} eq 'message';
}
$live .= ' ' . got($m1);
is(join(' ', grep { length } split / /, $live), c(4000) . ' ' . c(5000),
   'm1 gets them live once the server is dropped (old: never)');
$s6 .= ' ' . got($m6);
is(scalar(() = $s6 =~ /n@{[ $T + 4000 ]}/g), 1, 'm6 too, once');

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);

$_->disconnect for $m1, $m2, $m3, $m4, $m5, $m6;
$t->stop;
$redis->stop;
$pg->stop;
