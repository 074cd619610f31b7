# The relay's seen window (issue 12): a server recognises every id of
# another server's messages it delivered in a room, whichever way the copy
# came (live, a queue sent again, a republish), within a window of the
# room's newest 4 x chat_history (at least 64) remote ids, and takes a
# republished message it never had when it was sent since the room was
# followed here (ids are "<ms * 1000 + n>-<tag>").
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
use IO::Select ();
use IO::Socket::INET ();
use JSON::PP ();
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status);
use Test::Chat::Redis;
use Test::Chat::Relay qw(live room_channel announce publish);

plan skip_all => 'no redis-server'
    unless Test::Chat::Redis->available;

plan tests => 18;

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

my $channel = room_channel($redis, $ROOM);
ok(grep({ $_ eq $channel } $redis->cli('PUBSUB', 'CHANNELS', "*:r:$ROOM")),
   'subscribed to the room');

# numbers after the follow (m1's join), as the made-up server's clock says
my $T = int(now() * 1000) * 1000;

sub c { 'n' . ($T + $_[0]) }

# the made-up server's messages [ $kind => $n ] (content "n$n"), in turn
sub publish_n {
    publish($redis, $channel, $SID, $_->[0] => "$_->[1]-$TAG", $ROOM,
            "n$_->[1]") for @_;
}

# live 1000, 3000: both delivered
publish_n([ M => $T + 1000 ], [ M => $T + 3000 ]);
is(live($m1), c(1000) . ' ' . c(3000), 'two live messages');

# a republish of one this server never had, between them: delivered once
# (old: refused, no gap was open)
publish_n([ R => $T + 2000 ]);
is(live($m1), c(2000),
   'a republished message never had, sent since the follow: delivered');

publish_n([ R => $T + 2000 ], [ R => $T + 1000 ],
          [ M => $T + 3000 ]);
is(live($m1), '', 'copies of the three again (republished, live): nothing');

# sent before the room was followed here: history, not delivered live
publish_n([ R => $T - 10_000_000 ]);
is(live($m1), '', 'a republished message sent before the room was '
                  . 'followed: history, not delivered');

# 100 more live ones (the ring keeps 5): the window still knows the first
# ones of them, beyond the ring
publish_n(map { [ M => $T + 10000 + $_ ] } 1 .. 100);
my @n = split ' ', live($m1);
is(scalar @n, 100, '100 more live ones');

publish_n(map { [ R => $T + 10000 + $_ ] } 1 .. 100);
publish_n(map { [ M => $T + 10000 + $_ ] } 1 .. 60);
is(live($m1), '', 'all 100 again, republished and live, beyond the ring '
                  . 'of 5: nothing (the window holds 64)');

# the oldest ones left the window (64 ids): a copy of those is refused by
# the floor, never delivered again
publish_n([ R => $T + 10001 ], [ M => $T + 1000 ]);
is(live($m1), '', 'a copy older than the window: refused by the floor');

# --- a room followed for the first time asks what was published since -------
#
# what another server publishes between the follow (the first member's
# join) and the moment the subscription takes never comes; the new
# subscriber's sync request says so ("S +" and "<tag>:<follow number>" of
# each server it knows), and the answer is taken once

announce($redis, $SID);    # the made-up server, known
Time::HiRes::sleep(0.3);

# a subscriber of our own sees the request
my $sub = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                PeerPort => $redis->port, Proto => 'tcp',
                                Timeout => 3) or die "redis: $!";
my $pat = '*:r:fresh';
print $sub "*2\r\n\$10\r\nPSUBSCRIBE\r\n\$" . length($pat) . "\r\n$pat\r\n";
Time::HiRes::sleep(0.3);

my $f0 = int(now() * 1000) * 1000;
my $m2 = $t->ws(path => '/chat?user=m2');
$m2->recv_json(3);
$m2->send_json({ type => 'join', room => 'fresh' });
ok($m2->recv_until(sub { $_[0]{type} eq 'joined' }, 3), 'm2 joined "fresh"');
my $f1 = int(now() * 1000) * 1000;

my ($buf, $req, $fchannel) = ('');
my $sel = IO::Select->new($sub);
my $end = now() + 5;
while (!defined $req && now() < $end && $sel->can_read($end - now())) {
    sysread($sub, $buf, 65536, length $buf) or last;
    while ($buf =~ /\$\d+\r\n([^\r]*:r:fresh)\r\n\$\d+\r\n(\S+ S [^\r]*)\r\n/g) {
        ($fchannel, $req) = ($1, $2);
    }
}
close $sub;

my ($num) = ($req // '') =~ / \+ $TAG:(\d+)$/;
ok(defined $num, 'the first subscription asks the known server what it '
                 . 'published since the follow (old: "S -")')
    or diag("request: " . ($req // 'none'));
ok(defined $num && $num >= $f0 - 1_000_000 && $num <= $f1 + 1_000_000,
   'at the follow: ' . ($num // '-'));
$fchannel //= "chat:0:chat:r:fresh";

# the answer: one sent since the follow (never came), one before it
sub fresh {
    my ($n) = @_;
    publish($redis, $fchannel, $SID, R => "$n-$TAG", 'fresh', "f$n");
}
my $since = int(now() * 1000) * 1000;
fresh($f0 - 5_000_000);
fresh($f1 + 1);
fresh($f1 + 1);
is(live($m2), 'f' . ($f1 + 1), 'the one sent since the follow: delivered, '
                               . 'once; the older one is history');
my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);

# --- followed again soon after: the follow number is kept -----------------
#
# the room's members leave (its relaying worker killed, say); 5 s later
# the relay unsubscribes; one comes back within 10 s: what the other
# server sent meanwhile is still this server's to deliver (its first
# subscription asks for it), not history cut at the new follow

$m2->send_json({ type => 'leave', room => 'fresh' });
ok($m2->recv_until(sub { $_[0]{type} eq 'left' }, 3), 'm2 left "fresh"');
ok(poll(10, sub {
       !grep { /:r:fresh$/ } $redis->cli('PUBSUB', 'CHANNELS', '*:r:fresh')
   }), 'unsubscribed after the follow grace');
my $gone = int(now() * 1000) * 1000;     # sent while nobody here followed
$m2->send_json({ type => 'join', room => 'fresh' });
$m2->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
poll(5, sub { grep { length } $redis->cli('PUBSUB', 'CHANNELS', '*:r:fresh') });
Time::HiRes::sleep(0.3);
fresh($gone);
is(live($m2), "f$gone", 'a message sent while the room was not followed for '
                        . 'a moment comes when it is asked for (old: refused)');

$m2->disconnect;
$m1->disconnect;
$t->stop;
$redis->stop;
