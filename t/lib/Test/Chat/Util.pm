package Test::Chat::Util;

# Helpers shared by the multi-step tests (Test::Chat::Nginx + Test::Chat::WS):
# time and polling, the status page, connections placed on a chosen worker,
# requests and their replies, and an inbox per client.
# See t/lib/README.md, section 4, for the API.

use strict;
use warnings;

use Exporter 'import';
use JSON::PP ();
use Scalar::Util qw(blessed);
use Test::More ();
use Time::HiRes ();
use Socket ();
use IO::Select ();
use MIME::Base64 ();

our $VERSION = '0.01';

our @EXPORT_OK = qw(
    now poll
    status pid_of_tag conn worker_of
    req req_next wait_type
    client send_json take reply join_room send_msg ack_id
    pump settle extract collect
    raw_ws
);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

my $JSON = JSON::PP->new->utf8->canonical;

# ---------------------------------------------------------------------------
# a raw WebSocket with a small receive buffer (set before connect(), which
# Test::Chat::WS->connect does not allow): { sock, sel, buf } after the 101,
# buf holding what came after it; undef when refused

sub raw_ws {
    my ($t, $user, %o) = @_;
    my $rcvbuf = $o{rcvbuf} || 4096;
    socket(my $s, Socket::PF_INET(), Socket::SOCK_STREAM(), 0)
        or die "socket: $!";
    setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), $rcvbuf)
        or die "SO_RCVBUF: $!";
    connect($s, Socket::pack_sockaddr_in($t->port,
                                         Socket::inet_aton('127.0.0.1')))
        or die "connect: $!";
    binmode $s;
    my $key = MIME::Base64::encode_base64(
        join('', map { chr int rand 256 } 1 .. 16), '');
    my $req = "GET /chat?user=$user HTTP/1.1\r\nHost: localhost\r\n"
            . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n\r\n";
    syswrite($s, $req) == length $req or die "write: $!";
    my $buf = '';
    my $deadline = now() + 3;
    my $sel = IO::Select->new($s);
    while (index($buf, "\r\n\r\n") < 0 && now() < $deadline) {
        $sel->can_read($deadline - now()) or last;
        sysread($s, $buf, 65536, length $buf) or last;
    }
    my $h = index($buf, "\r\n\r\n");
    return undef if $h < 0;
    my $head = substr($buf, 0, $h + 4, '');
    return undef unless $head =~ m{^HTTP/1\.1 101 };
    return { sock => $s, sel => $sel, buf => $buf };
}

# ---------------------------------------------------------------------------
# time

sub now { Time::HiRes::time() }

# poll($timeout, sub { ... }, $step): calls the sub until it returns true or
# $timeout seconds passed; returns its last value
sub poll {
    my ($timeout, $cond, $step) = @_;
    my $deadline = now() + $timeout;
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return $v if now() > $deadline;
        Time::HiRes::sleep($step || 0.05);
    }
}

# ---------------------------------------------------------------------------
# server side

# the chat_status JSON of $t at $path (default /chat/status); {} when the
# request fails or the body is not a JSON object, so that ->{field} is safe
sub status {
    my ($t, $path) = @_;
    my $r = $t->http_get(defined $path ? $path : '/chat/status');
    return {} unless ($r->{status} || 0) == 200;
    my $j = eval { $JSON->decode($r->{body}) };
    return ref $j eq 'HASH' ? $j : {};
}

# Placing a connection on a worker: the server has a second listen socket
# with reuseport (%%PORT_1%%), which spreads connections over the workers,
# and logs which worker took each one:
#
#     log_format chatpid '$arg_tag $pid';               # http
#     listen 127.0.0.1:%%PORT_1%% reuseport;            # server
#     access_log %%SERVROOT%%/logs/pid.log chatpid;     # the chat location
#
# pid_of_tag($t, $tag): the worker that logged ?tag=$tag (waits up to 3 s)
sub pid_of_tag {
    my ($t, $tag) = @_;
    my $deadline = now() + 3;
    while (now() < $deadline) {
        if (open my $fh, '<', $t->servroot . '/logs/pid.log') {
            while (<$fh>) { return $1 if /^\Q$tag\E (\d+)$/ }
        }
        Time::HiRes::sleep(0.02);
    }
    return undef;
}

my $Seq = 0;

# conn($t, $user, path => '/chat', pid => $pid, ws => { connect options }):
# a connection of $user that got its welcome; dies otherwise.  With pid,
# connects on %%PORT_1%% (see above) until a connection lands on that
# worker.
sub conn {
    my ($t, $user, %o) = @_;
    my $path = defined $o{path} ? $o{path} : '/chat';
    my $sep = $path =~ /\?/ ? '&' : '?';
    my $tries = defined $o{pid} ? 60 : 1;

    for (1 .. $tries) {
        my $tag = ++$Seq;
        my $ws = defined $o{pid}
            ? $t->ws(port => $t->port(1), %{ $o{ws} || {} },
                     path => "$path${sep}user=$user&tag=$tag")
            : $t->ws(%{ $o{ws} || {} }, path => "$path${sep}user=$user");
        die "$user: no upgrade: " . ($ws->error || $ws->status) . "\n"
            unless $ws->ok;
        my $w = $ws->recv_json(3);
        die "$user: no welcome: " . ($ws->error || '') . "\n"
            unless $w && $w->{type} eq 'welcome';
        return $ws unless defined $o{pid};
        my $got = pid_of_tag($t, $tag)
            or die "$user: no access log line for tag $tag\n";
        return $ws if $got == $o{pid};
        $ws->close;
    }

    die "$user: no connection on worker $o{pid} in $tries tries\n";
}

# worker_of($t, $ws, @pids): which of @pids holds the server side of $ws
# (from /proc/net/tcp and the workers' fds); undef if none does
sub worker_of {
    my ($t, $ws, @pids) = @_;
    my $cport = sprintf '%04X', $ws->sock->sockport;
    my $sport = sprintf '%04X', $t->port;
    my $inode;

    open my $fh, '<', '/proc/net/tcp' or return undef;
    while (my $line = <$fh>) {
        my @f = split ' ', $line;
        next unless @f > 9;
        if ($f[1] eq "0100007F:$sport" && $f[2] eq "0100007F:$cport") {
            $inode = $f[9];
            last;
        }
    }
    close $fh;
    return undef unless $inode;

    for my $pid (@pids) {
        opendir my $d, "/proc/$pid/fd" or next;
        my @fds = readdir $d;
        closedir $d;
        for my $fd (@fds) {
            my $l = readlink "/proc/$pid/fd/$fd";
            return $pid if defined $l && $l eq "socket:[$inode]";
        }
    }
    return undef;
}

# ---------------------------------------------------------------------------
# requests on a Test::Chat::WS (the frames passed over go to ->skipped)

# req($ws, { type => 'join', ... }, acks => 1): the reply to a request, the
# first frame that is not a presence, a message or (without acks => 1) an
# ack; undef after 3 s
sub req {
    my ($ws, $r, %o) = @_;
    my $skip = $o{acks} ? qr/^(?:presence|message)$/
                        : qr/^(?:presence|message|ack)$/;
    $ws->send_json($r);
    return $ws->recv_until(sub { $_[0]{type} !~ $skip }, 3);
}

# req_next($ws, { ... } or 'raw text'): send, then the very next message,
# whatever it is (for a connection whose frame order is known)
sub req_next {
    my ($ws, $r) = @_;
    ref $r ? $ws->send_json($r) : $ws->send_text($r);
    return $ws->recv_json(3);
}

# wait_type($ws, 'who', sub { $_[0]{room} eq 'r' }): the next frame of the
# type (that the predicate accepts), within 3 s
sub wait_type {
    my ($ws, $type, $pred) = @_;
    return $ws->recv_until(
        sub { $_[0]{type} eq $type && (!$pred || $pred->($_[0])) }, 3);
}

# ---------------------------------------------------------------------------
# clients with an inbox
#
# A client is a Test::Chat::WS, whose inbox is ->skipped (what recv_until
# passed over), or a record from client(): { user, name, ws, inbox, all,
# welcome, closed }, which also keeps everything received in {all}.
# take() looks in the inbox first, then reads from the wire, setting aside
# what it does not want, so no frame is lost between two takes.

sub _ws    { blessed $_[0] ? $_[0] : $_[0]{ws} }
sub _inbox { blessed $_[0] ? $_[0]->skipped : $_[0]{inbox} }

# client($t, $user, name => 'A:ann', ws => { connect options }): a record
# (see above), connected with auto_pong and past its welcome; a failure is
# reported with diag and leaves a record whose ws is not ok
sub client {
    my ($t, $user, %o) = @_;
    my $ws = $t->ws(path => "/chat?user=$user", auto_pong => 1,
                    %{ $o{ws} || {} });
    my $c = { user => $user, name => defined $o{name} ? $o{name} : $user,
              ws => $ws, inbox => [], all => [] };

    unless ($ws->ok) {
        Test::More::diag("$c->{name}: connect failed: " . ($ws->error || ''));
        return $c;
    }

    my $w = take($c, sub { $_[0]{type} eq 'welcome' }, 3);
    Test::More::diag("$c->{name}: no welcome")
        unless $w && $w->{user} eq $user;
    $c->{welcome} = $w;
    return $c;
}

# send_json($client, type => 'send', room => 'r', ...): one request, no wait
sub send_json {
    my ($x, %m) = @_;
    _ws($x)->send_json({ %m });
}

# one JSON message from the wire into the inbox; false on timeout or EOF
sub pump {
    my ($x, $timeout) = @_;
    my $ws = _ws($x);
    return 0 unless $ws->ok && !(!blessed $x && $x->{closed});
    my $j = $ws->recv_json($timeout > 0.005 ? $timeout : 0.005);
    return 0 unless defined $j;
    push @{ _inbox($x) }, $j;
    push @{ $x->{all} }, $j unless blessed $x;
    return 1;
}

# take($client, sub { ... }, $timeout = 3): the first message the predicate
# accepts, from the inbox, else from the wire; removed from the inbox
sub take {
    my ($x, $pred, $timeout) = @_;
    my $deadline = now() + (defined $timeout ? $timeout : 3);
    my $box = _inbox($x);
    my $seen = 0;
    while (1) {
        for my $i ($seen .. $#$box) {
            return splice(@$box, $i, 1) if $pred->($box->[$i]);
        }
        $seen = @$box;
        my $left = $deadline - now();
        return undef if $left <= 0;
        pump($x, $left) or return undef;
    }
}

# reply($client, 'joined', 'history'): the first message of one of these
# types or an error
sub reply {
    my ($x, @types) = @_;
    my %t = map { $_ => 1 } @types, 'error';
    return take($x, sub { $t{ $_[0]{type} } }, 5);
}

# join_room($client, $room, history => 5): the "joined" reply for $room,
# undef if none came within 3 s (an error stays in the inbox)
sub join_room {
    my ($x, $room, %extra) = @_;
    send_json($x, type => 'join', room => $room, %extra);
    return take($x, sub { $_[0]{type} eq 'joined' && $_[0]{room} eq $room },
                3);
}

# send_msg($client, $room, $content, $ref): sends, returns the ack or the
# error that carries $ref (the message frame, if any, stays in the inbox)
sub send_msg {
    my ($x, $room, $content, $ref) = @_;
    send_json($x, type => 'send', room => $room, content => $content,
              ref => $ref);
    return take($x, sub { ($_[0]{type} eq 'ack' || $_[0]{type} eq 'error')
                          && ($_[0]{ref} // '') eq $ref }, 5);
}

# the message id of an ack, undef for anything else
sub ack_id {
    my ($a) = @_;
    return $a && $a->{type} eq 'ack' ? $a->{id} : undef;
}

# settle($quiet, @clients): everything that arrives within $quiet seconds
# goes to the inboxes
sub settle {
    my ($quiet, @cs) = @_;
    my $deadline = now() + $quiet;
    for my $c (@cs) {
        while (1) {
            my $left = $deadline - now();
            last if $left <= 0;
            pump($c, $left) or last;
        }
        1 while pump($c, 0.01);
    }
}

# extract($client, sub { ... }): removes and returns the inbox messages the
# predicate accepts
sub extract {
    my ($x, $pred) = @_;
    my $box = _inbox($x);
    my (@out, @keep);
    for (@$box) {
        if ($pred->($_)) { push @out, $_ } else { push @keep, $_ }
    }
    @$box = @keep;
    return @out;
}

# collect($client, sub { ... }, $n, $timeout): waits until $n messages the
# predicate accepts were taken (inbox, then wire); returns them
sub collect {
    my ($x, $pred, $n, $timeout) = @_;
    my $deadline = now() + $timeout;
    my @got;
    while (1) {
        push @got, extract($x, $pred);
        last if @got >= $n;
        my $left = $deadline - now();
        last if $left <= 0;
        pump($x, $left);
    }
    return @got;
}

1;
