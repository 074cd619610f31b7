# Messages of ours that the relay dropped unsent reach the other servers
# from storage once Redis is back (issue 12).
#
# What a server has to publish waits in a bounded queue while Redis is
# down (chat_redis_queue, 10,000 by default); beyond it the oldest went,
# counted in relay_dropped, and the other servers never had them: their
# members, connected the whole time, missed acked messages for good.  The
# chaos soak (seed 42) lost 113 so: a server's Redis connections came back
# after 8 s of backoff, and the republishes it answered other servers' sync
# requests with had filled its queue meanwhile.  Now a dropped message of
# ours leaves its room and number in the zone, and the relaying worker,
# once Redis takes publishes again, reads ours from PostgreSQL and
# publishes them again (R); receivers take each at most once.
#
# Here nginx's Redis user is switched off (its connections killed, AUTH
# refused) while a member sends more than the queue holds; a subscriber of
# the test's own, on another Redis user, stays on the room's channel and
# sees what nginx publishes when its user is back.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Select;
use IO::Socket::INET;

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status);
use Test::Chat::Redis;
use Test::Chat::Pg;
use Test::Chat::Relay qw(member room_channel);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;

plan tests => 11;

my $ROOM = 'room';
my $N = 60;
my $QUEUE = 20;

my $redis = Test::Chat::Redis->start;
my $pg = Test::Chat::Pg->start;

$redis->cli('ACL', 'SETUSER', 'relay', 'on', '>secret', '~*', '&*',
            '+@all');

my $t = Test::Chat::Nginx->new(
    http => "chat_zone chat 1m;\n    chat_redis "
            . $redis->url(user => 'relay', password => 'secret')
            . ";\n    chat_redis_queue $QUEUE;\n    " . $pg->directive,
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

# the test's subscriber, as another server's would be
my $sub = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                PeerPort => $redis->port, Proto => 'tcp',
                                Timeout => 3) or die "redis: $!";
print $sub "*2\r\n\$9\r\nSUBSCRIBE\r\n\$" . length($channel)
           . "\r\n$channel\r\n";

# nginx cut off Redis: its user off, its connections gone
$redis->cli('ACL', 'SETUSER', 'relay', 'off');
$redis->cli('CLIENT', 'KILL', 'USER', 'relay');
ok(poll(5, sub { (status($t)->{redis} // '') eq 'down' }), 'relay down');

# more than the queue holds, each acked (committed)
my %ack;
for my $i (1 .. $N) {
    $m1->send_json({ type => 'send', room => $ROOM, content => "u$i",
                     ref => "r$i" });
}
my $end = now() + 10;
while (keys %ack < $N && now() < $end) {
    my $m = $m1->recv_json($end - now()) or last;
    $ack{$m->{ref}} = $m->{id} if $m->{type} eq 'ack';
}
is(scalar keys %ack, $N, "all $N acked while Redis is away from nginx");

ok(poll(5, sub { (status($t)->{relay_dropped} // 0) > 0 }),
   'the queue overflowed: relay_dropped ' . (status($t)->{relay_dropped}));

# nginx's user back: it reconnects (backoff) and publishes
$redis->cli('ACL', 'SETUSER', 'relay', 'on');
ok(poll(15, sub { (status($t)->{redis} // '') eq 'up' }), 'relay up again');

# what the subscriber hears within 10 s: id -> kinds
my %kind;
my %want = map { $_ => 1 } values %ack;
my $sel = IO::Select->new($sub);
my $buf = '';
$end = now() + 10;
while (now() < $end && grep({ !$kind{$_} } keys %want)
       && $sel->can_read($end - now()))
{
    sysread($sub, $buf, 65536, length $buf) or last;
    while ($buf =~ /(?:^|\n)[0-9a-f]{16} ([MR]) (\S+) [^\r]*\r\n/g) {
        $kind{$2} .= $1;
    }
    $buf =~ s/.*\r\n//s;
}
close $sub;

my @missed = grep { !$kind{$_} } sort values %ack;
is(scalar @missed, 0, 'every acked message was published (old: the '
   . 'oldest, dropped, never)') or diag("missed: @missed");

my @again = grep { ($kind{$_} // '') =~ /R/ } values %ack;
ok(@again > 0, 'the dropped ones came again from storage: '
   . scalar(@again) . ' as R');

# in order of their numbers: the oldest was dropped first, the newest
# waited in the queue
my @by_num = sort { ($a =~ /^(\d+)/)[0] <=> ($b =~ /^(\d+)/)[0] } values %ack;
like($kind{ $by_num[0] } // '', qr/^R/, 'the oldest came as R only');
like($kind{ $by_num[-1] } // '', qr/^M/, 'the newest came live (M)');

my $again = qr/messages of ours that Redis missed published again from /
            . 'storage in "room"';
ok(scalar $t->grep_error_log(qr/$again/), 'logged');

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);
