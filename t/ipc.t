# The workers' IPC cannot be squatted or flooded by another local process
# (SPEC §8, "Local neighbours").  Each worker has an abstract UNIX datagram
# socket for wake-ups; it used to be named "ngx_chat/<pid>", so a process
# that had bound those names for the next pids first made bind() fail, and
# every new worker exit with code 2, which nginx never respawns.
#
#   1. the names "\0ngx_chat/<pid>" of the next 1,000 pids are bound, then
#      nginx starts: both workers come up and stay, chat crosses workers
#   2. the same before a reload: the new workers come up, chat crosses them
#   3. another process floods one worker's socket with datagrams for 3 s:
#      chat across the workers goes on during the flood, the worker's CPU
#      stays low, the log says so (once), and after the flood all is normal
#
# Linux only (abstract sockets, /proc).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX ();
use Socket qw(AF_UNIX SOCK_DGRAM SOL_SOCKET SO_SNDTIMEO pack_sockaddr_un);
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll conn req wait_type);

plan skip_all => 'Linux only' unless $^O eq 'linux' && -r '/proc/net/unix';

plan tests => 23;

my $SQUAT = 1000;
my $TICK = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

my %CONF = (
    http => <<'_EOC_',
    chat_zone chat 1m;
    log_format chatpid '$arg_tag $pid';
_EOC_
    server => <<'_EOC_',
        listen 127.0.0.1:%%PORT_1%% reuseport;
        location = /chat {
            chat chat;
            chat_user $arg_user;
            access_log %%SERVROOT%%/logs/pid.log chatpid;
        }
        location = /status { chat_status chat; }
_EOC_
    workers => 2,
);

sub slurp {
    my $f = shift;
    open my $fh, '<', $f or return undef;
    local $/;
    return scalar <$fh>;
}

# binds "\0ngx_chat/<pid>" for the next $n pids; the sockets stay bound as
# long as the returned object lives
sub squat {
    my $n = shift;
    my $last = slurp('/proc/sys/kernel/ns_last_pid');
    unless (defined $last && $last =~ /^(\d+)/) {
        my $p = fork // die "fork: $!";
        POSIX::_exit(0) unless $p;
        waitpid($p, 0);
        $last = $p;
    }
    $last = int $last;
    my $max = int(slurp('/proc/sys/kernel/pid_max') // 32768);
    my %sq = (socks => [], pids => {});
    my $pid = $last;
    for (1 .. $n) {
        $pid++;
        $pid = 301 if $pid >= $max;
        socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die "socket: $!";
        next unless bind($s, pack_sockaddr_un("\0ngx_chat/$pid"));
        push @{ $sq{socks} }, $s;
        $sq{pids}{$pid} = 1;
    }
    return \%sq;
}

# the abstract names "@ngx_chat/..." of the sockets $pid holds
sub socket_names {
    my $pid = shift;
    my %inode;
    if (opendir my $d, "/proc/$pid/fd") {
        for (readdir $d) {
            my $l = readlink "/proc/$pid/fd/$_";
            $inode{$1} = 1 if defined $l && $l =~ /^socket:\[(\d+)\]$/;
        }
        closedir $d;
    }
    my @names;
    open my $fh, '<', '/proc/net/unix' or return ();
    while (<$fh>) {
        my @f = split ' ';
        push @names, $f[7] if @f >= 8 && $inode{ $f[6] } && $f[7] =~ m{^\@ngx_chat/};
    }
    return @names;
}

sub cpu_ticks {
    my $pid = shift;
    my $s = slurp("/proc/$pid/stat") // return 0;
    $s =~ s/^.*\)\s+//s;
    my @f = split ' ', $s;
    return $f[11] + $f[12];
}

# a on worker $wa, b on worker $wb, both in room $room: each one's message
# reaches the other; returns the number of messages that arrived (0..2)
sub cross {
    my ($t, $wa, $wb, $room, $tag) = @_;
    my ($a, $b) = eval { (conn($t, 'ann', pid => $wa), conn($t, 'bob', pid => $wb)) };
    unless ($a && $b) {
        diag("no connections on workers $wa and $wb: $@");
        return 0;
    }
    my $ok = 0;
    for my $c ($a, $b) {
        my $j = req($c, { type => 'join', room => $room });
        diag("join: " . ($j ? $j->{type} : 'no reply')) unless $j && $j->{type} eq 'joined';
    }
    $a->send_json({ type => 'send', room => $room, content => "$tag from ann" });
    $ok++ if wait_type($b, 'message', sub { $_[0]{content} eq "$tag from ann" });
    $b->send_json({ type => 'send', room => $room, content => "$tag from bob" });
    $ok++ if wait_type($a, 'message', sub { $_[0]{content} eq "$tag from bob" });
    $_->close(code => 1000, timeout => 1) for $a, $b;
    return $ok;
}

sub no_fatal_exit {
    my ($t, $mark) = @_;
    my @l = $t->grep_error_log(qr/exited with code 2|bind\(\) of the notification socket/,
                               since => $mark);
    ok(!@l, 'no worker exited for good, no bind() failure') or diag(join "\n", @l);
}

sub restart {
    my $t = shift;
    $t->stop;
    return Test::Chat::Nginx->new(%CONF);
}

# --- 1. start with the pids' names taken --------------------------------------

my ($t, $fresh);
{
    my $sq = squat($SQUAT);
    note(scalar(@{ $sq->{socks} }) . ' names "ngx_chat/<pid>" bound');
    $t = Test::Chat::Nginx->new(%CONF, start => 0);
    my $started = do {
        local $Test::Chat::Nginx::StartTimeout = 5;
        $t->start;
    };
    ok($started, 'nginx started with the next pids\' names taken')
        or diag($t->{start_output});
    my @W = $t->wait_workers(count => 2, timeout => 3);
    is(scalar @W, 2, 'two workers');
    ok((grep { $sq->{pids}{$_} } @W),
       'the names of the workers\' pids were taken (the check means something)')
        or diag("workers @W, names taken for pids " . join(' ', (sort { $a <=> $b } keys %{ $sq->{pids} })[0, -1]));
    Time::HiRes::sleep(1);
    is(join(' ', $t->worker_pids), join(' ', @W), 'the same two workers a second later');
    no_fatal_exit($t, 0);

    my @bad = grep { my $w = $_; my @n = socket_names($w);
                     @n != 1 || $n[0] eq "\@ngx_chat/$w" } @W;
    ok(@W == 2 && !@bad, 'each worker has one notification socket, not named after its pid')
        or diag(join "\n", map { "$_: " . join(' ', socket_names($_)) } @W);

    is(@W == 2 ? cross($t, @W, 'start', 'start') : 0, 2,
       'chat crosses the workers (both ways)');

    $fresh = !($started && @W == 2);
}

# without workers, the rest goes on with a new server (the names now free)
$t = restart($t) if $fresh;

# --- 2. reload with the pids' names taken -----------------------------------------

{
    my @old = $t->wait_workers(count => 2, timeout => 3);
    my $mark = $t->log_mark;
    my $sq = squat($SQUAT);
    my $reloaded = $t->reload(timeout => 5);
    ok($reloaded, 'reload with the next pids\' names taken: new workers')
        or diag($t->reload_error);
    my @W = $t->wait_workers(count => 2, exclude => \@old, timeout => 3);
    is(scalar @W, 2, 'two new workers');
    ok((grep { $sq->{pids}{$_} } @W),
       'the names of the new workers\' pids were taken');
    Time::HiRes::sleep(1);
    is(join(' ', $t->worker_pids), join(' ', @W), 'the same two workers a second later');
    no_fatal_exit($t, $mark);
    is(@W == 2 ? cross($t, @W, 'reload', 'reload') : 0, 2,
       'chat crosses the new workers');

    $fresh = !($reloaded && @W == 2);
}

$t = restart($t) if $fresh;

# --- 3. a flood of datagrams ------------------------------------------------------------

{
    my @W = $t->wait_workers(count => 2, timeout => 3);
    my ($X, $Y) = @W;
    my ($name) = socket_names($X);
    ok(defined $name, "worker ${X}'s notification socket found")
        or diag('sockets: ' . join ' ', socket_names($X));
    $name //= "\@ngx_chat/$X";
    (my $addr = $name) =~ s/^\@/\0/;

    my ($ann, $bob) = (conn($t, 'ann', pid => $X), conn($t, 'bob', pid => $Y));
    req($_, { type => 'join', room => 'flood' }) for $ann, $bob;
    my $mark = $t->log_mark;

    my $secs = 3;
    my $flooder = fork // die "fork: $!";
    if ($flooder == 0) {
        socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or POSIX::_exit(1);
        # blocking sends: a send waits for room and goes as soon as the
        # worker reads one (the most a sender can get through); at most
        # 100 ms each, so that the flooder ends on time
        setsockopt($s, SOL_SOCKET, SO_SNDTIMEO, pack('l!l!', 0, 100_000));
        my $to = pack_sockaddr_un($addr);
        my $end = Time::HiRes::time() + $secs;
        my $n = 0;
        while (Time::HiRes::time() < $end) {
            for (1 .. 100) { $n++ if defined send($s, 'x', 0, $to) }
        }
        open my $fh, '>', $t->servroot . '/logs/flood.count';
        print $fh "$n\n";
        close $fh;
        POSIX::_exit(0);
    }

    my $cpu0 = cpu_ticks($X);
    my $t0 = now();

    # chat during the flood: bob (worker Y) to ann (worker X, flooded) and back
    Time::HiRes::sleep(0.3);
    my ($got, $back, $worst) = (0, 0, 0);
    for my $i (1 .. 5) {
        my $s = now();
        $bob->send_json({ type => 'send', room => 'flood', content => "f$i" });
        if (wait_type($ann, 'message', sub { $_[0]{content} eq "f$i" })) {
            $got++;
            $worst = now() - $s if now() - $s > $worst;
        }
        $ann->send_json({ type => 'send', room => 'flood', content => "g$i" });
        $back++ if wait_type($bob, 'message', sub { $_[0]{content} eq "g$i" });
        Time::HiRes::sleep(0.3);
    }

    waitpid($flooder, 0);
    my $elapsed = now() - $t0;
    my $cpu = (cpu_ticks($X) - $cpu0) / $TICK;
    my $sent = slurp($t->servroot . '/logs/flood.count') // '?';
    chomp $sent;
    note(sprintf '%s datagrams sent in %d s; worker %d used %.2f s of CPU in %.1f s; '
                 . 'slowest delivery to it %.0f ms', $sent, $secs, $X, $cpu, $elapsed,
                 $worst * 1000);

    is($got, 5, 'during the flood, messages reach the flooded worker\'s member');
    cmp_ok($worst, '<', 0.5, sprintf('... within %.0f ms', $worst * 1000));
    is($back, 5, '... and its member\'s messages reach the other worker');
    cmp_ok($cpu, '<', 0.2 * $elapsed,
           sprintf('the flooded worker used %.2f s of CPU in %.1f s (< 20%%)', $cpu, $elapsed));
    ok(poll(2, sub { $t->grep_error_log(qr/\[warn\].*not a worker of this nginx, sends datagrams/,
                                        since => $mark) }),
       'the log says a stranger sends datagrams');
    my @l = $t->grep_error_log(qr/not a worker of this nginx/, since => $mark);
    cmp_ok(scalar @l, '<=', 1, 'once') or diag(join "\n", @l);
    is(join(' ', $t->worker_pids), join(' ', @W), 'the workers are still the same');

    # after the flood
    Time::HiRes::sleep(0.1);
    my $s = now();
    $bob->send_json({ type => 'send', room => 'flood', content => 'after' });
    ok(wait_type($ann, 'message', sub { $_[0]{content} eq 'after' }),
       'after the flood, messages cross the workers');
    $_->close(code => 1000, timeout => 1) for $ann, $bob;

    my @bad = $t->grep_error_log(qr/\[(?:error|crit|alert|emerg)\]/, since => $mark);
    ok(!@bad, 'no [error] or worse in the log') or diag(join "\n", @bad);
}

$t->stop;
