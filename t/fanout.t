# Fan-out across workers (SPEC §4 message/ack, §5 "at most once per
# connection, whichever worker"): 4 workers, 40 members in one room and 5
# in another, 10 + 2 senders.  Every member gets every message of its room
# exactly once, all members of a room see the same order, each sender's
# messages keep their send order, and nothing leaks between rooms.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Util qw(status);
use Time::HiRes ();

plan tests => 31;

my $t0 = Time::HiRes::time();

# reuseport: the kernel spreads the connections over the 4 workers (each
# worker has its own listening socket), so the test does not depend on
# which worker wins the accept race
my $t = Test::Chat::Nginx->new(workers => 4, conf => <<'_EOC_');
events { worker_connections 1024; }
http {
    chat_zone chat 4m;
    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 50;
        }
        location = /chat/status { chat_status chat; }
    }
}
_EOC_

# client port -> pid of the worker that holds the server side of the TCP
# connection (from /proc/net/tcp and /proc/PID/fd); empty if unreadable
sub connection_workers {
    my @pids = @_;
    my %inode_pid;
    for my $pid (@pids) {
        opendir my $d, "/proc/$pid/fd" or next;
        for my $fd (readdir $d) {
            my $l = readlink "/proc/$pid/fd/$fd";
            $inode_pid{$1} = $pid if defined $l && $l =~ /^socket:\[(\d+)\]$/;
        }
        closedir $d;
    }
    my %port_pid;
    my $sport = sprintf '%04X', $t->port;
    open my $fh, '<', '/proc/net/tcp' or return ();
    while (my $line = <$fh>) {
        my @f = split ' ', $line;
        next unless @f > 9 && $f[1] =~ /^0100007F:(\w{4})$/ && $1 eq $sport;
        next unless $f[2] =~ /^0100007F:(\w{4})$/;
        my $cport = hex $1;
        $port_pid{$cport} = $inode_pid{ $f[9] } if $inode_pid{ $f[9] };
    }
    close $fh;
    return %port_pid;
}

my @workers = $t->worker_pids;
is(scalar @workers, 4, '4 worker processes');

# --- connect and join -------------------------------------------------------

my (@main, @other);
for my $i (0 .. 39) {
    push @main, { user => sprintf('u%02d', $i), room => 'main' };
}
for my $i (0 .. 4) {
    push @other, { user => "o$i", room => 'other' };
}
my @all = (@main, @other);

my ($connected, $joined) = (0, 0);
for my $c (@all) {
    $c->{ws} = $t->ws(path => "/chat?user=$c->{user}", timeout => 5);
    next unless $c->{ws}->ok;
    my $w = $c->{ws}->recv_json(3);
    $connected++ if $w && $w->{type} eq 'welcome' && $w->{user} eq $c->{user};
}
is($connected, scalar @all, 'all 45 clients connected and welcomed');

for my $c (@all) {
    $c->{ws}->send_json({ type => 'join', room => $c->{room} });
    my $j = $c->{ws}->recv_until(sub { $_[0]{type} eq 'joined' || $_[0]{type} eq 'error' }, 3);
    $joined++ if $j && $j->{type} eq 'joined' && $j->{room} eq $c->{room};
}
is($joined, scalar @all, 'all 45 clients joined their room');

my $st = status($t);
is($st->{workers}, 4, 'status: 4 workers attached to the zone')
    or diag(explain $st);
is("$st->{connections}/$st->{users}/$st->{rooms}", '45/45/2',
   'status: 45 connections, 45 users, 2 rooms');

# which worker holds which connection (best effort)
my %port_pid = connection_workers(@workers);
my %per_worker;
my $mapped = 0;
for my $c (@all) {
    my $pid = $port_pid{ $c->{ws}->sock->sockport };
    next unless $pid;
    $c->{worker} = $pid;
    $per_worker{$pid}++;
    $mapped++;
}
SKIP: {
    skip 'cannot map connections to workers through /proc', 1
        unless $mapped == @all;
    note('connections per worker: '
         . join(', ', map { "$_=$per_worker{$_}" } sort keys %per_worker));
    cmp_ok(scalar keys %per_worker, '>=', 2,
           'the connections landed on several workers');
}

# let the presence events settle, and throw them away
Time::HiRes::sleep(0.3);
for my $c (@all) {
    1 while defined $c->{ws}->recv_json(0.01);
    $c->{ws}->clear_skipped;
}

# --- send -------------------------------------------------------------------

my @senders = @main[0 .. 9];
my @osenders = @other[0 .. 1];
my $per_sender = 20;
my $per_osender = 10;
my $send_ok = 1;
for my $k (1 .. $per_sender) {
    for my $s (@senders) {
        $send_ok &&= $s->{ws}->send_json({ type => 'send', room => 'main',
            content => "$s->{user}-$k", ref => "$s->{user}:$k" });
    }
    next if $k > $per_osender;
    for my $s (@osenders) {
        $send_ok &&= $s->{ws}->send_json({ type => 'send', room => 'other',
            content => "$s->{user}-$k", ref => "$s->{user}:$k" });
    }
}
ok($send_ok, 'all sends written');

my $n_main = @senders * $per_sender;      # 200
my $n_other = @osenders * $per_osender;   # 20

# --- receive ----------------------------------------------------------------

my $deadline = Time::HiRes::time() + 15;
for my $c (@all) {
    my $want = $c->{room} eq 'main' ? $n_main : $n_other;
    my $is_sender = grep { $_ == $c } @senders, @osenders;
    my $want_acks = $is_sender ? ($c->{room} eq 'main' ? $per_sender : $per_osender) : 0;
    $c->{msgs} = [];
    $c->{acks} = {};
    $c->{errors} = [];
    while (@{ $c->{msgs} } < $want || keys(%{ $c->{acks} }) < $want_acks) {
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        my $m = $c->{ws}->recv_json($left);
        last unless $m;
        if ($m->{type} eq 'message') {
            push @{ $c->{msgs} }, $m;
        } elsif ($m->{type} eq 'ack') {
            $c->{acks}{ $m->{ref} } = $m->{id};
        } elsif ($m->{type} eq 'error') {
            push @{ $c->{errors} }, $m;
        }
    }
}

# anything extra (duplicates) that arrives a little later
Time::HiRes::sleep(0.5);
my $extra = 0;
for my $c (@all) {
    while (defined(my $m = $c->{ws}->recv_json(0.02))) {
        if ($m->{type} eq 'message') { push @{ $c->{msgs} }, $m; $extra++ }
        elsif ($m->{type} eq 'error') { push @{ $c->{errors} }, $m }
    }
}
is($extra, 0, 'no message arrives after the expected ones');
is(scalar(map { @{ $_->{errors} } } @all), 0, 'no error frames')
    or diag(explain [ map { @{ $_->{errors} } } @all ]);

# --- acks ---------------------------------------------------------------------

my %ack_id;        # "u03:7" => id
my $acks_ok = 1;
for my $s (@senders, @osenders) {
    my $n = $s->{room} eq 'main' ? $per_sender : $per_osender;
    for my $k (1 .. $n) {
        my $id = $s->{acks}{"$s->{user}:$k"};
        if (defined $id && !ref $id && length $id) { $ack_id{"$s->{user}:$k"} = $id }
        else { $acks_ok = 0; diag("no ack for $s->{user}:$k") }
    }
}
ok($acks_ok, 'every send was acked with its ref and an id');
my %uniq = map { $_ => 1 } values %ack_id;
is(scalar keys %uniq, $n_main + $n_other, 'all acked ids are distinct');

# --- per-room checks ------------------------------------------------------------

sub check_room {
    my ($room, $members, $senders, $per) = @_;
    my $n = @$senders * $per;
    my %expect;    # id => [user, content]
    for my $s (@$senders) {
        for my $k (1 .. $per) {
            my $id = $ack_id{"$s->{user}:$k"};
            $expect{$id} = [ $s->{user}, "$s->{user}-$k" ] if defined $id;
        }
    }

    my (@bad_count, @dups, @missing, @foreign, @bad_fields, @bad_order, @diff_order);
    my $ref_seq;
    for my $c (@$members) {
        my @ids = map { $_->{id} } @{ $c->{msgs} };
        push @bad_count, "$c->{user}:" . scalar(@ids) if @ids != $n;
        my %seen;
        for my $m (@{ $c->{msgs} }) {
            push @dups, "$c->{user}:$m->{id}" if $seen{ $m->{id} }++;
            if ($m->{room} ne $room || !$expect{ $m->{id} }) {
                push @foreign, "$c->{user}: $m->{room}/$m->{id}/$m->{content}";
                next;
            }
            my ($u, $content) = @{ $expect{ $m->{id} } };
            push @bad_fields, "$c->{user}: $m->{id}"
                unless $m->{user} eq $u && $m->{content} eq $content
                    && defined $m->{ts} && $m->{ts} =~ /^\d+$/;
        }
        for my $id (keys %expect) {
            push @missing, "$c->{user}:$id" unless $seen{$id};
        }
        # each sender's messages in its own send order
        my %last;
        for my $m (@{ $c->{msgs} }) {
            next unless $m->{content} =~ /^(\w+)-(\d+)$/;
            my ($u, $k) = ($1, $2);
            push @bad_order, "$c->{user}: $u-$k after $u-" . ($last{$u} || 0)
                if $k != ($last{$u} || 0) + 1;
            $last{$u} = $k;
        }
        my $seq = join ',', @ids;
        if (!defined $ref_seq) { $ref_seq = $seq }
        elsif ($seq ne $ref_seq) { push @diff_order, $c->{user} }
    }
    my $nm = @$members;
    is(scalar @bad_count, 0, "$room: each of the $nm members got $n messages")
        or diag("user:count @bad_count[0 .. ($#bad_count < 9 ? $#bad_count : 9)]");
    is(scalar @dups, 0, "$room: no duplicates")
        or diag("@dups[0 .. ($#dups < 9 ? $#dups : 9)]");
    is(scalar @missing, 0, "$room: none missing")
        or diag("@missing[0 .. ($#missing < 9 ? $#missing : 9)]");
    is(scalar @foreign, 0, "$room: no messages of another room / unknown ids")
        or diag("@foreign[0 .. ($#foreign < 9 ? $#foreign : 9)]");
    is(scalar @bad_fields, 0, "$room: user, content and ts as sent")
        or diag("@bad_fields[0 .. ($#bad_fields < 9 ? $#bad_fields : 9)]");
    is(scalar @bad_order, 0, "$room: each sender's messages in send order")
        or diag("@bad_order[0 .. ($#bad_order < 9 ? $#bad_order : 9)]");
    is(scalar @diff_order, 0, "$room: all members see the same order of ids")
        or diag("members with another order: @diff_order");
}

check_room('main', \@main, \@senders, $per_sender);
check_room('other', \@other, \@osenders, $per_osender);

# --- counters and cleanup ---------------------------------------------------------

$st = status($t);
is($st->{messages_in}, $n_main + $n_other, 'status: messages_in');
is($st->{messages_out}, $n_main * @main + $n_other * @other,
   'status: messages_out = one frame per member and message');

my $closed = 0;
for my $c (@all) {
    my ($code, $eof) = $c->{ws}->close(code => 1000, timeout => 3);
    $closed++ if defined $code && $code == 1000 && $eof;
}
is($closed, scalar @all, 'all clients closed cleanly');

my $end = Time::HiRes::time() + 3;
do { $st = status($t); Time::HiRes::sleep(0.05) }
    until ($st->{connections} == 0 && $st->{users} == 0 && $st->{rooms} == 0)
        || Time::HiRes::time() > $end;
is("$st->{connections}/$st->{users}/$st->{rooms}", '0/0/0',
   'status: no connections, users or rooms left');

is(join("\n", $t->grep_error_log(qr/\[(?:error|crit|alert|emerg)\]|exited on signal/)), '',
   'no [error], [crit], [alert] or crash in error.log');

my $elapsed = Time::HiRes::time() - $t0;
cmp_ok($elapsed, '<', 30, sprintf('finished in %.1f s', $elapsed));
