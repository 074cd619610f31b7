# A history reply merged from PostgreSQL rows and the ring (SPEC §4):
# oldest first, no duplicate, exactly what was asked for when it says
# "complete": true, also when messages are committed while the read waits
# (fuzz/repro's store-newer-rows, store-join-held-rows, store-since-newer).
#
# The read is made to wait deterministically: the backend of the worker's
# reads connection is stopped (SIGSTOP) while the messages are sent and
# committed on the stores connection, then continued; its query takes its
# snapshot only then, so it sees them.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();
use Test::Chat::Nginx;
use Test::Chat::Pg;

plan skip_all => 'no PostgreSQL server binaries (Test::Chat::Pg->available)'
    unless Test::Chat::Pg->available;

plan tests => 17;

sub now { Time::HiRes::time() }

my $pg = Test::Chat::Pg->start;

my $stopped;    # a backend we stopped: continued whatever happens
END { kill 'CONT', $stopped if $stopped }

sub server {
    my $t = Test::Chat::Nginx->new(workers => 1,
        http => "chat_zone chat 4m;\n    " . $pg->directive,
        server => <<'_EOC_');
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 3;
            chat_request_rate off;
        }
_EOC_

    $pg->wait_up($t, 2);

    return $t;
}

sub next_of {
    my ($ws, $type) = @_;
    for (1 .. 50) {
        my $m = $ws->recv_json(5) or return undef;
        return $m if $m->{type} eq $type;
    }
    return undef;
}

sub client {
    my ($t, $user, $room, %o) = @_;
    my $ws = $t->ws(path => "/chat?user=$user");
    return undef unless $ws->ok;
    $ws->recv_json(3);
    $ws->send_json({ type => 'join', room => $room, %o });
    return next_of($ws, 'joined') ? $ws : undef;
}

# sends, and waits for the acks (with storage: after the COMMIT);
# returns the ids
sub send_acked {
    my ($ws, $room, @contents) = @_;
    my (%id, $n);
    $ws->send_json({ type => 'send', room => $room, content => $_,
                     ref => $_ }) for @contents;
    for (1 .. 100) {
        my $m = $ws->recv_json(5) or last;
        next unless $m->{type} eq 'ack';
        $id{ $m->{ref} } = $m->{id};
        last if ++$n == @contents;
    }
    return map { $id{$_} } @contents;
}

sub contents {
    my ($h) = @_;
    return 'no reply' unless $h;
    return join ' ', map { $_->{content} } @{ $h->{messages} || [] };
}

my $t = server();

my $alice = client($t, 'alice', 'r');
my $bob = client($t, 'bob', 'r');
ok($alice && $bob, 'alice and bob joined');

my @ids = send_acked($alice, 'r', map { "m$_" } 1 .. 6);
is(scalar(grep { defined } @ids), 6, 'm1 .. m6 stored');

# the ring has m4 .. m6: limit 5 is read from storage

$bob->send_json({ type => 'history', room => 'r', limit => 5 });
my $h = next_of($bob, 'history');
is(contents($h), 'm2 m3 m4 m5 m6', 'history 5 from storage');

my @pid = $pg->psql(q{SELECT pid FROM pg_stat_activity WHERE usename = 'chat'
                      AND (query LIKE 'SELECT id, user_id%'
                           OR query LIKE 'WITH s AS%')});
is(scalar @pid, 1, 'the backend of the reads connection')
    or BAIL_OUT("no reads backend: @pid");
my $reads = $pid[0];

sub stop_reads { kill 'STOP', $reads; $stopped = $reads }
sub cont_reads { kill 'CONT', $reads; $stopped = undef }

# bytes waiting in the (stopped) backend's TCP socket: the query sent
sub queued {
    my %inode;
    for my $fd (glob "/proc/$reads/fd/*") {
        my $l = readlink($fd) // next;
        $inode{$1} = 1 if $l =~ /^socket:\[(\d+)\]$/;
    }
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        while (<$fh>) {
            my @c = split;
            next unless @c > 9 && $inode{ $c[9] };
            my (undef, $rx) = split /:/, $c[4];
            return hex $rx;
        }
    }
    return 0;
}

# until the read's query waits at the stopped backend (5 s at most)
sub wait_queued {
    my $deadline = now() + 5;
    Time::HiRes::sleep(0.02) until queued() || now() > $deadline;
    return queued() > 0;
}

# store-newer-rows: a history request whose read waits while m7, m8 are
# committed; the ring was copied when it was made (m4 .. m6).  The old
# code put the rows the ring copy lacked first: m7 m8 m4 m5 m6.

stop_reads();
$bob->send_json({ type => 'history', room => 'r', limit => 5 });
ok(wait_queued(), 'the read waits at PostgreSQL');
send_acked($alice, 'r', 'm7', 'm8');
cont_reads();

$h = next_of($bob, 'history');
is(contents($h), 'm2 m3 m4 m5 m6',
   'newer rows: the 5 newest when asked, oldest first');
ok($h && $h->{complete}, 'and complete');

# store-join-held-rows: a join with history 4 whose read waits while m9,
# m10 are sent (held for carol: they come live) and committed; storage's
# 4 newest are m7 .. m10.  The old code dropped the held rows and said
# complete with 3 messages (m6 m7 m8).

stop_reads();
my $carol = $t->ws(path => '/chat?user=carol');
$carol->recv_json(3);
$carol->send_json({ type => 'join', room => 'r', history => 4 });
ok(next_of($carol, 'joined'), 'carol joined with history 4');
ok(wait_queued(), 'her read waits at PostgreSQL');
send_acked($alice, 'r', 'm9', 'm10');
cont_reads();

my @got;
for (1 .. 20) {
    my $m = $carol->recv_json(5) or last;
    push @got, $m if $m->{type} eq 'history' || $m->{type} eq 'message';
    last if @got == 3;
}
is($got[0] && $got[0]{type}, 'history', 'the history reply comes first');
is(contents($got[0]), 'm5 m6 m7 m8',
   'held rows: the 4 newest before the join');
ok($got[0] && $got[0]{complete}, 'and complete');
is(join(' ', map { $_->{content} } @got[1 .. $#got]), 'm9 m10',
   'then m9, m10 live');

# store-since-newer: another server on the same PostgreSQL (same zone
# name, no Redis) stores x1 after every message of this one's ring; a
# join here with since x1 (not in the ring: storage is asked) gets
# nothing.  The old code merged the ring's m8 m9 m10 (older than x1), with
# "complete": true.

my $t2 = server();
my $dave = client($t2, 'dave', 'r');
Time::HiRes::sleep(0.05);
my ($x1) = send_acked($dave, 'r', 'x1');
ok($x1, 'x1 stored by the other server');

my $erin = $t->ws(path => '/chat?user=erin');
$erin->recv_json(3);
$erin->send_json({ type => 'join', room => 'r', since => $x1 });
$h = next_of($erin, 'history');
is(contents($h), '', 'since newer than the ring: nothing');
ok($h && $h->{complete}, 'and complete');

# since m5 on the other server, whose ring has x1 only: the stored rows
# after m5 and its ring, in order, once each

my $fred = $t2->ws(path => '/chat?user=fred');
$fred->recv_json(3);
$fred->send_json({ type => 'join', room => 'r', since => $ids[4] });
$h = next_of($fred, 'history');
is(contents($h), 'm6 m7 m8 m9 m10 x1',
   'since m5 on the other server: stored rows and its ring, in order');
