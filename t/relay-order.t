# A history reply from storage gives what the zone's ring holds in the
# order it came here (SPEC §3: one order for all members of one server),
# not in the ids' order (issue 12).  Ids of different servers are ordered
# by their clocks: another server's message that came late (its relay held
# it, or a republish) is after what it came after, for a member who joins
# with history (storage and the ring, merged) as for those who had it live
# and for the ring's own answer.  The chaos soak counted members so out of
# order.
#
# A made-up server "e" publishes on the room's channel and writes its rows
# as a server would (relay-window.t, relay-promise.t).

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

sub member {
    my ($user, %join) = @_;
    my $ws = $t->ws(path => "/chat?user=$user");
    $ws->recv_json(3);
    $ws->send_json({ type => 'join', room => 'r', %join });
    $ws->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
    return $ws;
}

sub live {
    my ($ws) = @_;
    my @l;
    while (my $x = $ws->recv_json(1)) {
        push @l, $x->{content} if $x->{type} eq 'message';
    }
    return join ' ', @l;
}

sub contents {
    my ($ws) = @_;
    my $h = $ws->recv_until(sub { $_[0]{type} eq 'history' }, 5);
    return join ' ', map { $_->{content} } @{ $h ? $h->{messages} : [] };
}

my $alice = member('alice');
my ($channel) = ('chat:0:chat:r:r');
poll(5, sub {
    ($channel) = grep { length } $redis->cli('PUBSUB', 'CHANNELS', '*:r:r');
    defined $channel;
});
my ($servers) = grep { length } $redis->cli('PUBSUB', 'CHANNELS', '*:servers');
$redis->cli('PUBLISH', $servers // 'chat:0:chat:servers', "$SID H");
Time::HiRes::sleep(0.2);

sub message {
    my ($n, $content) = @_;
    my $id = "$n-$TAG";
    $pg->psql("INSERT INTO messages (id, zone, room_id, user_id, content, "
              . "created_at) VALUES ('$id', 'chat', 'r', 'eve', '$content', "
              . "to_timestamp($n / 1000000.0))");
    $redis->cli('PUBLISH', $channel, "$SID M $id "
        . qq({"type":"message","room":"r","id":"$id","user":"eve",)
        . qq("content":"$content","ts":1700000000001}));
}

# alice's a0, then e's x2, then e's x1, numbered before x2, late
$alice->send_json({ type => 'send', room => 'r', content => 'a0' });
$alice->recv_until(sub { $_[0]{type} eq 'ack' }, 5);
my $e = int(now() * 1000) * 1000;
message($e + 2000, 'x2');
Time::HiRes::sleep(0.1);
message($e + 1000, 'x1');
is(live($alice), 'x2 x1', 'alice: x2 x1, as they came');

# history 10: more than the ring holds, storage answers with the ring
# merged (old: "a0 x1 x2")
my $bob = member('bob', history => 10);
is(contents($bob), 'a0 x2 x1', 'bob (history 10, from storage): a0 x2 x1');

# history 3: the ring's own answer
my $carol = member('carol', history => 3);
is(contents($carol), 'a0 x2 x1', 'carol (history 3, the ring): a0 x2 x1');

# a row storage alone has (before a0, never here) keeps its id's place
my $old = (int(now() * 1000) - 30_000) * 1000;
$pg->psql("INSERT INTO messages (id, zone, room_id, user_id, content, "
          . "created_at) VALUES ('$old-0000cafecafe', 'chat', 'r', 'zed', "
          . "'z0', to_timestamp($old / 1000000.0))");
my $dan = member('dan', history => 10);
is(contents($dan), 'z0 a0 x2 x1', 'dan: z0 (storage) a0 x2 x1');

# the next live one after, to all alike
$alice->send_json({ type => 'send', room => 'r', content => 'a1' });
is(live($bob) . ' / ' . live($dan), 'a1 / a1', 'then a1 live');

# --- "since" is after the id in this server's order, not the ids' ---------
#
# a resume since s1, which the ring holds before a hole (the room was not
# followed for a moment), is answered from storage merged with the ring:
# l, numbered before s1 (its sender's clock) but come here after it, is
# after s1 for the member (old: left out, as numbered before it; the soak
# lost it so, after a worker's kill -9, until a restart's overlap brought
# it back)

my $a2 = $t->ws(path => '/chat?user=alice');
$a2->recv_json(3);
$a2->send_json({ type => 'join', room => 'o' });
$a2->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
Time::HiRes::sleep(0.05);      # s1 numbered after the follow: ours
$a2->send_json({ type => 'send', room => 'o', content => 's1' });
my $ack = $a2->recv_until(sub { $_[0]{type} eq 'ack' }, 5);
my $s1 = $ack ? $ack->{id} : '';
$a2->disconnect;
ok(poll(12, sub { !grep { length } $redis->cli('PUBSUB', 'CHANNELS',
                                               '*:r:o') }),
   'the relay left room o');

my $b2 = $t->ws(path => '/chat?user=bob');
$b2->recv_json(3);
$b2->send_json({ type => 'join', room => 'o' });
$b2->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
my $ochan;
poll(5, sub {
    ($ochan) = grep { length } $redis->cli('PUBSUB', 'CHANNELS', '*:r:o');
    defined $ochan;
});
$ochan //= 'chat:0:chat:r:o';

my ($s1n) = $s1 =~ /^(\d+)-/;
my $l = ($s1n - 1000) . "-$TAG";
$pg->psql("INSERT INTO messages (id, zone, room_id, user_id, content, "
          . "created_at) VALUES ('$l', 'chat', 'o', 'eve', 'l', "
          . "to_timestamp(" . ($s1n - 1000) . " / 1000000.0))");
$redis->cli('PUBLISH', $ochan, "$SID M $l "
    . qq({"type":"message","room":"o","id":"$l","user":"eve",)
    . qq("content":"l","ts":1700000000001}));
is(live($b2), 'l', 'bob: l live, after s1 here');

my $c2 = $t->ws(path => '/chat?user=carol');
$c2->recv_json(3);
$c2->send_json({ type => 'join', room => 'o', since => $s1 });
my $h = $c2->recv_until(sub { $_[0]{type} eq 'history' }, 5);
is(join(' ', map { $_->{content} } @{ $h ? $h->{messages} : [] }), 'l',
   'carol since s1: l (old: nothing)');
ok($h && $h->{complete}, '... complete');
$_->disconnect for $b2, $c2;

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
ok(!@bad, 'no alert') or diag(join "\n", @bad);

$_->disconnect for $alice, $bob, $carol, $dan;
