# The relay's seen window (issue 12): a server recognises every id of
# another server's messages it delivered in a room, whichever way the copy
# came (live, a queue sent again, a republish), within a window of the
# room's newest 4 x chat_history (at least 64) remote ids, and takes a
# republished message it never had when it is newer than the sender's
# first live message since the room was followed.
#
# The old marks kept one number and one gap per sender: a republished
# message between two live ones, which this server never had (published
# while the sender's relay changed hands, or lost in a gap a second
# resubscription gave up), was refused for good; and a copy older than
# the gap was refused even when it had never come.
#
# A made-up server publishes well-formed payloads on the room's channel
# (as relay-input.t does): "M" live, "R" republished.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP ();
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status);
use Test::Chat::Redis;

plan skip_all => 'no redis-server'
    unless Test::Chat::Redis->available;

plan tests => 10;

my $JSON = JSON::PP->new->utf8;
my $SID = '00000000deadbeef';
my $TAG = '0000deadbeef';
my $ROOM = 'room';

my $redis = Test::Chat::Redis->start;

my $t = Test::Chat::Nginx->new(
    http => "chat_zone chat 1m;\n    chat_redis " . $redis->url . ';',
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

ok(poll(5, sub { (status($t)->{redis} // '') eq 'up' }), 'relay up');

my $m1 = $t->ws(path => '/chat?user=m1');
$m1->recv_json(3);
$m1->send_json({ type => 'join', room => $ROOM });
ok($m1->recv_until(sub { $_[0]{type} eq 'joined' }, 3), 'm1 joined');

my $channel;
poll(5, sub {
    ($channel) = grep { length } $redis->cli('PUBSUB', 'CHANNELS', "*:r:$ROOM");
    defined $channel;
});
ok(defined $channel, 'subscribed to the room');
$channel //= "chat:0:chat:r:$ROOM";

sub payload {
    my ($kind, $n) = @_;
    my $id = "$n-$TAG";
    return "$SID $kind $id "
           . qq({"type":"message","room":"$ROOM","id":"$id","user":"eve",)
           . qq("content":"n$n","ts":1700000000001});
}

sub publish {
    $redis->cli('PUBLISH', $channel, payload(@$_)) for @_;
}

# what m1 gets within a quiet second: the contents, in order
sub got {
    my @c;
    while (my $m = $m1->recv_json(1)) {
        push @c, $m->{content} if $m->{type} eq 'message';
    }
    return join ' ', @c;
}

# live 1000, 3000: both delivered
publish([ M => 1700000001000 ], [ M => 1700000003000 ]);
is(got(), 'n1700000001000 n1700000003000', 'two live messages');

# a republish of one this server never had, between them: delivered once
# (old: refused, no gap was open)
publish([ R => 1700000002000 ]);
is(got(), 'n1700000002000',
   'a republished message never had, after the first live one: delivered');

publish([ R => 1700000002000 ], [ R => 1700000001000 ],
        [ M => 1700000003000 ]);
is(got(), '', 'copies of the three again (republished, live): nothing');

# older than the first live message since the room was followed: history,
# not delivered live
publish([ R => 1700000000500 ]);
is(got(), '', 'a republished message older than the first live one: not delivered');

# 100 more live ones (the ring keeps 5): the window still knows the first
# ones of them, beyond the ring
publish(map { [ M => 1700000010000 + $_ ] } 1 .. 100);
my @n = split ' ', got();
is(scalar @n, 100, '100 more live ones');

publish(map { [ R => 1700000010000 + $_ ] } 1 .. 100);
publish(map { [ M => 1700000010000 + $_ ] } 1 .. 60);
is(got(), '', 'all 100 again, republished and live, beyond the ring of 5: '
              . 'nothing (the window holds 64)');

# the oldest ones left the window (64 ids): a copy of those is refused by
# the floor, never delivered again
publish([ R => 1700000010001 ], [ M => 1700000001000 ]);
is(got(), '', 'a copy older than the window: refused by the floor');

$m1->disconnect;
$t->stop;
$redis->stop;
