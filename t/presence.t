# Presence (SPEC §4): presence events go to the other users of a room, once
# per user (first connection joins, last connection leaves), across
# workers; who lists each user once; joined counts distinct users.
#
# Two workers.  A second listen socket with reuseport spreads connections
# over both workers; the access log (with $pid) tells which worker took a
# connection, so each connection is placed on the worker the test wants.
#
# "Nothing arrived" checks use a barrier rather than a sleep: all events go
# through the zone's bus in one order, so once a member has received a
# message posted after an event, that event (had it been sent to it) would
# already have been received.

use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Util qw(status conn req wait_type);
use Time::HiRes ();

plan tests => 55;

my $t = Test::Chat::Nginx->new(
    http   => <<'_EOC_',
    chat_zone chat 1m;
    log_format chatpid '$arg_tag $pid';
_EOC_
    server => <<'_EOC_',
        listen 127.0.0.1:%%PORT_1%% reuseport;
        location = /chat {
            chat chat;
            chat_user $arg_user;
            access_log %%SERVROOT%%/logs/pid.log chatpid;
        }
        location = /status { chat_status chat; }
_EOC_
    workers => 2,
);

my @W = sort { $a <=> $b } $t->worker_pids;
is(scalar @W, 2, 'two workers');

# --- helpers -----------------------------------------------------------------


# $sender posts $tag to $room; each of @members receives it; returns, for
# each member, the presence events it got (and no check consumed) before it
sub barrier {
    my ($sender, $room, $tag, @members) = @_;
    $sender->send_json({ type => 'send', room => $room, content => $tag });
    my @out;
    for my $ws (@members) {
        my $m = wait_type($ws, 'message', sub { $_[0]{content} eq $tag });
        diag("barrier $tag not received: " . ($ws->error || 'timeout')) unless $m;
        push @out, [ map { "$_->{user}:$_->{event}" } grep { $_->{type} eq 'presence' } @{ $ws->skipped } ];
        $ws->clear_skipped;
    }
    wait_type($sender, 'ack');
    return @out;
}

sub wait_connections {
    my $n = shift;
    my $deadline = Time::HiRes::time() + 3;
    while (Time::HiRes::time() < $deadline) {
        return 1 if (status($t, '/status')->{connections} // -1) == $n;
        Time::HiRes::sleep(0.02);
    }
    return 0;
}

sub who_set {
    my ($ws, $room) = @_;
    my $w = req($ws, { type => 'who', room => $room });
    return undef unless $w && $w->{type} eq 'who';
    return [ sort @{ $w->{users} } ];
}

# --- users on both workers --------------------------------------------------------

my $ann  = conn($t, 'ann', pid => $W[0]);
my $bob  = conn($t, 'bob', pid => $W[1]);
my $bob2 = conn($t, 'bob', pid => $W[0]);
my $cat  = conn($t, 'cat', pid => $W[1]);
my $out  = conn($t, 'out', pid => $W[0]);
ok(wait_connections(5), '5 connections');

is_deeply(req($ann, { type => 'join', room => 'hall' }), { type => 'joined', room => 'hall', members => 1 },
          'ann (worker 1) joined, members 1');
is_deeply(req($bob, { type => 'join', room => 'hall' }), { type => 'joined', room => 'hall', members => 2 },
          'bob (worker 2) joined, members 2');

my $p = wait_type($ann, 'presence');
is_deeply($p, { type => 'presence', room => 'hall', user => 'bob', event => 'join' },
          'ann got bob\'s join from the other worker');

my ($bob_sees) = barrier($ann, 'hall', 'sync1', $bob);
is_deeply($bob_sees, [], 'bob got no presence for his own join');

# bob's second connection, on the other worker
is_deeply(req($bob2, { type => 'join', room => 'hall' }), { type => 'joined', room => 'hall', members => 2 },
          'bob\'s second connection joined: members still 2 (distinct users)');
my ($ann_sees, $bob1_sees) = barrier($bob2, 'hall', 'sync2', $ann, $bob);
is_deeply($ann_sees, [], 'no presence to ann for bob\'s second connection');
is_deeply($bob1_sees, [], 'no presence to bob\'s first connection');
is_deeply(who_set($ann, 'hall'), [ 'ann', 'bob' ], 'who (worker 1): bob listed once');
is_deeply(who_set($bob, 'hall'), [ 'ann', 'bob' ], 'who (worker 2): same');

# cat joins: every other user's connections get it, cat itself not
is_deeply(req($cat, { type => 'join', room => 'hall' }), { type => 'joined', room => 'hall', members => 3 },
          'cat joined, members 3');
{
    my @seen = barrier($ann, 'hall', 'sync3', $ann, $bob, $bob2, $cat);
    is_deeply($seen[0], [ 'cat:join' ], 'ann got cat:join once');
    is_deeply($seen[1], [ 'cat:join' ], 'bob (worker 2) got cat:join once');
    is_deeply($seen[2], [ 'cat:join' ], 'bob (worker 1) got cat:join once');
    is_deeply($seen[3], [], 'cat got no presence (not for itself, not for those already there)');
}
is_deeply(who_set($cat, 'hall'), [ 'ann', 'bob', 'cat' ], 'who: ann, bob, cat');
{
    my $w = req($ann, { type => 'who', room => 'hall' });
    is(scalar @{ $w->{users} || [] }, 3, 'who lists 3 entries (no duplicates)');
}

# somebody outside the room hears nothing
is(req($out, { type => 'join', room => 'side' })->{type}, 'joined', 'out joined another room');
is(req($ann, { type => 'join', room => 'side' })->{type}, 'joined', 'ann joined it too');

# closing one of bob's two connections: no leave
{
    my ($code) = $bob2->close(code => 1000);
    ok(wait_connections(4), 'bob\'s second connection closed');
    my @seen = barrier($cat, 'hall', 'sync4', $ann, $cat, $bob);
    is_deeply($seen[0], [], 'no leave to ann while bob has a connection');
    is_deeply($seen[1], [], 'no leave to cat');
    is_deeply($seen[2], [], 'nothing to bob\'s remaining connection');
    is_deeply(who_set($ann, 'hall'), [ 'ann', 'bob', 'cat' ], 'bob still listed');
}

# closing bob's last connection: leave
{
    $bob->close(code => 1000);
    my $l = wait_type($ann, 'presence');
    is_deeply($l, { type => 'presence', room => 'hall', user => 'bob', event => 'leave' },
              'ann got bob:leave after his last connection closed');
    my $l2 = wait_type($cat, 'presence');
    is_deeply($l2, { type => 'presence', room => 'hall', user => 'bob', event => 'leave' },
              'cat (other worker) got it too');
    my @seen = barrier($ann, 'hall', 'sync5', $ann, $cat);
    is_deeply(\@seen, [ [], [] ], 'exactly one leave each');
    is_deeply(who_set($ann, 'hall'), [ 'ann', 'cat' ], 'who without bob');
}

# a leave request also produces a leave presence; the leaver gets none
{
    is_deeply(req($cat, { type => 'leave', room => 'hall' }), { type => 'left', room => 'hall' }, 'cat left');
    my $l = wait_type($ann, 'presence');
    is_deeply($l, { type => 'presence', room => 'hall', user => 'cat', event => 'leave' },
              'ann got cat:leave');
    is_deeply(who_set($ann, 'hall'), [ 'ann' ], 'who: only ann');
    my @late = grep { $_->{type} eq 'presence' } $cat->drain_json(0.3);
    is(scalar @late, 0, 'cat got no presence for its own leave');
}

{
    my ($outs) = barrier($ann, 'side', 'sync6', $out);
    is_deeply($outs, [ 'ann:join' ], 'a user outside hall got none of hall\'s presence');
}

# two connections of one user: a leave request from one of them is not a
# leave of the user; the other one leaving is
{
    my $dan  = conn($t, 'dan', pid => $W[1]);
    my $dan2 = conn($t, 'dan', pid => $W[0]);
    is_deeply(req($dan, { type => 'join', room => 'hall' }), { type => 'joined', room => 'hall', members => 2 },
              'dan joined');
    is_deeply(wait_type($ann, 'presence'), { type => 'presence', room => 'hall', user => 'dan', event => 'join' },
              'ann got dan:join');
    is(req($dan2, { type => 'join', room => 'hall' })->{members}, 2, 'dan\'s second connection: members 2');
    is(req($dan, { type => 'leave', room => 'hall' })->{type}, 'left', 'dan\'s first connection left');
    my ($seen) = barrier($dan2, 'hall', 'sync7', $ann);
    is_deeply($seen, [], 'no presence: dan is still in the room through his other connection');
    is_deeply(who_set($ann, 'hall'), [ 'ann', 'dan' ], 'who: ann, dan');
    is(req($dan2, { type => 'leave', room => 'hall' })->{type}, 'left', 'dan\'s second connection left');
    is_deeply(wait_type($ann, 'presence'), { type => 'presence', room => 'hall', user => 'dan', event => 'leave' },
              'now ann got dan:leave');
    my @late = grep { $_->{type} eq 'presence' } $dan->drain_json(0.2);
    is(scalar @late, 0, 'dan\'s connections get no presence about dan');
    $dan->close;
    $dan2->close;
}

# many connections of one user spread over both workers, then all closed
{
    my @eve = map { conn($t, 'eve', pid => $W[ $_ % 2 ]) } 0 .. 3;
    my @members;
    for my $e (@eve) {
        my $j = req($e, { type => 'join', room => 'hall' });
        push @members, $j->{members};
    }
    is_deeply(\@members, [ 2, 2, 2, 2 ], 'four connections of eve: members stays 2');
    is_deeply(wait_type($ann, 'presence'), { type => 'presence', room => 'hall', user => 'eve', event => 'join' },
              'one eve:join');
    my ($seen) = barrier($eve[3], 'hall', 'sync8', $ann);
    is_deeply($seen, [], 'and no more');
    my @eve_seen = barrier($ann, 'hall', 'sync9', @eve);
    is_deeply(\@eve_seen, [ [], [], [], [] ], 'no eve connection got presence about eve');
    is_deeply(who_set($ann, 'hall'), [ 'ann', 'eve' ], 'who: eve once');

    $eve[$_]->close for 0 .. 2;
    ok(wait_connections(4), 'three of eve\'s connections closed');
    my ($seen2) = barrier($ann, 'hall', 'sync10', $ann);
    is_deeply($seen2, [], 'no leave while one remains');
    $eve[3]->disconnect;      # abrupt close, no close handshake
    is_deeply(wait_type($ann, 'presence'), { type => 'presence', room => 'hall', user => 'eve', event => 'leave' },
              'eve:leave once the last connection is gone (TCP close)');
    my ($seen3) = barrier($ann, 'hall', 'sync11', $ann);
    is_deeply($seen3, [], 'a single leave');
}

ok(wait_connections(3), 'back to ann, cat, out');
is(status($t, '/status')->{users}, 3, 'status users 3');
{
    my @bad = grep { /\[(?:alert|crit|emerg)\]|exited on signal/ } split /\n/, $t->error_log;
    is(scalar @bad, 0, 'no alerts or crashed workers in error.log') or diag(join "\n", @bad);
}
