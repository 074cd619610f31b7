# A resume answered from PostgreSQL also gives what other servers stored
# shortly before `since`, when this server cannot vouch for what the
# member had (issue 12).  Ids of different servers are ordered by their
# number, not by when they reach a member: another server's message,
# numbered lower, comes later when its relay held it through a Redis
# outage, or never, when the server the member was on stops first.  The
# member comes back to a fresh zone (no ring: storage answers) with the
# last id it saw, a message of its server numbered after the one it never
# got; "after since" in storage's order skipped that one for good (the
# chaos soak lost whole bursts so: a Redis outage, then a server stop).
# Now, on a server that relays, a resume whose id is older than the room's
# follow here starts NGX_CHAT_STORE_OVERLAP (60 s) before it: what the
# client had comes again (it dedupes by id; SPEC §5: at most once per
# connection), what it never had is not lost.  A server without Redis
# keeps the exact "after since" (pg-merge.t).
#
# The fault, with two real servers: Redis stops; b's message b1 is stored
# and queued; a's a2 and a3 reach a's member; a stops; Redis comes back
# and b publishes b1 to nobody on a; a starts again; the member resumes
# since a2.

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
use Test::Chat::Relay qw(member history_of contents store_row publish
                         announce room_channel);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;

plan tests => 18;

my $redis = Test::Chat::Redis->start;
my $pg = Test::Chat::Pg->start;

my %conf = (
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

my $a = Test::Chat::Nginx->new(%conf);
my $b = Test::Chat::Nginx->new(%conf);
$pg->wait_up($a, 2);
$pg->wait_up($b, 2);

sub send_acked {
    my ($ws, $text) = @_;
    $ws->send_json({ type => 'send', room => 'r', content => $text });
    my $ack = $ws->recv_until(sub { $_[0]{type} eq 'ack' }, 5);
    return $ack ? $ack->{id} : undef;
}

sub redis_up {
    my ($t) = @_;
    return poll(10, sub { (status($t)->{redis} // '') eq 'up' });
}

ok(redis_up($a) && redis_up($b), 'both relay');

my $alice = member($a, 'alice', 'r');
my $bob = member($b, 'bob', 'r');

my $a0 = send_acked($alice, 'a0');
ok($a0, 'a0 acked on server a');

# the outage: b's message stays in b's relay queue
$redis->stop;
poll(5, sub { (status($a)->{redis} // '') eq 'down' });
my $b1 = send_acked($bob, 'b1');
ok($b1, 'b1 acked on server b, Redis down');
Time::HiRes::sleep(0.05);
my $a2 = send_acked($alice, 'a2');
ok($a2, 'a2 acked on server a, numbered after b1');
my $a3 = send_acked($alice, 'a3');

# a server whose relay still holds its e1 (stored, numbered just before
# a2): its live copy comes after the resume below
my $SID = '00000000feedbeef';
my $TAG = '0000feedbeef';
my ($e1n) = $a2 =~ /^(\d+)-/;
$e1n -= 1;
my $e1 = "$e1n-$TAG";
store_row($pg, $e1, 'r', 'eve', 'e1');

# a row of another server from long before: out of the window
my $old = (int(now() * 1000) - 120_000) * 1000;
$pg->psql("INSERT INTO messages (id, zone, room_id, user_id, content, "
          . "created_at) VALUES ('$old-0000cafecafe', 'chat', 'r', 'zed', "
          . "'old', now() - interval '120 seconds')");

# while a's zone knows a2 (its ring), a resume is exact: a's order
my $c = member($a, 'carol', 'r', since => $a2);
my $h = history_of($c);
is(contents($h), 'a3', 'a resume the ring answers: what came after, here');
ok($h->{complete}, '... complete');
$c->disconnect;
$alice->disconnect;

# a stops; Redis comes back and b publishes b1 with nobody of a to hear
$a->stop;
$redis->start_again;
ok(redis_up($b), 'b relays again (b1 published)');
ok($a->start, 'server a started again') or diag($a->{start_output});
$pg->wait_up($a, 4);
redis_up($a);

my $r = member($a, 'alice', 'r', since => $a2);
$h = history_of($r);
ok($h, 'the resume is answered');
my @ids = map { $_->{id} } @{ $h->{messages} // [] };
# in a's order: a3 came here before b1 and e1 (never here before the
# stop), as alice saw it (a3's row says which others a had then: its
# prior, relay-restart-order.t)
is(contents($h), 'a0 a3 b1 e1',
   'from storage: b1 and e1, numbered before a2 and never here, come '
   . '(old: "a3" only), after a3 as on a before its stop (by id before '
   . 'the prior column); a0 again (the overlap), not the row from long '
   . 'before');
ok($h->{complete}, '... complete');
my %n;
$n{$_}++ for @ids;
ok(!grep({ $_ > 1 } values %n), 'each message once in the reply');
ok(!grep({ $_ eq $a2 } @ids), 'not since itself');

# a resume from storage with an id storage does not know: as before
my $u = member($a, 'dan', 'r', since => '1-000000000000');
$h = history_of($u);
ok($h && !$h->{complete}, 'an unknown id: not complete');

# e1's live copy comes now (its sender's relay held it): it is history
# here since the reply gave it (old: alice got it twice on one connection,
# and members that had it live saw it in another place than those that
# had it in their reply); frank, who joined after it was numbered and
# asked for no history, does not get it either
my $dups = status($a)->{relay_duplicates} // 0;
my $f = member($a, 'frank', 'r');
announce($redis, $SID);
publish($redis, room_channel($redis, 'r'), $SID, M => $e1, 'r', 'e1');
ok(poll(5, sub { (status($a)->{relay_duplicates} // 0) > $dups }),
   'the copy came, and was refused as one');
my $fl = $f->recv_until(sub { $_[0]{type} eq 'message' }, 1);
ok(!$fl, 'frank: nothing live');

# live after the resume: b's next, once; b1 and e1 not again
my $b4 = send_acked($bob, 'b4');
my @live;
while (my $m = $r->recv_json(1)) {
    push @live, $m->{content} if $m->{type} eq 'message';
}
is(join(' ', @live), 'b4', 'then b4 live; b1 and e1 not again');

my @bad = ($a->grep_error_log(qr/\[(?:alert|crit|emerg)\]/),
           $b->grep_error_log(qr/\[(?:alert|crit|emerg)\]/));
ok(!@bad, 'no alert') or diag(join "\n", @bad);

$_->disconnect for $r, $u, $bob, $f;
