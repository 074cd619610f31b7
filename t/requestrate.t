# chat_request_rate (SPEC §8): every request but "send" is limited per
# connection, counted like chat_rate (1 + burst at once, then N per
# second): beyond, error rate_limited with retry_after_ms and no effect.
# Default 20r/s burst=50; "off" disables it. So the presence traffic one
# connection causes (join/leave churn) is bounded.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();
use Test::Chat::Nginx;

plan tests => 21;

my $t = Test::Chat::Nginx->new(workers => 1, http => 'chat_zone chat 4m;',
                               server => <<'_EOC_');
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_request_rate 5r/s burst=5;
        }
        location = /default {
            chat chat;
            chat_user $arg_user;
        }
        location = /off {
            chat chat;
            chat_user $arg_user;
            chat_request_rate off;
        }
_EOC_

sub client {
    my ($path, $user, $room) = @_;
    my $ws = $t->ws(path => "$path?user=$user");
    return undef unless $ws->ok;
    my $w = $ws->recv_json(3);
    return undef unless $w && $w->{type} eq 'welcome';
    return $ws unless $room;
    $ws->send_json({ type => 'join', room => $room });
    my $j = $ws->recv_json(3);
    return $j && $j->{type} eq 'joined' ? $ws : undef;
}

# sends @msgs in one write, then collects replies until $n came or quiet
sub burst {
    my ($ws, $n, @msgs) = @_;
    $ws->send_raw(join '', map { $ws->build_frame(opcode => 1, payload => $_) }
                                 @msgs);
    my @r;
    while (@r < $n) {
        my $m = $ws->recv_json(2) or last;
        push @r, $m;
    }
    return @r;
}

# --- 5r/s burst=5: 6 at once, the rest refused --------------------------------

my $a = client('/chat', 'alice', 'r');
ok($a, 'alice joined (1 request)');

my @r = burst($a, 20, map { qq({"type":"who","room":"r","ref":"w$_"}) } 1 .. 20);
my @who = grep { $_->{type} eq 'who' } @r;
my @lim = grep { $_->{type} eq 'error' && $_->{code} eq 'rate_limited' } @r;
is(scalar @who, 5, 'who: 5 answered (the join took the first of 1 + 5)');
is(scalar @lim, 15, 'who: 15 refused with rate_limited');
ok(!grep({ !defined $_->{retry_after_ms} || $_->{retry_after_ms} <= 0
           || $_->{retry_after_ms} > 200 } @lim),
   'each with a retry_after_ms of at most 200 (5r/s)');
is($lim[0] && $lim[0]{ref}, 'w6', 'the refusal echoes the ref');

Time::HiRes::sleep(($lim[-1]{retry_after_ms} || 200) / 1000 + 0.05);
@r = burst($a, 1, '{"type":"who","room":"r","ref":"again"}');
is($r[0] && $r[0]{type}, 'who', 'after retry_after_ms a request is answered');

# malformed requests count too
Time::HiRes::sleep(1.3);
@r = burst($a, 10, map { 'not json' } 1 .. 10);
is(scalar(grep { $_->{code} eq 'bad_request' } @r), 6,
   'malformed requests: 6 answered bad_request');
is(scalar(grep { $_->{code} eq 'rate_limited' } @r), 4,
   'and 4 refused with rate_limited');

# sends are chat_rate's (off here): not limited by chat_request_rate
Time::HiRes::sleep(1.3);
@r = burst($a, 60, map { qq({"type":"send","room":"r","content":"m$_","ref":"s$_"}) }
                   1 .. 30);
is(scalar(grep { $_->{type} eq 'ack' } @r), 30, 'sends: all 30 acked');
ok(!grep({ $_->{type} eq 'error' } @r), 'and none refused');

# --- join/leave churn: the presence it causes to a member is bounded ---------

my $bob = client('/chat', 'bob', 'churn');
ok($bob, 'bob is a member of "churn"');
my $m = client('/chat', 'mallory');
ok($m, 'mallory connects');
Time::HiRes::sleep(1.3);

@r = burst($m, 400, map { ($_ % 2) ? '{"type":"join","room":"churn"}'
                                   : '{"type":"leave","room":"churn"}' } 1 .. 400);
my $accepted = grep { $_->{type} eq 'joined' || $_->{type} eq 'left' } @r;
ok($accepted <= 6, "mallory's churn: $accepted of 400 join/leave accepted");

my $presence = 0;
while (my $f = $bob->recv_json(1)) {
    $presence++ if $f->{type} eq 'presence';
}
ok($presence <= 6, "bob got $presence presence events for 400 requests");

# --- the default: 20r/s burst=50 ----------------------------------------------

my $d = client('/default', 'dora', 'r');
ok($d, 'dora joined on the default location');
@r = burst($d, 60, map { qq({"type":"who","room":"r"}) } 1 .. 60);
is(scalar(grep { $_->{type} eq 'who' } @r), 50,
   'default: 50 of 60 answered (the join took one of 1 + 50)');
is(scalar(grep { ($_->{code} // '') eq 'rate_limited' } @r), 10,
   'default: 10 refused');

# --- off ------------------------------------------------------------------------

my $o = client('/off', 'otto', 'r');
ok($o, 'otto joined where chat_request_rate is off');
@r = burst($o, 200, map { qq({"type":"who","room":"r"}) } 1 .. 200);
is(scalar(grep { $_->{type} eq 'who' } @r), 200, 'off: all 200 answered');

# --- configuration errors ---------------------------------------------------------

my ($code, $out) = Test::Chat::Nginx->nginx_t(http => 'chat_zone chat 1m;',
    server => "location = /c { chat chat; chat_user \$arg_user;\n"
            . "    chat_request_rate fast; }");
ok($code != 0, 'nginx -t refuses chat_request_rate fast');
like($out, qr/invalid rate "fast".* in \S+nginx\.conf:\d+/,
     'naming the value, the file and the line');
