# Recent history (SPEC §2 chat_history, §4 join history/since, history
# request): what is replayed, in which order, "complete", and where the
# history frame sits among the other frames.  Two workers: the history
# lives in the shared zone.

use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Util qw(conn req wait_type);
use Time::HiRes ();

plan tests => 92;

my $t = Test::Chat::Nginx->new(
    http   => <<'_EOC_',
    chat_zone chat 8m;
    log_format chatpid '$arg_tag $pid';
_EOC_
    server => <<'_EOC_',
        listen 127.0.0.1:%%PORT_1%% reuseport;
        location = /chat  { chat chat; chat_user $arg_user; chat_history 5;
                            access_log %%SERVROOT%%/logs/pid.log chatpid; }
        location = /chatd { chat chat; chat_user $arg_user;
                            access_log %%SERVROOT%%/logs/pid.log chatpid; }
        location = /chat0 { chat chat; chat_user $arg_user; chat_history 0; }
        location = /chatk { chat chat; chat_user $arg_user; chat_history 2000; }
_EOC_
    workers => 2,
);

my @W = sort { $a <=> $b } $t->worker_pids;

# --- helpers -------------------------------------------------------------------


# $ws posts the contents to $room; returns the message objects as the
# sender received them, in order
sub post {
    my ($ws, $room, @contents) = @_;
    my @out;
    for my $c (@contents) {
        $ws->send_json({ type => 'send', room => $room, content => $c });
        my $m = $ws->recv_until(sub { $_[0]{type} eq 'message' && $_[0]{room} eq $room }, 3);
        my $a = wait_type($ws, 'ack');
        die "post $c: no message/ack: " . ($ws->error || '') unless $m && $a;
        push @out, $m;
    }
    return @out;
}

# join, then return (joined, next frame)
sub join_with {
    my ($ws, $room, %o) = @_;
    $ws->send_json({ type => 'join', room => $room, %o });
    my $j = $ws->recv_json(3);
    my $h = $ws->recv_json(3);
    return ($j, $h);
}

sub contents { [ map { $_->{content} } @{ $_[0] || [] } ] }

# --- chat_history 5, 8 messages --------------------------------------------------

my $ann = conn($t, 'ann', pid => $W[0]);
is(req($ann, { type => 'join', room => 'h' })->{type}, 'joined', 'ann joined h');
my @m = post($ann, 'h', map { "m$_" } 1 .. 8);
is(scalar @m, 8, '8 messages posted');

{
    my $bob = conn($t, 'bob', pid => $W[1]);
    my ($j, $h) = join_with($bob, 'h', history => 3);
    is_deeply($j, { type => 'joined', room => 'h', members => 2 }, 'history 3: joined comes first');
    is($h && $h->{type}, 'history', 'then the history frame');
    is($h && $h->{room}, 'h', 'history room');
    is_deeply($h && $h->{messages}, [ @m[5 .. 7] ], 'exactly the last 3 messages, oldest first, as message objects');
    ok($h && JSON::PP::is_bool($h->{complete}) && $h->{complete}, 'complete true');
    is(scalar(grep { $_->{type} eq 'message' } @{ $h->{messages} || [] }), 3, 'each M has type message');
    $bob->close;
}

{
    my $cat = conn($t, 'cat', pid => $W[0]);
    my ($j, $h) = join_with($cat, 'h', history => 10);
    is($j && $j->{type}, 'joined', 'history 10: joined');
    is_deeply($h && $h->{messages}, [ @m[3 .. 7] ], 'only the 5 kept (chat_history 5)');
    ok($h && JSON::PP::is_bool($h->{complete}) && !$h->{complete}, 'complete false: 3 were evicted');

    # the request form
    my $r = req($cat, { type => 'history', room => 'h', limit => 2 });
    is_deeply(contents($r->{messages}), [ 'm7', 'm8' ], 'history limit 2: the newest 2, oldest first');
    ok($r->{complete}, 'complete');
    $r = req($cat, { type => 'history', room => 'h', limit => 2, before => $m[6]{id} });
    is_deeply($r->{messages}, [ @m[4, 5] ], 'before m7, limit 2: m5, m6');
    ok($r->{complete}, 'complete');
    $r = req($cat, { type => 'history', room => 'h', limit => 2, before => $m[4]{id} });
    is_deeply(contents($r->{messages}), [ 'm4' ], 'before m5, limit 2: only m4 is left');
    ok(!$r->{complete}, 'complete false: m3 was evicted');
    $r = req($cat, { type => 'history', room => 'h', limit => 2, before => $m[3]{id} });
    is_deeply($r->{messages}, [], 'before the oldest kept: nothing');
    ok(!$r->{complete}, 'complete false');
    $r = req($cat, { type => 'history', room => 'h', limit => 3, before => $m[0]{id} });
    is_deeply($r->{messages}, [], 'before an evicted id: empty list');
    ok(!$r->{complete}, 'complete false');
    $r = req($cat, { type => 'history', room => 'h', limit => 3, before => '12345' });
    is_deeply([ $r->{type}, $r->{messages} ], [ 'history', [] ], 'before an unknown id: empty list');
    ok(JSON::PP::is_bool($r->{complete}) && !$r->{complete}, 'complete false');
    $r = req($cat, { type => 'history', room => 'h', limit => 3, before => 'not-an-id' });
    ok($r->{type} eq 'history' && !@{ $r->{messages} } && !$r->{complete}, 'before a non-numeric id: empty, incomplete');
    $r = req($cat, { type => 'history', room => 'h' });
    is_deeply($r->{messages}, [ @m[3 .. 7] ], 'no limit (default 50): all 5 kept');
    ok(!$r->{complete}, 'complete false');
    $r = req($cat, { type => 'history', room => 'h', limit => 5 });
    is_deeply(contents($r->{messages}), [ map { "m$_" } 4 .. 8 ], 'limit 5: 5');
    ok($r->{complete}, 'complete true: got all that was asked');

    # since
    ($j, $h) = join_with(conn($t, 'dan'), 'h', since => $m[4]{id});
    is($j && $j->{type}, 'joined', 'since m5: joined');
    is_deeply($h && $h->{messages}, [ @m[5 .. 7] ], 'since m5: m6, m7, m8');
    ok($h && $h->{complete}, 'complete true');

    ($j, $h) = join_with(conn($t, 'dan'), 'h', since => $m[3]{id});
    is_deeply(contents($h && $h->{messages}), [ map { "m$_" } 5 .. 8 ], 'since the oldest kept: the 4 after it');
    ok($h && $h->{complete}, 'complete true');

    ($j, $h) = join_with(conn($t, 'dan'), 'h', since => $m[7]{id});
    is_deeply([ $h && $h->{type}, $h && $h->{messages} ], [ 'history', [] ], 'since the newest: empty list');
    ok($h && $h->{complete}, 'complete true');

    ($j, $h) = join_with(conn($t, 'dan'), 'h', since => $m[1]{id});
    is($h && $h->{type}, 'history', 'since an evicted id: history');
    ok($h && JSON::PP::is_bool($h->{complete}) && !$h->{complete}, 'complete false');

    ($j, $h) = join_with(conn($t, 'dan'), 'h', since => '99999999999999999');
    ok($h && $h->{type} eq 'history' && !$h->{complete}, 'since an unknown id: complete false');

    ($j, $h) = join_with(conn($t, 'dan'), 'h', since => 'abc');
    ok($h && $h->{type} eq 'history' && !$h->{complete}, 'since a non-numeric id: complete false');
}

# --- a fresh room with 2 messages ------------------------------------------------

{
    my $eve = conn($t, 'eve');
    req($eve, { type => 'join', room => 'fresh' });
    my @f = post($eve, 'fresh', 'f1', 'f2');
    my ($j, $h) = join_with(conn($t, 'fay', pid => $W[1]), 'fresh', history => 10);
    is_deeply($j, { type => 'joined', room => 'fresh', members => 2 }, 'fresh room: joined');
    is_deeply($h && $h->{messages}, \@f, 'history 10 with 2 messages: both');
    ok($h && $h->{complete}, 'complete true: nothing was lost');

    my $r = req($eve, { type => 'history', room => 'fresh', before => $f[1]{id}, limit => 10 });
    is_deeply($r->{messages}, [ $f[0] ], 'before f2: f1');
    ok($r->{complete}, 'complete true: the beginning of the room');

    # an id of another room is unknown here
    ($j, $h) = join_with(conn($t, 'gus'), 'fresh', since => $m[6]{id});
    ok($h && !$h->{complete}, 'since an id of another room: complete false');

    # a room without messages
    ($j, $h) = join_with(conn($t, 'gus'), 'empty', history => 5);
    is_deeply([ $j->{type}, $h && $h->{type}, $h && $h->{messages} ], [ 'joined', 'history', [] ],
              'an empty room: empty history');
    ok($h && $h->{complete}, 'complete true');
}

# --- bad values ----------------------------------------------------------------------

{
    my $x = conn($t, 'xav');
    req($x, { type => 'join', room => 'h' });
    for my $case (
        [ 'join history -1',        { type => 'join', room => 'hb1', history => -1 } ],
        [ 'join history "3"',       { type => 'join', room => 'hb2', history => '3' } ],
        [ 'join history 1.5',       { type => 'join', room => 'hb3', history => 1.5 } ],
        [ 'join history null',      { type => 'join', room => 'hb4', history => undef } ],
        [ 'join since a number',    { type => 'join', room => 'hb5', since => 5 } ],
        [ 'history limit -1',       { type => 'history', room => 'h', limit => -1 } ],
        [ 'history limit "2"',      { type => 'history', room => 'h', limit => '2' } ],
        [ 'history before a number', { type => 'history', room => 'h', before => 5 } ],
    ) {
        my $r = req($x, { %{ $case->[1] }, ref => 'bad' });
        ok($r && $r->{type} eq 'error' && $r->{code} eq 'bad_request' && ($r->{ref} // '') eq 'bad',
           "$case->[0]: bad_request with the ref") or diag(explain $r);
    }
    my $w = req($x, { type => 'who', room => 'hb1' });
    is($w->{code}, 'not_member', 'a refused join did not join');
}

# --- chat_history 0 -----------------------------------------------------------------

{
    my $z = conn($t, 'zed', path => '/chat0');
    req($z, { type => 'join', room => 'nohist' });
    post($z, 'nohist', 'a', 'b', 'c');
    my ($j, $h) = join_with(conn($t, 'zoe', path => '/chat0'), 'nohist', history => 10);
    is_deeply([ $h && $h->{type}, $h && $h->{messages} ], [ 'history', [] ], 'chat_history 0: nothing kept');
    ok($h && !$h->{complete}, 'complete false: 3 messages are missing');
}

# --- the history frame is after joined and before any live message -------------------

{
    my $pump = conn($t, 'pump', path => '/chatd', pid => $W[0]);
    req($pump, { type => 'join', room => 'busy' });
    my $late = conn($t, 'late', path => '/chatd', pid => $W[1]);
    for my $round (1 .. 5) {
        my $room = "busy$round";
        req($pump, { type => 'join', room => $room });
        # rounds 4, 5: join with since the id of a message p0 posted first
        my %how = (history => 50);
        if ($round > 3) {
            my ($p0) = post($pump, $room, 'p0');
            %how = (since => $p0->{id});
        }
        # 10 sends in flight, the join lands somewhere among them
        $pump->send_json({ type => 'send', room => $room, content => "p$_" }) for 1 .. 5;
        $late->send_json({ type => 'join', room => $room, %how });
        $pump->send_json({ type => 'send', room => $room, content => "p$_" }) for 6 .. 10;
        my @frames;
        my $deadline = Time::HiRes::time() + 5;
        while (Time::HiRes::time() < $deadline) {
            my $f = $late->recv_json(3) or last;
            next if $f->{type} eq 'presence';
            push @frames, $f;
            last if $f->{type} eq 'message' && $f->{content} eq 'p10';
        }
        my @types = map { $_->{type} } @frames;
        is_deeply([ @types[0, 1] ], [ 'joined', 'history' ], "round $round (" . join('=', %how) . "): joined, then history");
        my @live = @frames[2 .. $#frames];
        is(scalar(grep { $_->{type} ne 'message' } @live), 0, "round $round: then only messages");
        my @all = (@{ $frames[1]{messages} || [] }, @live);
        note("round $round: " . scalar(@{ $frames[1]{messages} || [] }) . " from history, " . scalar(@live) . " live");
        is_deeply(contents(\@all), [ map { "p$_" } 1 .. 10 ],
                  "round $round: history + live = every message once, in order");
        ok($frames[1]{complete}, "round $round: complete");
        wait_type($pump, 'ack') for 1 .. 10;
        $pump->clear_skipped;
        req($late, { type => 'leave', room => $room });
    }
}

# --- limits: default 50 kept, at most 1000 replayed -----------------------------------

{
    my $d = conn($t, 'dee', path => '/chatd');
    req($d, { type => 'join', room => 'deflt' });
    my @d = post($d, 'deflt', map { "d$_" } 1 .. 60);
    my ($j, $h) = join_with(conn($t, 'dora', path => '/chatd'), 'deflt', history => 100);
    is_deeply(contents($h && $h->{messages}), [ map { "d$_" } 11 .. 60 ], 'default chat_history: the last 50 kept');
    ok($h && !$h->{complete}, 'complete false');

    # paging backwards through the 50
    my (@pages, $before);
    for (1 .. 4) {
        my $r = req($d, { type => 'history', room => 'deflt', limit => 20, defined $before ? (before => $before) : () });
        push @pages, [ contents($r->{messages}), $r->{complete} ? 1 : 0 ];
        last unless @{ $r->{messages} };
        $before = $r->{messages}[0]{id};
    }
    is_deeply(\@pages, [
        [ [ map { "d$_" } 41 .. 60 ], 1 ],
        [ [ map { "d$_" } 21 .. 40 ], 1 ],
        [ [ map { "d$_" } 11 .. 20 ], 0 ],
        [ [], 0 ],
    ], 'paging backwards with before: 20, 20, 10 (incomplete), then nothing');
}

{
    my $k = conn($t, 'kay', path => '/chatk');
    req($k, { type => 'join', room => 'kilo' });
    my $n = 1100;
    my $sent = 0;
    my $acked = 0;
    while ($sent < $n) {
        my $batch = ($n - $sent) < 100 ? $n - $sent : 100;
        $k->send_json({ type => 'send', room => 'kilo', content => 'k' . ($sent + $_) }) for 1 .. $batch;
        $sent += $batch;
        while ($acked < $sent) {
            my $f = $k->recv_json(3) or last;
            $acked++ if $f->{type} eq 'ack';
        }
    }
    is($acked, $n, "$n messages posted");

    my ($j, $h) = join_with(conn($t, 'kim', path => '/chatk'), 'kilo', history => 5000);
    is(scalar @{ $h && $h->{messages} || [] }, 1000, 'join history 5000: at most 1000 replayed');
    is($h && $h->{messages}[-1]{content}, "k$n", 'the newest last');
    is($h && $h->{messages}[0]{content}, 'k' . ($n - 999), 'the 1000 newest');

    my $r = req($k, { type => 'history', room => 'kilo', limit => 5000 });
    is(scalar @{ $r->{messages} || [] }, 1000, 'history limit 5000: at most 1000');
    is($r->{messages}[-1]{content}, "k$n", 'newest last');

    $r = req($k, { type => 'history', room => 'kilo' });
    is(scalar @{ $r->{messages} || [] }, 50, 'history without limit: 50');
    is($r->{messages}[-1]{content}, "k$n", 'the newest 50');
    ok($r->{complete}, 'complete true: got the 50 asked for');

    ($j, $h) = join_with(conn($t, 'kim', path => '/chatk'), 'kilo', history => 1000);
    is(scalar @{ $h && $h->{messages} || [] }, 1000, 'join history 1000: 1000');
}

{
    my @bad = grep { /\[(?:alert|crit|emerg)\]|exited on signal/ } split /\n/, $t->error_log;
    is(scalar @bad, 0, 'no alerts or crashed workers in error.log') or diag(join "\n", @bad);
}
