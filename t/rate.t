# chat_rate (SPEC §2, §4 rate_limited): per user, shared by all workers,
# counted like limit_req nodelay: 1+burst sends at once, then N per second;
# a refused send is answered rate_limited with retry_after_ms and delivered
# to no one.  chat_rate 2r/s burst=3, two workers.

use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Util qw(status conn req join_room);
use JSON::PP ();
use Time::HiRes ();
use Scalar::Util qw(refaddr);

plan tests => 48;

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
            chat_rate 2r/s burst=3;
            access_log %%SERVROOT%%/logs/pid.log chatpid;
        }
        location = /free { chat chat; chat_user $arg_user; }
        location = /chat3 { chat chat; chat_user $arg_user; chat_rate 3r/s; }
        location = /status { chat_status chat; }
_EOC_
    workers => 2,
);

my @W = sort { $a <=> $b } $t->worker_pids;
is(scalar @W, 2, 'two workers');

# --- helpers -----------------------------------------------------------------

my $refused = 0;      # rate_limited answers seen by this test
my %pending;          # messages read by burst(), per connection

# pipelines the sends (refs given), returns { ref => reply } with every
# reply (ack or error) to them
sub burst {
    my ($ws, $room, @refs) = @_;
    my $frames = join '', map {
        Test::Chat::WS->build_frame(opcode => 1,
            payload => JSON::PP->new->canonical->encode(
                { type => 'send', room => $room, content => "c-$_", ref => $_ }))
    } @refs;
    $ws->send_raw($frames);
    my %got;
    my $deadline = Time::HiRes::time() + 3;
    while (keys %got < @refs && Time::HiRes::time() < $deadline) {
        my $f = $ws->recv_json(3) or last;
        push @{ $pending{ refaddr $ws } }, $f->{content} if $f->{type} eq 'message';
        next unless $f->{type} eq 'ack' || $f->{type} eq 'error';
        $got{ $f->{ref} // '' } = $f;
        $refused++ if $f->{type} eq 'error' && $f->{code} eq 'rate_limited';
    }
    return \%got;
}

sub send1 {
    my ($ws, $room, $ref) = @_;
    return burst($ws, $room, $ref)->{$ref};
}

sub accepted { my $r = shift; $r && $r->{type} eq 'ack' }
sub limited  { my $r = shift; $r && $r->{type} eq 'error' && $r->{code} eq 'rate_limited' }

# contents of the messages $ws got up to (and without) the message $mark
sub messages_until {
    my ($ws, $mark) = @_;
    my @c;
    my $p = delete $pending{ refaddr $ws } || [];
    while (@$p) {
        my $c = shift @$p;
        if ($c eq $mark) { $pending{ refaddr $ws } = $p; return \@c }
        push @c, $c;
    }
    while (my $f = $ws->recv_json(3)) {
        next unless $f->{type} eq 'message';
        last if $f->{content} eq $mark;
        push @c, $f->{content};
    }
    return \@c;
}

# --- 1 + burst at once, then refused ------------------------------------------------

my $obs = conn($t, 'obs', path => '/free');     # observer, not rate limited
join_room($obs, 'r') or die "join failed\n";
my $mrk = conn($t, 'mrk', path => '/free');     # posts markers, not rate limited
join_room($mrk, 'r') or die "join failed\n";
my $mark = 0;
sub mark {          # posts a marker message in r; returns its content
    my $c = 'mark' . ++$mark;
    my $a = req($mrk, { type => 'send', room => 'r', content => $c }, acks => 1);
    die "marker not acked" unless $a && $a->{type} eq 'ack';
    return $c;
}

my $ann = conn($t, 'ann', pid => $W[0]);
join_room($ann, 'r') or die "join failed\n";
{
    my $got = burst($ann, 'r', map { "a$_" } 1 .. 5);
    is(scalar(grep { accepted($got->{"a$_"}) } 1 .. 4), 4, 'burst=3: 4 sends at once accepted');
    my $e = $got->{a5};
    ok(limited($e), 'the 5th is rate_limited') or diag(explain $e);
    is($e && $e->{ref}, 'a5', 'with the ref');
    ok($e && defined $e->{message} && length $e->{message}, 'and a message');
    my $retry = $e ? $e->{retry_after_ms} : undef;
    ok(defined $retry && $retry =~ /^\d+$/ && $retry > 0 && $retry <= 1000,
       'retry_after_ms > 0 and <= 1000') or diag('retry_after_ms: ' . ($retry // 'undef'));
    ok(defined $retry && $retry <= 500, 'retry_after_ms <= 500 at 2r/s (one slot leaks in 500 ms)')
        or diag('retry_after_ms: ' . ($retry // 'undef'));

    my $c = mark();
    is_deeply(messages_until($obs, $c), [ map { "c-a$_" } 1 .. 4 ],
              'the other member got the 4 accepted messages, not the refused one');
    is_deeply(messages_until($ann, $c), [ map { "c-a$_" } 1 .. 4 ],
              'the sender did not get the refused one either');

    Time::HiRes::sleep(($retry || 500) / 1000 + 0.03);
    ok(accepted(send1($ann, 'r', 'a6')), 'after retry_after_ms the next send is accepted');
    my $e2 = send1($ann, 'r', 'a7');
    ok(limited($e2), 'and the one right after it is refused again');
    ok($e2 && $e2->{retry_after_ms} > 0, 'with retry_after_ms');
    $c = mark();
    is_deeply(messages_until($obs, $c), [ 'c-a6' ], 'only the accepted one was delivered');
}

# --- N per second after the burst ------------------------------------------------

{
    my $bea = conn($t, 'bea', pid => $W[1]);
    join_room($bea, 'r') or die "join failed\n";
    my $got = burst($bea, 'r', map { "b$_" } 1 .. 4);
    is(scalar(grep { accepted($got->{"b$_"}) } 1 .. 4), 4, 'bea: 4 at once');
    Time::HiRes::sleep(1.2);
    $got = burst($bea, 'r', map { "b$_" } 5 .. 7);
    ok(accepted($got->{b5}) && accepted($got->{b6}), '1.2 s later (2r/s): 2 more accepted');
    ok(limited($got->{b7}), 'the third is refused') or diag(explain $got->{b7});
    ok($got->{b7} && $got->{b7}{retry_after_ms} > 0 && $got->{b7}{retry_after_ms} <= 500,
       'retry_after_ms within one slot');

    Time::HiRes::sleep(0.6);
    ok(accepted(send1($bea, 'r', 'b8')), '0.6 s later one more');
    ok(limited(send1($bea, 'r', 'b9')), 'but not two');
}

# --- per user, across connections and workers ----------------------------------------

{
    my $s1 = conn($t, 'sam', pid => $W[0]);
    my $s2 = conn($t, 'sam', pid => $W[1]);
    join_room($_, 'r') or die "join failed\n" for $s1, $s2;
    ok(accepted(send1($s1, 'r', 's1')), 'sam on worker 1: send 1');
    ok(accepted(send1($s2, 'r', 's2')), 'sam on worker 2: send 2');
    ok(accepted(send1($s1, 'r', 's3')), 'sam on worker 1: send 3');
    ok(accepted(send1($s2, 'r', 's4')), 'sam on worker 2: send 4');
    my $e1 = send1($s1, 'r', 's5');
    my $e2 = send1($s2, 'r', 's6');
    ok(limited($e1), 'the 5th (worker 1) refused: the bucket is per user');
    ok(limited($e2), 'the 6th (worker 2) refused: shared by the workers');

    # both connections pipelining at once
    my $tom1 = conn($t, 'tom', pid => $W[0]);
    my $tom2 = conn($t, 'tom', pid => $W[1]);
    join_room($_, 'r') or die "join failed\n" for $tom1, $tom2;
    my $frames1 = join '', map { Test::Chat::WS->build_frame(opcode => 1,
        payload => qq({"type":"send","room":"r","content":"t1-$_","ref":"t1-$_"})) } 1 .. 4;
    my $frames2 = join '', map { Test::Chat::WS->build_frame(opcode => 1,
        payload => qq({"type":"send","room":"r","content":"t2-$_","ref":"t2-$_"})) } 1 .. 4;
    $tom1->send_raw($frames1);
    $tom2->send_raw($frames2);
    my ($ok, $no) = (0, 0);
    for my $ws ($tom1, $tom2) {
        my $n = 0;
        while ($n < 4) {
            my $f = $ws->recv_json(3) or last;
            next unless $f->{type} eq 'ack' || $f->{type} eq 'error';
            $n++;
            if ($f->{type} eq 'ack') { $ok++ } elsif ($f->{code} eq 'rate_limited') { $no++; $refused++ }
        }
    }
    is($ok, 4, 'tom: 8 sends from two workers at once, 4 accepted');
    is($no, 4, '4 rate_limited');
    my $c = mark();
    my @tom = grep { /^t[12]-/ } @{ messages_until($obs, $c) };
    is(scalar @tom, 4, 'the observer got only the 4 accepted');

    # a different user has its own bucket
    my $uma = conn($t, 'uma', pid => $W[0]);
    join_room($uma, 'r') or die "join failed\n";
    my $got = burst($uma, 'r', map { "u$_" } 1 .. 4);
    is(scalar(grep { accepted($got->{"u$_"}) } 1 .. 4), 4, 'another user: 4 accepted while sam is limited');
    ok(limited(send1($uma, 'r', 'u5')), 'then uma is limited too');
    ok(limited(send1($s2, 'r', 's7')), 'sam is still limited');
}

# --- per user, not per room ------------------------------------------------------------

{
    my $vic = conn($t, 'vic');
    join_room($vic, $_) or die "join failed\n" for qw(r v1 v2);
    ok(accepted(send1($vic, 'v1', 'v1')), 'vic: room v1');
    ok(accepted(send1($vic, 'v2', 'v2')), 'vic: room v2');
    ok(accepted(send1($vic, 'r', 'v3')), 'vic: room r');
    ok(accepted(send1($vic, 'v1', 'v4')), 'vic: room v1 again');
    ok(limited(send1($vic, 'v2', 'v5')), 'the 5th, in any room, is limited');
}

# --- only sends count; refused requests of other kinds do not --------------------------

{
    my $wes = conn($t, 'wes');
    join_room($wes, 'r') or die "join failed\n";
    for my $i (1 .. 6) {
        req($wes, { type => 'who', room => 'r' });
        req($wes, { type => 'send', room => 'notjoined', content => 'x', ref => "nm$i" }, acks => 1);
        req($wes, { type => 'send', room => 'r', content => 5, ref => "br$i" }, acks => 1);
    }
    my $r = req($wes, { type => 'join', room => 'w2' });
    is($r->{type}, 'joined', 'joins, who, not_member and bad_request sends ...');
    my $got = burst($wes, 'r', map { "w$_" } 1 .. 4);
    is(scalar(grep { accepted($got->{"w$_"}) } 1 .. 4), 4, '... do not use the bucket: 4 sends accepted');
    my $e = send1($wes, 'r', 'w5');
    ok(limited($e), 'the 5th is limited');
    my $nm = req($wes, { type => 'send', room => 'notjoined', content => 'x', ref => 'nm' }, acks => 1);
    is($nm->{code}, 'not_member', 'a limited user still gets not_member for a room not joined');
}

# --- without chat_rate there is no limit --------------------------------------------------

{
    my $x = conn($t, 'xi', path => '/free');
    join_room($x, 'free') or die "join failed\n";
    my $got = burst($x, 'free', map { "x$_" } 1 .. 20);
    is(scalar(grep { accepted($got->{"x$_"}) } 1 .. 20), 20, 'no chat_rate: 20 sends at once accepted');
}

# --- the bucket outlives the connection ------------------------------------------------------

{
    my $y = conn($t, 'yan');
    join_room($y, 'r') or die "join failed\n";
    my $got = burst($y, 'r', map { "y$_" } 1 .. 5);
    ok(limited($got->{y5}), 'yan exhausted the bucket');
    $y->close;
    my $y2 = conn($t, 'yan');
    join_room($y2, 'r') or die "join failed\n";
    ok(limited(send1($y2, 'r', 'y6')), 'reconnecting does not reset the bucket');
}

# --- retry_after_ms is enough, and never 0 ----------------------------------------------
# At 3r/s a slot takes 333.3 ms.  A send about 333 ms after the last
# accepted one may be refused by a fraction of a slot: retry_after_ms must
# then still be > 0 and waiting it must be enough (rounded up, not down).
# 20 users, each tried once near that edge (no outcome is required of the
# send itself).

{
    my @u = map { conn($t, "edge$_", path => '/chat3') } 0 .. 19;
    join_room($u[$_], "edge$_") or die "join failed\n" for 0 .. 19;
    my @t0;
    for my $i (0 .. 19) {
        die "edge$i: first send refused" unless accepted(send1($u[$i], "edge$i", "e$i-1"));
        $t0[$i] = Time::HiRes::time();
    }
    my (@retry, @waited, @refused);
    for my $i (0 .. 19) {
        my $left = $t0[$i] + 0.3315 + 0.0001 * $i - Time::HiRes::time();
        Time::HiRes::sleep($left) if $left > 0;
        $u[$i]->send_json({ type => 'send', room => "edge$i", content => "e$i-2", ref => "e$i-2" });
    }
    for my $i (0 .. 19) {
        my $r = $u[$i]->recv_until(sub { ($_[0]{ref} // '') eq "e$i-2" }, 3);
        next unless limited($r);
        $refused++;
        push @retry, $r->{retry_after_ms};
        push @refused, [ $i, Time::HiRes::time() + $r->{retry_after_ms} / 1000 ];
    }
    for my $x (sort { $a->[1] <=> $b->[1] } @refused) {
        my ($i, $at) = @$x;
        my $left = $at - Time::HiRes::time();
        Time::HiRes::sleep($left) if $left > 0;
        my $again = send1($u[$i], "edge$i", "e$i-3");
        push @waited, accepted($again) ? 'ack' : "$again->{code} retry_after_ms=$again->{retry_after_ms}";
    }
    note(scalar(@retry) . " of 20 edge sends refused, retry_after_ms: @retry");
    {
        is(scalar(grep { $_ <= 0 } @retry), 0, 'retry_after_ms > 0 on every refusal')
            or diag("retry_after_ms values: @retry");
        is(scalar(grep { $_ ne 'ack' } @waited), 0, 'waiting retry_after_ms is always enough')
            or diag("after waiting: @waited");
    }
}

# --- status ---------------------------------------------------------------------------------

{
    my $st = status($t, '/status');
    is($st->{rate_limited}, $refused, "status rate_limited counts the $refused refusals");
    my $r = $t->http_get('/status?format=prometheus');
    like($r->{body}, qr/^chat_rate_limited_total\{zone="chat"\} $refused$/m, 'prometheus chat_rate_limited_total');
}

{
    my @bad = grep { /\[(?:alert|crit|emerg)\]|exited on signal/ } split /\n/, $t->error_log;
    is(scalar @bad, 0, 'no alerts or crashed workers in error.log') or diag(join "\n", @bad);
}
