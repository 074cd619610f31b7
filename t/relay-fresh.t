# A server just started (a fresh zone) asks again for what was published
# between a room's follow and its subscription, once it knows every other
# server (issue 12).
#
# A room subscribed to for the first time asks the servers it knows (their
# heartbeats, every 2 s) for what they published since the follow
# (relay-window.t); a fresh zone knows none yet and said "S -": a message
# another server published in that window never came, and a history reply
# left it out as pending (it was numbered after the follow).  The soak lost
# such messages on every member of a restarted server.  Now a subscription
# made in the first 3 s of the subscriber's life is asked again once that
# time is over, naming every server then known.
#
# A made-up server on Redis (as relay-input.t does) and a Redis subscriber
# of our own that sees the requests.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Select;
use IO::Socket::INET;

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll);
use Test::Chat::Redis;
use Test::Chat::Relay qw(live announce publish);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;

plan tests => 6;

my $SID = '00000000c0ffee00';
my $TAG = '0000c0ffee00';

my $redis = Test::Chat::Redis->start;

# our subscriber first: it sees every request from the start
my $sub = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                PeerPort => $redis->port, Proto => 'tcp',
                                Timeout => 3) or die "redis: $!";
my $pat = '*:r:fresh';
print $sub "*2\r\n\$10\r\nPSUBSCRIBE\r\n\$" . length($pat) . "\r\n$pat\r\n";

my $t = Test::Chat::Nginx->new(
    http => "chat_zone chat 1m;\n    chat_redis " . $redis->url . ";",
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
        }
_EOC_
    workers => 1,
);

# at once: the zone is fresh, the relay knows no server
my $f0 = int(now() * 1000) * 1000;
my $m = $t->ws(path => '/chat?user=m');
$m->recv_json(3);
$m->send_json({ type => 'join', room => 'fresh' });
ok($m->recv_until(sub { $_[0]{type} eq 'joined' }, 3), 'm joined "fresh"');
my $f1 = int(now() * 1000) * 1000;

# the made-up server is heard of now, after the subscription
poll(5, sub { grep { length } $redis->cli('PUBSUB', 'CHANNELS', '*:servers') });
announce($redis, $SID);

my ($buf, @req, $channel) = ('');
my $sel = IO::Select->new($sub);
my $end = now() + 8;
while (now() < $end && !grep(/ \+ /, @req) && $sel->can_read($end - now())) {
    sysread($sub, $buf, 65536, length $buf) or last;
    while ($buf =~ /\$\d+\r\n([^\r]*:r:fresh)\r\n\$\d+\r\n(\S+ S [^\r]*)\r\n/g) {
        $channel = $1;
        push @req, $2;
    }
    $buf =~ s/.*\r\n//s;
}
close $sub;

like($req[0] // '', qr/ S -$/, 'the first request: nobody known ("S -")')
    or diag("requests: @req");
my ($num) = (grep(/ \+ /, @req))[0] // '';
($num) = $num =~ / \+ $TAG:(\d+)$/;
ok(defined $num, 'asked again once the server is known (old: never)')
    or diag("requests: @req");
ok(defined $num && $num >= $f0 - 1_000_000 && $num <= $f1 + 1_000_000,
   'since the follow: ' . ($num // '-'));

# its answer: what it sent since the follow comes, once
$channel //= 'chat:0:chat:r:fresh';
my $id = ($f1 + 1) . "-$TAG";
publish($redis, $channel, $SID, R => $id, 'fresh', 'x1') for 1 .. 2;
is(live($m), 'x1', 'delivered, once');

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);

$m->disconnect;
