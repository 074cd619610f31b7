# chat_status metrics (issue 15, "Observability"): the Prometheus text
# parses (every sample well-formed, every histogram's buckets cumulative,
# ending at +Inf equal to its _count), chat_errors_total counts each error
# code sent and chat_closes_total each close code sent, caused here through
# a real nginx; chat_delivery_lag_seconds counts one observation per
# message delivered by the worker; chat_ack_latency_seconds counts the acks
# written after a PostgreSQL COMMIT (skipped without PostgreSQL binaries).
# The JSON form carries the same numbers.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp ();
use Digest::SHA ();
use MIME::Base64 qw(encode_base64url);
use JSON::PP ();
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now status conn req send_msg client join_room
                        send_json take);
use Test::Chat::Pg;

plan tests => 65;

my $JSON = JSON::PP->new->utf8->canonical;
my $dir = File::Temp::tempdir(CLEANUP => 1);
my $secret = 'metrics secret';

{
    open my $fh, '>', "$dir/hs.key" or die $!;
    print $fh "$secret\n";
    close $fh;
}

sub token {
    my (%claims) = @_;
    my $input = encode_base64url($JSON->encode({ alg => 'HS256', typ => 'JWT' }))
              . '.' . encode_base64url($JSON->encode({ %claims }));
    return "$input."
        . encode_base64url(Digest::SHA::hmac_sha256($input, $secret));
}

my @ERRORS = qw(bad_request not_member rate_limited too_many_rooms forbidden
                unavailable);
my @CLOSES = qw(1000 1001 1002 1003 1007 1008 1009 1011 other);
my @HISTS  = qw(chat_delivery_lag_seconds chat_ack_latency_seconds);

# ---------------------------------------------------------------------------
# the Prometheus text: { samples => { 'name{labels}' => value }, errors =>
# [ what does not parse ] }, and the histograms checked

sub prom {
    my ($t, $path) = @_;
    my $r = $t->http_get($path);
    my %p = (samples => {}, errors => [], types => {}, body => $r->{body});
    push @{ $p{errors} }, "status $r->{status}" unless $r->{status} == 200;

    for my $line (split /\n/, $r->{body} // '') {
        if ($line =~ /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$/) {
            $p{types}{$1} = $2;
            next;
        }
        next if $line =~ /^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* \S/;
        if ($line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*",?)*)\})? (-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)$/) {
            my ($name, $labels, $v) = ($1, $2 // '', $3);
            my %l = $labels =~ /([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g;
            my $key = $name . '{' . join(',', map { "$_=$l{$_}" } sort keys %l) . '}';
            push @{ $p{errors} }, "duplicate $key" if exists $p{samples}{$key};
            $p{samples}{$key} = $v;
            next;
        }
        push @{ $p{errors} }, "malformed: $line";
    }

    return \%p;
}

# the problems of one histogram (its buckets for zone $zone)
sub hist_problems {
    my ($p, $h, $zone) = @_;
    my @b;
    for my $k (keys %{ $p->{samples} }) {
        next unless $k =~ /^\Q$h\E_bucket\{le=([^,]+),zone=\Q$zone\E\}$/;
        push @b, [ $1, $p->{samples}{$k} ];
    }
    my @pr;
    push @pr, "$h: TYPE not histogram" unless ($p->{types}{$h} // '') eq 'histogram';
    push @pr, "$h: no buckets" unless @b;
    my @inf = grep { $_->[0] eq '+Inf' } @b;
    push @pr, "$h: no +Inf bucket" unless @inf == 1;
    @b = sort { ($a->[0] eq '+Inf' ? 9e99 : $a->[0]) <=> ($b->[0] eq '+Inf' ? 9e99 : $b->[0]) } @b;
    for my $i (1 .. $#b) {
        push @pr, "$h: bucket le=$b[$i][0] ($b[$i][1]) < le=$b[$i-1][0] ($b[$i-1][1])"
            if $b[$i][1] < $b[$i - 1][1];
    }
    my $count = $p->{samples}{"${h}_count{zone=$zone}"};
    my $sum = $p->{samples}{"${h}_sum{zone=$zone}"};
    push @pr, "$h: no _count" unless defined $count;
    push @pr, "$h: no _sum" unless defined $sum;
    push @pr, "$h: +Inf $inf[0][1] != _count $count"
        if @inf && defined $count && $inf[0][1] != $count;
    push @pr, "$h: sum $sum < 0" if defined $sum && $sum < 0;
    return @pr;
}

sub well_formed {
    my ($p, $zone, $what) = @_;
    my @pr = (@{ $p->{errors} }, map { hist_problems($p, $_, $zone) } @HISTS);
    ok(!@pr, "$what: the Prometheus text parses, histograms consistent")
        or diag(join "\n", @pr, $p->{body});
}

sub err_n   { $_[0]{samples}{"chat_errors_total{code=$_[1],zone=" . ($_[2] // 'chat') . '}'} }
sub close_n { $_[0]{samples}{"chat_closes_total{code=$_[1],zone=chat}"} }
sub hist_n  { $_[0]{samples}{"$_[1]_count{zone=$_[2]}"} }

# ---------------------------------------------------------------------------

my $t = Test::Chat::Nginx->new(port => 28101, workers => 1,
    http => "chat_zone chat 1m;\n    chat_zone small 256k;",
    server => <<"_EOC_");
        location = /chat {
            chat chat;
            chat_user \$arg_user;
            chat_max_rooms 2;
            chat_max_message_size 1k;
        }
        location = /chatr { chat chat; chat_user \$arg_user; chat_rate 1r/s; }
        location = /chatp {
            chat chat;
            chat_user \$arg_user;
            chat_ping_interval 1s;
            chat_ping_timeout 1s;
        }
        location = /chatj { chat chat; chat_jwt \$arg_token; chat_jwt_key $dir/hs.key; }
        location = /chatz {
            chat small;
            chat_user \$arg_user;
            chat_history 1000;
            chat_max_message_size 24k;
            chat_max_rooms 1000;
        }
        location = /chat/status { chat_status chat; }
        location = /small/status { chat_status small; }
_EOC_

my $p0 = prom($t, '/chat/status?format=prometheus');
well_formed($p0, 'chat', 'at rest');
is_deeply([ map { err_n($p0, $_) } @ERRORS ], [ map { 0 } @ERRORS ],
          'every error code is exported, at 0');
is_deeply([ map { close_n($p0, $_) } @CLOSES ], [ map { 0 } @CLOSES ],
          'every close code is exported, at 0');
is($p0->{types}{chat_errors_total}, 'counter', 'chat_errors_total is a counter');
is($p0->{types}{chat_closes_total}, 'counter', 'chat_closes_total is a counter');
is(hist_n($p0, $_, 'chat'), 0, "$_ at 0") for @HISTS;
is(scalar(grep { /^chat_delivery_lag_seconds_bucket\{/ } keys %{ $p0->{samples} }), 13,
   '13 buckets (12 bounds and +Inf)');
ok(exists $p0->{samples}{'chat_delivery_lag_seconds_bucket{le=0.0005,zone=chat}'}
   && exists $p0->{samples}{'chat_delivery_lag_seconds_bucket{le=2.5,zone=chat}'},
   'bounds from 0.5 ms to 2.5 s, in seconds');

# --- errors, one code at a time ----------------------------------------------

# the delta of every error counter after $do; what the client saw
sub error_case {
    my ($code, $do, $zone) = @_;
    $zone //= 'chat';
    my $before = prom($t, "/$zone/status?format=prometheus");
    my $seen = $do->();
    my $after = prom($t, "/$zone/status?format=prometheus");
    my %d = map { $_ => err_n($after, $_, $zone) - err_n($before, $_, $zone) } @ERRORS;
    my %want = map { $_ => 0 } @ERRORS;
    $want{$code} = $seen;
    ok($seen >= 1, "$code: the client got the error") ;
    is_deeply(\%d, \%want, "$code: chat_errors_total{zone=\"$zone\",code=\"$code\"} moved by $seen, no other");
}

my $a = conn($t, 'ann');

error_case('bad_request', sub {
    my $r = req($a, { type => 'join', room => 5 });
    return ($r && $r->{type} eq 'error' && $r->{code} eq 'bad_request') ? 1 : 0;
});

error_case('not_member', sub {
    my $r = req($a, { type => 'send', room => 'nowhere', content => 'x' });
    return ($r && $r->{type} eq 'error' && $r->{code} eq 'not_member') ? 1 : 0;
});

error_case('too_many_rooms', sub {
    req($a, { type => 'join', room => "r$_" }) for 1 .. 2;
    my $r = req($a, { type => 'join', room => 'r3' });
    return ($r && $r->{type} eq 'error' && $r->{code} eq 'too_many_rooms') ? 1 : 0;
});

error_case('rate_limited', sub {
    my $rl = conn($t, 'rl', path => '/chatr');
    req($rl, { type => 'join', room => 'R' });
    my $n = 0;
    for my $i (1 .. 3) {
        my $r = send_msg({ ws => $rl, inbox => [], all => [] }, 'R', "m$i", "ref$i");
        $n++ if $r && $r->{type} eq 'error' && $r->{code} eq 'rate_limited';
    }
    $rl->close;
    return $n;
});

error_case('forbidden', sub {
    my $ws = $t->ws(path => '/chatj?token=' . token(sub => 'jo', exp => time + 60,
                                                     rooms => ['lobby']));
    my $w = $ws->recv_json(3);
    my $r = req($ws, { type => 'join', room => 'elsewhere' });
    $ws->close;
    return ($r && $r->{type} eq 'error' && $r->{code} eq 'forbidden') ? 1 : 0;
});

# a 256k zone filled with 128-byte rooms and 14k messages until refused
error_case('unavailable', sub {
    my $z = conn($t, 'filler', path => '/chatz', ws => { timeout => 5 });
    my $msg = 'm' x 14000;
    my $n = 0;
    my $t0 = now();
    for my $i (1 .. 200) {
        last if $n || now() - $t0 > 20;
        my $room = sprintf('fill-%04d-', $i);
        $room .= 'x' x (128 - length $room);
        my $j = req($z, { type => 'join', room => $room });
        last unless $j;
        if ($j->{type} eq 'error') {
            $n++ if $j->{code} eq 'unavailable';
            last;
        }
        my $s = send_msg({ ws => $z, inbox => [], all => [] }, $room, $msg, "f$i");
        $n++ if $s && $s->{type} eq 'error' && $s->{code} eq 'unavailable';
        $z->clear_skipped;
    }
    $z->close;
    return $n;
}, 'small');

{
    my $zp = prom($t, '/small/status?format=prometheus');
    well_formed($zp, 'small', 'another zone');
    ok(!grep({ /zone=chat\b/ } keys %{ $zp->{samples} }),
       'another zone: only its own zone label');
}

# --- closes, one code at a time ----------------------------------------------

sub close_case {
    my ($code, $do) = @_;
    my $before = prom($t, '/chat/status?format=prometheus');
    my $got = $do->();
    my $after = prom($t, '/chat/status?format=prometheus');
    my %d = map { $_ => close_n($after, $_) - close_n($before, $_) } @CLOSES;
    my %want = map { $_ => 0 } @CLOSES;
    $want{$code} = 1;
    is($got // 'none', $code eq 'other' ? 4000 : $code, "close $code: the client got it");
    is_deeply(\%d, \%want, "close $code: chat_closes_total{code=\"$code\"} moved by 1, no other");
}

sub violation {
    my ($send) = @_;
    return sub {
        my $ws = conn($t, 'v');
        $send->($ws);
        my ($code) = $ws->expect_close(timeout => 3);
        return $code;
    };
}

close_case('1000', sub {
    my $ws = conn($t, 'bye');
    $ws->send_close(code => 1000);
    my ($code) = $ws->expect_close(timeout => 3, reply => 0);
    return $code;
});
close_case('other', sub {
    my $ws = conn($t, 'bye');
    $ws->send_close(code => 4000);
    my ($code) = $ws->expect_close(timeout => 3, reply => 0);
    return $code;
});
close_case('1002', violation(sub { $_[0]->send_text('{"type":"who","room":"x"}', mask => 0) }));
close_case('1003', violation(sub { $_[0]->send_binary('{"type":"who","room":"x"}') }));
close_case('1007', violation(sub { $_[0]->send_text("{\"type\":\"join\",\"room\":\"a\xffb\"}") }));
close_case('1009', violation(sub {
    $_[0]->send_text($JSON->encode({ type => 'join', room => 'x' x 1100 }));
}));
close_case('1001', sub {
    # no pongs: closed with 1001 "ping timeout" after 1 s + 1 s
    my $ws = conn($t, 'mute', path => '/chatp');
    my ($code) = $ws->expect_close(timeout => 5);
    return $code;
});
close_case('1008', sub {
    my $ws = $t->ws(path => '/chatj?token=' . token(sub => 'ex', exp => time + 2));
    $ws->recv_json(3);
    my ($code) = $ws->expect_close(timeout => 6);
    return $code;
});

# --- delivery lag: one observation per message delivered by this worker -------

{
    my @c = map { client($t, "l$_") } 1 .. 3;
    join_room($_, 'lag') for @c;
    my $before = prom($t, '/chat/status?format=prometheus');
    my $n = 0;
    for my $i (1 .. 5) {
        my $r = send_msg($c[0], 'lag', "hello $i", "lag$i");
        $n++ if $r && $r->{type} eq 'ack';
    }
    is($n, 5, 'lag: 5 messages acked');
    my $got = 0;
    for my $c (@c) {
        for my $i (1 .. 5) {
            $got++ if take($c, sub { $_[0]{type} eq 'message' && $_[0]{content} eq "hello $i" });
        }
    }
    is($got, 15, 'lag: 15 deliveries to 3 members');
    my $after = prom($t, '/chat/status?format=prometheus');
    well_formed($after, 'chat', 'after deliveries');
    is(hist_n($after, 'chat_delivery_lag_seconds', 'chat')
       - hist_n($before, 'chat_delivery_lag_seconds', 'chat'), 5,
       'chat_delivery_lag_seconds_count moved by 5: once per message, not per member');
    my $sum = $after->{samples}{'chat_delivery_lag_seconds_sum{zone=chat}'}
            - $before->{samples}{'chat_delivery_lag_seconds_sum{zone=chat}'};
    ok($sum > 0 && $sum < 5, "lag: the sum grew by a plausible $sum s");
    ok($after->{samples}{'chat_delivery_lag_seconds_bucket{le=2.5,zone=chat}'}
       >= hist_n($after, 'chat_delivery_lag_seconds', 'chat') - 0,
       'lag: loopback deliveries are under 2.5 s');
    is(hist_n($after, 'chat_ack_latency_seconds', 'chat'), 0,
       'without storage, no ack latency is observed');

    # the JSON form carries the same numbers, the existing fields unchanged
    my $st = status($t, '/chat/status');
    is($st->{delivery_lag}{count}, hist_n($after, 'chat_delivery_lag_seconds', 'chat'),
       'JSON delivery_lag.count equals the Prometheus _count');
    is(scalar @{ $st->{delivery_lag}{buckets} }, 13, 'JSON: 13 cumulative buckets');
    is($st->{delivery_lag}{buckets}[-1], $st->{delivery_lag}{count}, 'JSON: the last bucket is the count');
    is_deeply($st->{delivery_lag}{le_ms}, [0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500],
              'JSON: bounds in ms');
    is_deeply({ map { $_ => $st->{errors}{$_} } @ERRORS },
              { map { $_ => err_n($after, $_) + 0 } @ERRORS }, 'JSON errors equal the Prometheus ones');
    is_deeply({ map { $_ => $st->{closes}{$_} } @CLOSES },
              { map { $_ => close_n($after, $_) + 0 } @CLOSES }, 'JSON closes equal the Prometheus ones');
    ok(defined $st->{messages_in} && defined $st->{bytes_out_raw} && defined $st->{relay_duplicates},
       'JSON: the existing fields are still there');
    is(status($t, '/small/status')->{errors}{unavailable}, 1,
       'JSON: the other zone counted its unavailable');
    is($st->{errors}{unavailable}, 0, 'JSON: not this zone');
    $_->{ws}->close for @c;
}

# the HTTP API's errors are answers to HTTP requests, not error frames: not
# counted (nothing here calls it); 1011 (out of memory) cannot be caused
is(close_n(prom($t, '/chat/status?format=prometheus'), '1011'), 0, '1011 never sent here');

$t->stop;

# --- ack latency, with PostgreSQL -----------------------------------------------

SKIP: {
    skip 'no PostgreSQL server binaries (Test::Chat::Pg->available)', 9
        unless Test::Chat::Pg->available;

    my $pg = Test::Chat::Pg->start(port => 28901);
    my $s = Test::Chat::Nginx->new(port => 28102, workers => 1,
        http => "chat_zone chat 1m;\n    " . $pg->directive,
        server => <<'_EOC_');
        location = /chat { chat chat; chat_user $arg_user; }
        location = /chat/status { chat_status chat; }
_EOC_
    ok($pg->wait_up($s, 1), 'PostgreSQL connection up');

    my $p1 = prom($s, '/chat/status?format=prometheus');
    well_formed($p1, 'chat', 'with PostgreSQL, at rest');
    is(hist_n($p1, 'chat_ack_latency_seconds', 'chat'), 0, 'ack latency at 0');
    is($p1->{samples}{'chat_postgres_up{zone=chat}'}, 1, 'chat_postgres_up 1');

    my $c = client($s, 'pgann');
    join_room($c, 'stored');
    my $n = 0;
    for my $i (1 .. 4) {
        my $r = send_msg($c, 'stored', "kept $i", "k$i");
        $n++ if $r && $r->{type} eq 'ack';
    }
    is($n, 4, '4 messages stored and acked');

    my $p2 = prom($s, '/chat/status?format=prometheus');
    well_formed($p2, 'chat', 'with PostgreSQL, after acks');
    is(hist_n($p2, 'chat_ack_latency_seconds', 'chat'), 4,
       'chat_ack_latency_seconds_count 4: one per ack after the COMMIT');
    my $sum = $p2->{samples}{'chat_ack_latency_seconds_sum{zone=chat}'};
    ok($sum > 0 && $sum < 20, "ack latency sum $sum s: above 0");
    is(status($s, '/chat/status')->{ack_latency}{count}, 4, 'JSON ack_latency.count 4');

    $c->{ws}->close;
    $s->stop;
    $pg->stop;
}
