# A burst of messages from one sender (SPEC §4 message/ack, §5 delivery
# order): 20 sends written in one TCP segment are read in one turn of the
# event loop; the other worker is woken once and reads them as one run of
# the bus, which the fan-out copies into one buffer for its members (one
# send() per member instead of a writev() of 20 frames).  Every member, on
# both workers, gets the 20 messages exactly once, whole, in the order
# sent, the sender gets each of its messages before its ack, and a member
# that joined after the burst gets none of them live.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Util qw(worker_of);
use Test::Chat::WS;
use JSON::PP ();

use constant BURST => 20;

my $t = Test::Chat::Nginx->new(workers => 2, conf => <<'_EOC_');
events { worker_connections 256; }
http {
    chat_zone chat 1m;
    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 0;
        }
    }
}
_EOC_

my @pids = $t->worker_pids;
is(scalar @pids, 2, '2 workers');

# members until each worker holds 3 (reuseport spreads them)
my (%on, @members);
for my $i (1 .. 60) {
    my $ws = $t->ws(path => "/chat?user=m$i");
    next unless $ws->ok;
    my $w = $ws->recv_json(3);
    next unless $w && $w->{type} eq 'welcome';
    my $pid = worker_of($t, $ws, @pids) // next;
    next if ($on{$pid} // 0) >= 3;
    $on{$pid}++;
    push @members, { ws => $ws, user => "m$i", pid => $pid };
    last if keys %on == 2 && !grep { $_ < 3 } values %on;
}
is(scalar @members, 6, '3 members on each worker');

for my $m (@members) {
    $m->{ws}->send_json({ type => 'join', room => 'burst' });
    my $r = $m->{ws}->recv_until(sub { $_[0]{type} =~ /^(joined|error)$/ }, 3);
    die "$m->{user}: no joined\n" unless $r && $r->{type} eq 'joined';
}

# presence of the later joins is read before the burst
for my $m (@members) {
    1 while $m->{ws}->recv_json(0.2);
    $m->{ws}->clear_skipped if $m->{ws}->can('clear_skipped');
}

my $sender = $members[0];
my $json = JSON::PP->new->canonical;
my $raw = join '', map {
    Test::Chat::WS->build_frame(opcode => 1, payload => $json->encode(
        { type => 'send', room => 'burst', content => "b$_", ref => "r$_" }))
} 1 .. BURST;
ok($sender->{ws}->send_raw($raw), BURST . ' sends in one write');

# frames until the expected messages (and the sender's acks) came, or 5 s
my %got;
for my $m (@members) {
    my (@msgs, @order);
    my $want = BURST + ($m == $sender ? BURST : 0);
    my $deadline = time + 5;
    while (@order < $want && time < $deadline) {
        my $f = $m->{ws}->recv_json(1) or next;
        next unless $f->{type} eq 'message' || $f->{type} eq 'ack';
        push @order, $f->{type} eq 'ack' ? "ack:$f->{ref}" : "msg:$f->{content}";
        push @msgs, $f if $f->{type} eq 'message';
    }
    # anything more within 0.3 s would be a duplicate
    while (my $f = $m->{ws}->recv_json(0.3)) {
        push @msgs, $f if $f->{type} eq 'message';
    }
    $got{ $m->{user} } = { msgs => \@msgs, order => \@order };
}

my @want = map { "b$_" } 1 .. BURST;
for my $pid (@pids) {
    my @ms = grep { $_->{pid} == $pid } @members;
    my $bad = grep {
        join(',', map { $_->{content} } @{ $got{ $_->{user} }{msgs} })
            ne join(',', @want)
    } @ms;
    is($bad, 0, "worker $pid: each member got the " . BURST
                . ' messages once, in order')
        or diag(join ' ', map { "$_->{user}:"
            . join(',', map { $_->{content} } @{ $got{ $_->{user} }{msgs} }) }
            @ms);
}

my %ids;
$ids{ $_->{id} // '' }++ for @{ $got{ $sender->{user} }{msgs} };
is(scalar(grep { $_ ne '' } keys %ids), BURST, 'distinct ids');

my $same = grep {
    join(',', map { $_->{id} } @{ $got{ $_->{user} }{msgs} })
        eq join(',', map { $_->{id} } @{ $got{ $sender->{user} }{msgs} })
} @members;
is($same, scalar @members, 'every member saw the same ids in the same order');

my $ok = 1;
my @o = @{ $got{ $sender->{user} }{order} };
for my $i (1 .. BURST) {
    my ($pm) = grep { $o[$_] eq "msg:b$i" } 0 .. $#o;
    my ($pa) = grep { $o[$_] eq "ack:r$i" } 0 .. $#o;
    $ok = 0 unless defined $pm && defined $pa && $pm < $pa;
}
ok($ok, 'the sender got each message before its ack')
    or diag("sender saw: @o");

# a second burst, then a member who joins after it gets nothing of it
my $raw2 = join '', map {
    Test::Chat::WS->build_frame(opcode => 1, payload => $json->encode(
        { type => 'send', room => 'burst', content => "c$_", ref => "s$_" }))
} 1 .. BURST;
$sender->{ws}->send_raw($raw2);
my $last = $members[-1]{ws}->recv_until(
    sub { $_[0]{type} eq 'message' && $_[0]{content} eq 'c' . BURST }, 5);
ok($last, 'second burst delivered');

my $late = $t->ws(path => '/chat?user=late');
$late->recv_json(3);
$late->send_json({ type => 'join', room => 'burst' });
my $j = $late->recv_until(sub { $_[0]{type} =~ /^(joined|error)$/ }, 3);
is($j && $j->{type}, 'joined', 'late member joined');
my @live;
while (my $f = $late->recv_json(0.5)) {
    push @live, $f if $f->{type} eq 'message';
}
is(scalar @live, 0, 'nothing of the bursts live to a member who joined after');

$t->stop;
unlike($t->error_log, qr/\[(alert|crit|emerg)\]/, 'no alerts');

done_testing();
