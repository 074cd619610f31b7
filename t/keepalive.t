# Keepalive: chat_ping_interval / chat_ping_timeout.  An idle client gets a
# ping, a client that answers stays, a client that does not gets 1001 and
# the TCP close, data from the client counts as liveness.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();
use Test::Chat::Nginx;
use Test::Chat::Util qw(now);
use Test::Chat::WS;

plan tests => 21;

my $t = Test::Chat::Nginx->new(
    http      => 'chat_zone chat 1m;',
    server    => <<'_EOS_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_ping_interval 1s;
            chat_ping_timeout 1s;
        }
_EOS_
    workers   => 1,
    log_level => 'info',
);

# connected and welcomed client, or undef
sub open_ws {
    my ($user, %o) = @_;
    my $ws = $t->ws(path => "/chat?user=$user", timeout => 3, %o);
    unless ($ws->ok) {
        diag("$user: handshake failed: " . ($ws->error || '?'));
        return undef;
    }
    my $f = $ws->recv_frame(3);
    unless ($f && $f->{type} eq 'text' && $f->{payload} =~ /"welcome"/) {
        diag("$user: no welcome");
        return undef;
    }
    return $ws;
}

# next frame that is not a text frame (the idle clients get no text)
sub next_control {
    my ($ws, $timeout) = @_;
    my $deadline = now() + $timeout;
    while ((my $left = $deadline - now()) > 0) {
        my $f = $ws->recv_frame($left) or return undef;
        return $f if $f->{opcode} >= 8;
    }
    return undef;
}

# --- an idle client gets a ping after about chat_ping_interval --------------
{
    my $t0 = now();
    my $ws = open_ws('idle');
  SKIP: {
        skip 'no connection', 4 unless $ws;
        my $f = next_control($ws, 4);
        my $el = now() - $t0;
        is($f && $f->{type}, 'ping', 'idle client gets a ping');
        ok($el > 0.7 && $el < 3, 'ping after about 1 s')
            or diag(sprintf '%.2f s', $el);
        ok($f && !$f->{errors}, 'well-formed ping frame')
            or diag(explain $f);
        $ws->send_pong($f ? $f->{payload} : '');
        # still usable after the pong
        $ws->send_json({ type => 'join', room => 'k' });
        my $j = $ws->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
        ok($j, 'connection usable after answering the ping');
    }
    $ws->close if $ws;
}

# --- a client that answers every ping stays past 3 s ---------------------------
{
    my $ws = open_ws('ponger', auto_pong => 1);
  SKIP: {
        skip 'no connection', 5 unless $ws;
        my $t0 = now();
        my $f = $ws->recv_frame(3.5);    # pings are answered and not returned
        my $el = now() - $t0;
        ok(!$f && !$ws->eof && $el >= 3.4, 'answering pings: open after 3.5 s')
            or diag(sprintf 'frame %s, eof %d after %.2f s',
                    $f ? "$f->{type} " . ($f->{close_code} || '') : 'none',
                    $ws->eof, $el);
        cmp_ok($ws->pings_answered, '>=', 2, 'pinged (and answered) repeatedly')
            or diag('pings answered: ' . $ws->pings_answered);
        cmp_ok($ws->pings_answered, '<=', 5, 'not pinged more often than the interval');
        $ws->send_json({ type => 'join', room => 'k' });
        my $j = $ws->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
        ok($j, 'still served');
        my ($code, $eof) = $ws->close(code => 1000);
        ok($code && $code == 1000 && $eof, 'normal close afterwards');
    }
}

# --- a client that never answers gets 1001 "ping timeout" and EOF --------------
{
    my $mark = $t->log_mark;
    my $t0 = now();
    my $ws = open_ws('silent');
  SKIP: {
        skip 'no connection', 6 unless $ws;
        my $f = next_control($ws, 4);
        is($f && $f->{type}, 'ping', 'silent client: pinged');
        # do not answer; do not reply to the close either
        my ($code, $eof, $reason) = $ws->expect_close(timeout => 4, reply => 0);
        my $el = now() - $t0;
        is($code, 1001, 'unanswered ping: close 1001');
        is($reason, 'ping timeout', 'close reason "ping timeout"');
        ok($eof, 'then TCP close');
        ok($el > 1.5 && $el < 3.5, 'closed about 2 s after connecting (interval + timeout)')
            or diag(sprintf '%.2f s', $el);
        ok($t->wait_for_log(qr/chat: client timed out/, since => $mark, timeout => 2),
           'timeout logged at info level');
    }
}

# --- data counts as liveness: no ping while the client is active --------------
{
    my $ws = open_ws('chatty');
  SKIP: {
        skip 'no connection', 5 unless $ws;
        $ws->send_json({ type => 'join', room => 'k' });
        my $t0 = now();
        my (@ctl, $answers);
        # a message every 0.25 s for 3 s
        while (now() - $t0 < 3) {
            $ws->send_json({ type => 'send', room => 'k', content => 'x', ref => 'r' });
            my $deadline = now() + 0.25;
            while ((my $left = $deadline - now()) > 0) {
                my $f = $ws->recv_frame($left) or last;
                if ($f->{opcode} >= 8) { push @ctl, $f }
                elsif ($f->{payload} =~ /"type":"ack"/) { $answers++ }
            }
            last if $ws->eof;
        }
        is(scalar @ctl, 0, 'no ping (and no close) while the client sends data')
            or diag(join ', ', map { $_->{type} } @ctl);
        ok(!$ws->eof, 'connection open after 3 s of activity');
        cmp_ok($answers || 0, '>=', 10, 'every message answered');
        # silence: the ping comes again
        my $s0 = now();
        my $f = next_control($ws, 4);
        my $el = now() - $s0;
        is($f && $f->{type}, 'ping', 'silent again: pinged');
        ok($el < 3, 'within about the interval') or diag(sprintf '%.2f s', $el);
    }
    $ws->close if $ws;
}

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
is(scalar @bad, 0, 'no [alert], [crit] or [emerg] in error.log')
    or diag(join "\n", @bad);

# stop nginx now, not in global destruction (Test::Chat::Nginx's DESTROY
# asks Test::Builder whether all passed, which warns once Test2 is gone)
undef $t;
