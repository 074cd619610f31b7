# A worker killed with SIGKILL leaves no ghost members (SPEC §5): users
# u1..u6 in one room spread over 2 workers; kill -9 one worker; the
# members it held are removed from the zone and the other members get a
# presence "leave" for each user who has no connection in the room left
# (and none for a user still connected through the other worker); `who`
# and the status counters follow; the respawned worker serves new
# connections.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Util qw(status worker_of);
use Time::HiRes ();

plan tests => 31;

my $t0 = Time::HiRes::time();

# reuseport: the kernel picks the worker of each connection from the
# 4-tuple, so connecting again until a connection lands on the wanted
# worker terminates quickly
my $t = Test::Chat::Nginx->new(workers => 2, conf => <<'_EOC_');
events { worker_connections 1024; }
http {
    chat_zone chat 1m;
    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        location = /chat { chat chat; chat_user $arg_user; }
        location = /chat/status { chat_status chat; }
    }
}
_EOC_

sub counts {
    my $st = status($t);
    return 'no status' unless %$st;
    return "connections=$st->{connections} users=$st->{users} rooms=$st->{rooms}";
}

sub wait_counts {
    my ($want, $timeout) = @_;
    my $end = Time::HiRes::time() + $timeout;
    my $got;
    while (1) {
        $got = counts();
        return $got if $got eq $want || Time::HiRes::time() > $end;
        Time::HiRes::sleep(0.05);
    }
}

# a welcomed connection of $user on worker $pid (or undef)
sub connect_on {
    my ($user, $pid, @pids) = @_;
    for (1 .. 60) {
        my $ws = $t->ws(path => "/chat?user=$user");
        return undef unless $ws->ok;
        my $w = $ws->recv_json(3);
        return undef unless $w && $w->{type} eq 'welcome';
        my $on = worker_of($t, $ws, @pids);
        return $ws if defined $on && $on == $pid;
        $ws->close(code => 1000, timeout => 2);
    }
    return undef;
}

my @pids = $t->wait_workers(count => 2);
is(scalar @pids, 2, '2 workers');
my ($X, $Y) = @pids;    # X will be killed

# layout: [user, worker, joins the room]
my @layout = (
    [ u1 => $X, 1 ],
    [ u2 => $X, 1 ],
    [ u3 => $X, 1 ], [ u3 => $Y, 1 ],    # u3 stays present through Y
    [ u4 => $Y, 1 ],
    [ u5 => $Y, 1 ],
    [ u6 => $X, 1 ], [ u6 => $Y, 0 ],    # u6 stays connected, but not in the room
);
my @c;
for my $l (@layout) {
    my ($user, $pid, $join) = @$l;
    push @c, { user => $user, worker => $pid, join => $join,
               ws => connect_on($user, $pid, @pids) };
}
my @bad = grep { !$_->{ws} } @c;
is(scalar @bad, 0, 'u1..u6 connected with the planned layout over the 2 workers')
    or die('cannot place the connections on the workers: '
           . join(' ', map { "$_->{user}\@$_->{worker}" } @bad) . "\n");

my $joined = 0;
for my $cl (grep { $_->{join} } @c) {
    $cl->{ws}->send_json({ type => 'join', room => 'lobby' });
    my $j = $cl->{ws}->recv_until(sub { $_[0]{type} =~ /^(?:joined|error)$/ }, 3);
    $joined++ if $j && $j->{type} eq 'joined';
}
is($joined, 7, 'the 7 room connections joined');

# forget the presence joins
Time::HiRes::sleep(0.3);
for my $cl (@c) { 1 while defined $cl->{ws}->recv_json(0.02); $cl->{ws}->clear_skipped }

my ($u4) = grep { $_->{user} eq 'u4' } @c;
$u4->{ws}->send_json({ type => 'who', room => 'lobby' });
my $who = $u4->{ws}->recv_until(sub { $_[0]{type} =~ /^(?:who|error)$/ }, 3);
is(join(',', sort @{ ($who && $who->{users}) || [] }), 'u1,u2,u3,u4,u5,u6',
   'who before the kill: u1..u6');
is(wait_counts('connections=8 users=6 rooms=1', 3), 'connections=8 users=6 rooms=1',
   'status before the kill');

# --- kill -9 -----------------------------------------------------------------------

my $mark = $t->log_mark;
my $killed_at = Time::HiRes::time();
ok(kill('KILL', $X), "kill -9 worker $X");

my @on_x = grep { $_->{worker} == $X } @c;
my @on_y = grep { $_->{worker} == $Y } @c;
my $eofs = 0;
for my $cl (@on_x) {
    my $got_eof = $cl->{ws}->wait_eof(3);
    $eofs++ if $got_eof;
}
is($eofs, scalar @on_x, 'connections on the killed worker see EOF');

# presence on the surviving room members (u3, u4, u5 on Y)
my @survivors = grep { $_->{join} } @on_y;
my %leaves;     # user on Y => [users left]
my %others;     # unexpected non-presence frames
my $last_leave = 0;
my $deadline = $killed_at + 3;
for my $cl (@survivors) {
    my @l;
    while (@l < 3) {
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        my $m = $cl->{ws}->recv_json($left);
        last unless $m;
        if ($m->{type} eq 'presence' && $m->{event} eq 'leave' && $m->{room} eq 'lobby') {
            push @l, $m->{user};
            $last_leave = Time::HiRes::time();
        } else {
            push @{ $others{ $cl->{user} } }, $m;
        }
    }
    $leaves{ $cl->{user} } = \@l;
}
my $in_time = join ' ', map { "$_:" . join(',', sort @{ $leaves{$_} }) } sort keys %leaves;
is($in_time, 'u3:u1,u2,u6 u4:u1,u2,u6 u5:u1,u2,u6',
   'within 3 s: presence leave for u1, u2 and u6 to each surviving member');
note(sprintf 'last presence leave %.2f s after the kill', $last_leave - $killed_at)
    if $last_leave;

# nothing more: no leave for u3, no duplicates
Time::HiRes::sleep(0.5);
for my $cl (@survivors) {
    while (defined(my $m = $cl->{ws}->recv_json(0.05))) {
        if ($m->{type} eq 'presence') { push @{ $leaves{ $cl->{user} } }, "$m->{event}:$m->{user}" }
        else { push @{ $others{ $cl->{user} } }, $m }
    }
}
my $all_presence = join ' ', map { "$_:" . join(',', sort @{ $leaves{$_} }) } sort keys %leaves;
is($all_presence, 'u3:u1,u2,u6 u4:u1,u2,u6 u5:u1,u2,u6',
   'no presence for u3 (still present through the other worker), no duplicates');
is(scalar(keys %others), 0, 'no other frames to the survivors')
    or diag(explain \%others);

my ($u6y) = grep { $_->{user} eq 'u6' && !$_->{join} } @c;
my @u6y = $u6y->{ws}->drain_json(0.2);
is(scalar @u6y, 0, 'u6 outside the room gets nothing') or diag(explain \@u6y);

$u4->{ws}->send_json({ type => 'who', room => 'lobby' });
$who = $u4->{ws}->recv_until(sub { $_[0]{type} =~ /^(?:who|error)$/ }, 3);
is(join(',', sort @{ ($who && $who->{users}) || [] }), 'u3,u4,u5',
   'who after the kill: u3, u4, u5');

is(wait_counts('connections=4 users=4 rooms=1', 3), 'connections=4 users=4 rooms=1',
   'status after the kill: 4 connections (u3, u4, u5, u6 on Y), 4 users');

# --- the respawned worker ---------------------------------------------------------

my @now = $t->wait_workers(count => 2, exclude => [$X], timeout => 5);
is(scalar @now, 2, 'the master respawned a worker');
my ($N) = grep { $_ != $Y } @now;
ok($N && $N != $X, 'new worker pid');

my $end = Time::HiRes::time() + 3;
my $st;
do { $st = status($t); Time::HiRes::sleep(0.05) }
    until ($st->{workers} // 0) == 2 || Time::HiRes::time() > $end;
is($st->{workers}, 2, 'status: 2 workers attached (the killed one detached)');

my $u7 = $N ? connect_on('u7', $N, @now) : undef;
ok($u7, 'u7 connected on the respawned worker');
SKIP: {
    skip 'no connection on the new worker', 10 unless $u7;

    $u7->send_json({ type => 'join', room => 'lobby' });
    my $j = $u7->recv_until(sub { $_[0]{type} =~ /^(?:joined|error)$/ }, 3);
    is($j && $j->{type}, 'joined', 'u7 joined on the new worker');
    is($j && $j->{members}, 4, 'members: u3, u4, u5, u7 (no ghosts)');

    my $pj = 0;
    for my $cl (@survivors) {
        my $m = $cl->{ws}->recv_until(sub { $_[0]{type} eq 'presence' }, 3);
        $pj++ if $m && $m->{event} eq 'join' && $m->{user} eq 'u7';
    }
    is($pj, 3, 'the survivors got presence join for u7');

    $u7->send_json({ type => 'send', room => 'lobby', content => 'from new', ref => 'n1' });
    my $got = 0;
    for my $ws ($u7, map { $_->{ws} } @survivors) {
        my $m = $ws->recv_until(sub { $_[0]{type} eq 'message' }, 3);
        $got++ if $m && $m->{content} eq 'from new' && $m->{user} eq 'u7';
    }
    is($got, 4, 'a message from the new worker reaches all 4 members');
    my $ack = $u7->recv_until(sub { $_[0]{type} =~ /^(?:ack|error)$/ }, 1)
        || (grep { $_->{type} eq 'ack' } @{ $u7->skipped })[0];
    is($ack && $ack->{ref}, 'n1', 'ack for u7');

    $u4->{ws}->send_json({ type => 'send', room => 'lobby', content => 'from old', ref => 'o1' });
    my $m = $u7->recv_until(sub { $_[0]{type} eq 'message' }, 3);
    is($m && $m->{content}, 'from old', 'a message from the surviving worker reaches the new one');

    $u7->send_json({ type => 'who', room => 'lobby' });
    $who = $u7->recv_until(sub { $_[0]{type} =~ /^(?:who|error)$/ }, 3);
    is(join(',', sort @{ ($who && $who->{users}) || [] }), 'u3,u4,u5,u7', 'who on the new worker');

    is(wait_counts('connections=5 users=5 rooms=1', 3), 'connections=5 users=5 rooms=1',
       'status with u7');

    my ($code, $eof) = $u7->close(code => 1000);
    is($code, 1000, 'u7 close handshake');
    is(wait_counts('connections=4 users=4 rooms=1', 3), 'connections=4 users=4 rooms=1',
       'status after u7 left');
}

# --- logs ----------------------------------------------------------------------------

my @alerts = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
my @expected = grep { /\[alert\].* worker process $X exited on signal 9/ } @alerts;
is(scalar @expected, 1, "[alert] worker process $X exited on signal 9");
my @unexpected = grep { !/ worker process $X exited on signal 9/ } @alerts;
is(join("\n", @unexpected), '', 'no other [alert]/[crit]/[emerg]');
is(join("\n", $t->grep_error_log(qr/exited on signal/)), $expected[0] // '',
   'no other worker exited on a signal');

my $elapsed = Time::HiRes::time() - $t0;
cmp_ok($elapsed, '<', 40, sprintf('finished in %.1f s', $elapsed));
