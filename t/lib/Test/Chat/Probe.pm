package Test::Chat::Probe;

# Scaffolding shared by the client probes, t/redis-client/probe.t and
# t/pg-client/probe.t (built and run by t/probe.mk): a temporary directory,
# child processes stopped by pid, free ports, polling, and plain HTTP/1.0
# requests to the probe's nginx.  See t/lib/README.md, section 5.

use strict;
use warnings;

use Exporter 'import';
use Encode qw(encode_utf8);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Test::More ();
use Time::HiRes qw(time sleep);

our $VERSION = '0.01';

our @EXPORT = qw(
    probe_dir free_port spawn stop wait_for esc
    http_port http_send http_receive http get error_log log_count
);

my $Dir;             # from probe_dir
my $HttpPort;        # the default port of http() and get()
my %Children;        # pid => name, all killed at the end

END {
    for my $pid (keys %Children) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
}

# probe_dir('redis-probe'): a new temporary directory for configs, logs and
# the children's output; kept with TEST_KEEP=1
sub probe_dir {
    my ($name) = @_;

    $Dir = tempdir("$name-XXXXXX", TMPDIR => 1, CLEANUP => !$ENV{TEST_KEEP});
    chmod 0755, $Dir;    # nginx workers run as nobody when we are root
    Test::More::diag("logs in $Dir") if $ENV{TEST_KEEP};

    return $Dir;
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1, ReuseAddr => 1)
        or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# spawn($name, @cmd): runs @cmd with its output in <dir>/$name.out
sub spawn {
    my ($name, @cmd) = @_;

    my $pid = fork;
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDOUT, '>>', "$Dir/$name.out";
        open STDERR, '>&', \*STDOUT;
        { exec @cmd; }
        POSIX::_exit(127);
    }

    $Children{$pid} = $name;
    return $pid;
}

# stop($pid, 'QUIT'): signals a child (TERM by default), KILL after 20 s;
# returns how long it took to exit (999 when it had to be killed)
sub stop {
    my ($pid, $sig) = @_;

    my $start = time;
    kill $sig || 'TERM', $pid;

    while (time - $start < 20) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $Children{$pid};
            return time - $start;
        }
        sleep 0.02;
    }

    kill 'KILL', $pid;
    waitpid $pid, 0;
    delete $Children{$pid};
    return 999;
}

# wait_for(sub { ... }, $timeout): true once the sub returned true
sub wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return 0;
}

# percent-encodes a query argument (character strings as UTF-8)
sub esc {
    my ($s) = @_;
    $s = encode_utf8($s) if utf8::is_utf8($s);
    $s =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

# http_port($port): sets (and returns) the port http() and get() use
sub http_port {
    $HttpPort = shift if @_;
    return $HttpPort;
}

# http_send($port, $path, $body): sends a GET (a POST with the body) over
# HTTP/1.0 and returns the socket, for http_receive
sub http_send {
    my ($port, $path, $body) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                  Timeout => 3)
        or die "connect to nginx: $!";
    binmode $s;

    my $req = (defined $body ? 'POST' : 'GET') . " $path HTTP/1.0\r\n"
              . "Host: localhost\r\n";
    $req .= 'Content-Length: ' . length($body) . "\r\n" if defined $body;
    $req .= "\r\n";
    $req .= $body if defined $body;

    while (length $req) {
        my $n = syswrite $s, $req;
        die "write: $!" unless defined $n;
        substr($req, 0, $n) = '';
    }

    return $s;
}

# http_receive($socket, $timeout = 20): (status, body, head) once nginx
# closed the connection; status 0 when nothing came
sub http_receive {
    my ($s, $timeout) = @_;

    my $sel = IO::Select->new($s);
    my $data = '';
    my $deadline = time + ($timeout || 20);

    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread $s, $data, 65536, length $data;
        last unless $n;
    }
    close $s;

    my ($head, $body) = split /\r\n\r\n/, $data, 2;
    my ($status) = ($head // '') =~ m{^HTTP/\d\.\d (\d+)};

    return ($status // 0, $body // '', $head // '');
}

# http($path, body => $body, timeout => $s): (status, body, head) of one
# request to http_port()
sub http {
    my ($path, %o) = @_;
    return http_receive(http_send($HttpPort, $path, $o{body}), $o{timeout});
}

# the body when the status is 200, else "HTTP <status>: <body>"
sub get {
    my ($status, $body) = http(@_);
    return $status == 200 ? $body : "HTTP $status: $body";
}

# the lines of <dir>/logs/error.log (or of $file)
sub error_log {
    my ($file) = @_;
    open my $f, '<', $file || "$Dir/logs/error.log" or return ();
    return <$f>;
}

sub log_count {
    my ($re, $file) = @_;
    return scalar grep { $_ =~ $re } error_log($file);
}

1;
