# The order a server's members saw is kept across a restart of that
# server (SPEC §4: every message of a room goes to every member "in the
# same order for all members of one server"; issue 12's soak found it
# broken after a server stopped in or just after a Redis outage).
#
# Ids of different servers are ordered by their senders' clocks, not by
# when they reached a server.  Another server's message that reached A
# late (its relay held it through a Redis outage), or never before A
# stopped, stands after what A's members had before it.  After A restarts,
# its zone (where that order lived) is new and its resumes are answered
# from PostgreSQL: a member away since before both messages gets them in
# id order, the other server's first, where a member that was there had
# them the other way round.
#
# Two real servers A and B (one worker each) relaying through one Redis,
# storing in one PostgreSQL; a1 and a2 on A, b1 on B; one room per case.
#
# 1. "never came before the stop": Redis stops; b1 sends m1 (stored on B,
#    held in B's relay queue); a1 sends o1 a little later (numbered after
#    m1); A stops, Redis comes back (B publishes m1 to nobody of A), A
#    starts again.  a1, resuming after o1, gets m1 (it never had it); a2,
#    away since m0, gets o1 before m1: the order a1 saw.
# 2. The control, "came in time": no outage, m1 reaches A's members before
#    a1 sends o1; after A's restart a2 gets m1 before o1 (id order and A's
#    order agree).
# 3. "came late before the stop": as 1, but Redis comes back before A
#    stops: m1 reaches a1 late, after o1; after A's restart a2 gets o1
#    before m1.
#
# The zone's order is lost at a stop; what keeps it is in each message's
# row: prior, the highest number of another server's message its server
# had delivered in the room when it came (ngx_chat_remote_room_prior()),
# and the upper half of its id's tag, the same on every start of that
# server (ngx_chat_shm_lineage()).  Storage's rows are given in that order
# (ngx_chat_proto_lineage()).  Without them (ab72d9a) cases 1 and 3 fail:
# the reply is in id order (m1 o1).

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
use Test::Chat::Relay qw(member contents room_channel announce publish
                         store_row);

plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
plan skip_all => 'no PostgreSQL server binaries'
    unless Test::Chat::Pg->available;

plan tests => 47;

my $redis = Test::Chat::Redis->start;
my $pg = Test::Chat::Pg->start;

my %conf = (
    http => "chat_zone chat 1m;\n    chat_redis " . $redis->url . ";\n    "
            . $pg->directive,
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 10;
        }
        location = /chat/status {
            chat_status chat;
        }
_EOC_
    workers => 1,
);

my $A = Test::Chat::Nginx->new(%conf);
my $B = Test::Chat::Nginx->new(%conf);

sub relay_is {
    my ($t, $want, $secs) = @_;
    return poll($secs // 10, sub { (status($t)->{redis} // '') eq $want });
}

# $t's PostgreSQL connections (stores, reads) up since log mark $mark
sub pg_up {
    my ($t, $mark) = @_;
    return poll(15, sub {
        $t->grep_error_log(qr/chat postgres: .* is up/, since => $mark) >= 2
    });
}

ok(pg_up($A, 0) && pg_up($B, 0), 'both servers: storage up');
ok(relay_is($A, 'up') && relay_is($B, 'up'), 'both servers: relay up');

# a member: its connection, and every message it was given, in order (live
# and in history replies), after what $before (its connection before) was
sub join_as {
    my ($t, $user, $room, %join) = @_;
    my $before = delete $join{before};
    my $ws = member($t, $user, $room, %join);
    my $m = { name => $user, room => $room, ws => $ws,
              seen => [ $before ? @{ $before->{seen} } : () ] };
    push @{ $m->{seen} }, grep { $_->{type} eq 'message' } @{ $ws->skipped };
    @{ $ws->skipped } = ();
    return $m;
}

# $m's frames until one $pred accepts ($secs at most): that one, or undef
sub read_until {
    my ($m, $pred, $secs) = @_;
    my $end = now() + $secs;
    while ((my $left = $end - now()) > 0) {
        my $f = $m->{ws}->recv_json(timeout => $left) or last;
        push @{ $m->{seen} }, $f if $f->{type} eq 'message';
        push @{ $m->{seen} }, @{ $f->{messages} // [] }
            if $f->{type} eq 'history';
        return $f if $pred->($f);
    }
    return undef;
}

# $m got message $content live (already, or within $secs)
sub got_live {
    my ($m, $content, $secs) = @_;
    my $is = sub { $_[0]{type} eq 'message' && $_[0]{content} eq $content };
    return (grep { $is->($_) } @{ $m->{seen} })[0]
           // read_until($m, $is, $secs // 3);
}

# $m sends $content: its id once acked (and had live by $m), else undef
sub send_acked {
    my ($m, $content) = @_;
    $m->{ws}->send_json({ type => 'send', room => $m->{room},
                          content => $content });
    my $ack = read_until($m, sub { $_[0]{type} eq 'ack'
                                   || $_[0]{type} eq 'error' }, 5);
    return undef unless $ack && $ack->{type} eq 'ack';
    return got_live($m, $content) ? $ack->{id} : undef;
}

# $m's history reply (5 s at most), then what comes live within a second
sub reply_of {
    my ($m) = @_;
    my $h = read_until($m, sub { $_[0]{type} eq 'history' }, 5);
    note("$m->{room}: $m->{name}'s reply: "
         . join(' ', map { "$_->{content}($_->{id})" }
                     @{ $h ? $h->{messages} : [] }));
    read_until($m, sub { 0 }, 1);
    return $h;
}

# the contents of what $m was given, in order, each id once (a client
# drops what it has by id)
sub seq {
    my (@ms) = @_;
    my (%had, @c);
    for my $x (map { @{ $_->{seen} } } @ms) {
        push @c, $x->{content} unless $had{ $x->{id} }++;
    }
    return join ' ', @c;
}

sub num { my ($id) = @_; return ($id // '') =~ /^(\d+)-/ ? $1 : 0 }

# both servers relay room $room
sub both_follow {
    my ($room) = @_;
    my $ch = room_channel($redis, $room);
    return poll(5, sub {
        my @r = $redis->cli('PUBSUB', 'NUMSUB', $ch);
        ($r[1] // 0) == 2;
    });
}

# A stops (master and worker gone: the zone goes with them) and starts
# again, same configuration file and prefix; $between runs while it is
# stopped
sub restart_a {
    my ($between) = @_;
    my $mark = $A->log_mark;
    my $stopped = $A->stop;
    $between->() if $between;
    my $started = $A->start;
    diag("A did not start again: $A->{start_output}") unless $started;
    return $stopped && $started && pg_up($A, $mark) && relay_is($A, 'up');
}

# the room's members and m0 before each case: a1, a2 on A and b1 on B
# joined, m0 from b1 reached a1 and a2 live, a2 left
sub opening {
    my ($room) = @_;
    my %m = (a1 => join_as($A, 'a1', $room), a2 => join_as($A, 'a2', $room),
             b1 => join_as($B, 'b1', $room));
    my $ok = both_follow($room);
    $m{m0} = send_acked($m{b1}, 'm0');
    $ok &&= $m{m0} && got_live($m{a1}, 'm0') && got_live($m{a2}, 'm0');
    $m{a2}{ws}->disconnect;
    ok($ok, "$room: a1, a2 (A) and b1 (B) joined; m0 from b1 reached a1 "
       . 'and a2; a2 left');
    return %m;
}

sub redis_down {
    $redis->stop;
    return relay_is($A, 'down', 5) && relay_is($B, 'down', 5);
}

# --- 1. m1 never reached A before it stopped ---------------------------------

{
    my %m = opening('r1');

    ok(redis_down(), 'r1: Redis stopped, both relays down');
    my $m1 = send_acked($m{b1}, 'm1');
    ok($m1, 'r1: b1 sent m1, acked (stored on B)');
    Time::HiRes::sleep(0.05);
    my $o1 = send_acked($m{a1}, 'o1');
    ok($o1, 'r1: a1 sent o1, acked, had live');
    ok(num($m1) < num($o1), 'r1: m1 numbered before o1')
        or diag("m1 $m1, o1 $o1");
    ok(!got_live($m{a1}, 'm1', 0.5), 'r1: a1 has not got m1');

    # Redis back while A is stopped: B publishes m1, to nobody of A
    ok(restart_a(sub {
           $redis->start_again;
           relay_is($B, 'up');
           Time::HiRes::sleep(0.5);
       }), 'r1: A stopped, Redis back, A started again');

    my $a1 = join_as($A, 'a1', 'r1', since => $o1,
                     before => $m{a1});
    my $h1 = reply_of($a1);
    ok($h1, "r1: a1's resume after o1 is answered");
    like(' ' . contents($h1) . ' ', qr/ m1 /,
         "r1: a1's reply has m1, which it never had")
        or diag('a1 reply: ' . contents($h1));

    my $a2 = join_as($A, 'a2', 'r1', since => $m{m0},
                     before => $m{a2});
    my $h2 = reply_of($a2);
    ok($h2, "r1: a2's resume after m0 is answered");
    is(contents($h2), 'o1 m1',
       "r1: a2's reply: o1 before m1, the order a1 saw (A had m1 only "
       . 'after o1)');
    is(seq($a1), 'm0 o1 m1', 'r1: a1 saw m0 o1 m1 in all');
    is(seq($a2), seq($a1), 'r1: a2 saw what a1 saw, in its order');

    $_->{ws}->disconnect for $a1, $a2, $m{a1}, $m{b1};
}

# --- 2. control: m1 reached A's members before o1 was sent -------------------

{
    my %m = opening('r2');

    my $m1 = send_acked($m{b1}, 'm1');
    ok($m1, 'r2: b1 sent m1, acked');
    ok(got_live($m{a1}, 'm1'), 'r2: a1 got m1 live');
    # a few ms on: in the same millisecond the two ids would be ordered
    # by their servers' tags, not by A's order
    Time::HiRes::sleep(0.05);
    my $o1 = send_acked($m{a1}, 'o1');
    ok($o1, 'r2: then a1 sent o1, acked, had live');
    ok(num($m1) < num($o1), 'r2: m1 numbered before o1')
        or diag("m1 $m1, o1 $o1");

    ok(restart_a(), 'r2: A stopped and started again');

    my $a2 = join_as($A, 'a2', 'r2', since => $m{m0},
                     before => $m{a2});
    my $h2 = reply_of($a2);
    ok($h2, "r2: a2's resume after m0 is answered");
    is(contents($h2), 'm1 o1',
       "r2: a2's reply: m1 before o1, the order a1 saw");
    is(seq($m{a1}), 'm0 m1 o1', 'r2: a1 saw m0 m1 o1');
    is(seq($a2), seq($m{a1}), 'r2: a2 saw what a1 saw, in its order');

    $_->{ws}->disconnect for $a2, $m{a1}, $m{b1};
}

# --- 3. m1 reached A late, after o1, before A stopped ------------------------

{
    my %m = opening('r3');

    ok(redis_down(), 'r3: Redis stopped, both relays down');
    my $m1 = send_acked($m{b1}, 'm1');
    ok($m1, 'r3: b1 sent m1, acked (stored on B)');
    Time::HiRes::sleep(0.05);
    my $o1 = send_acked($m{a1}, 'o1');
    ok($o1, 'r3: a1 sent o1, acked, had live');
    ok(num($m1) < num($o1), 'r3: m1 numbered before o1')
        or diag("m1 $m1, o1 $o1");

    # Redis back: B's relay publishes m1, which reaches a1 late
    ok($redis->start_again && relay_is($A, 'up', 15)
       && relay_is($B, 'up', 15), 'r3: Redis back, both relays up');
    ok(got_live($m{a1}, 'm1', 15), 'r3: a1 got m1 live, late');
    is(seq($m{a1}), 'm0 o1 m1', 'r3: a1 saw m0 o1 m1');

    ok(restart_a(), 'r3: A stopped and started again');

    my $a2 = join_as($A, 'a2', 'r3', since => $m{m0},
                     before => $m{a2});
    my $h2 = reply_of($a2);
    ok($h2, "r3: a2's resume after m0 is answered");
    is(contents($h2), 'o1 m1',
       "r3: a2's reply: o1 before m1, the order a1 saw (m1 came late)");
    is(seq($a2), seq($m{a1}), 'r3: a2 saw what a1 saw, in its order');

    $_->{ws}->disconnect for $a2, $m{a1}, $m{b1};
}

# --- 4. a hole: f1 skipped while A's relay was away, f2 came, then o1 -------
#
# A resubscription (Redis back) opens a gap in what a server's relay has
# had from a sender: its messages meanwhile come with its republish or
# the catch-up from storage a few seconds later.  f1 is made-up server
# F's (it never answers the republish request); f2 comes live, then o1 is
# sent with f1 still missing here, and A stops before the catch-up: o1's
# prior is above f1, its holes hold it (the soak, seed 11: a reload, then
# a stop 2.6 s later).  Without the holes, a2 gets f1 before o1.

{
    my $SID = '00000000feedbeef';
    my $TAG = '0000feedbeef';
    my $fid = sub { sprintf('%d-%s', int(now() * 1000) * 1000, $TAG) };

    my %m = (a1 => join_as($A, 'a1', 'r4'), a2 => join_as($A, 'a2', 'r4'));
    my $ch = room_channel($redis, 'r4');

    announce($redis, $SID);
    my $f0 = $fid->();
    store_row($pg, $f0, 'r4', 'eve', 'f0');
    publish($redis, $ch, $SID, 'M', $f0, 'r4', 'f0');
    ok(got_live($m{a1}, 'f0') && got_live($m{a2}, 'f0'),
       'r4: f0 of server F reached a1 and a2 live');
    $m{a2}{ws}->disconnect;

    $redis->stop;
    relay_is($A, 'down', 5);
    ok($redis->start_again && relay_is($A, 'up', 15)
       && poll(5, sub { (($redis->cli('PUBSUB', 'NUMSUB', $ch))[1] // 0)
                        == 1 }),
       'r4: Redis restarted, A subscribed again (a gap opened for F)');

    Time::HiRes::sleep(0.05);
    my $f1 = $fid->();
    store_row($pg, $f1, 'r4', 'eve', 'f1');
    Time::HiRes::sleep(0.05);
    announce($redis, $SID);
    my $f2 = $fid->();
    store_row($pg, $f2, 'r4', 'eve', 'f2');
    publish($redis, $ch, $SID, 'M', $f2, 'r4', 'f2');
    ok(got_live($m{a1}, 'f2'), 'r4: f2 reached a1 live; f1 (stored) did not');
    Time::HiRes::sleep(0.05);
    my $o1 = send_acked($m{a1}, 'o1');
    ok($o1 && num($f2) < num($o1), 'r4: a1 sent o1, numbered after f2');
    is(seq($m{a1}), 'f0 f2 o1', 'r4: a1 saw f0 f2 o1');

    ok(restart_a(), 'r4: A stopped (before its catch-up) and started again');

    my $a2 = join_as($A, 'a2', 'r4', since => $f0, before => $m{a2});
    my $h2 = reply_of($a2);
    is(contents($h2), 'f2 o1 f1',
       "r4: a2's reply: f2 o1, then f1, which A never had before o1");

    my $a1 = join_as($A, 'a1', 'r4', since => $o1, before => $m{a1});
    my $h1 = reply_of($a1);
    like(' ' . contents($h1) . ' ', qr/ f1 /,
         "r4: a1's reply has f1, which it never had")
        or diag('a1 reply: ' . contents($h1));
    is(seq($a2), seq($a1), 'r4: a2 saw what a1 saw, in its order');

    $_->{ws}->disconnect for $a1, $a2, $m{a1};
}

my @bad = ($A->grep_error_log(qr/\[(?:alert|crit|emerg)\]/),
           $B->grep_error_log(qr/\[(?:alert|crit|emerg)\]/));
ok(!@bad, 'no alert') or diag(join "\n", @bad);
