#!/usr/bin/perl
# Tiny WebSocket echo server, only for t/001-wsclient.t (tests the test
# client t/lib/Test/Chat/WS.pm against something independent of nginx).
#
#   perl t/lib/ws_echo_server.pl [--port N] [--idle 30]
#
# Listens on 127.0.0.1 (port 0 = pick a free one), prints "PORT <n>" on
# stdout, forks one child per connection, exits after --idle seconds
# without a new connection.  Behaviour:
#   GET /notfound        -> 404 with a small body
#   GET /badaccept       -> 101 with a wrong Sec-WebSocket-Accept
#   GET /...?greet=1     -> 101 and a "welcome" text frame in the same write
#   version != 13        -> 400 with "Sec-WebSocket-Version: 13"
#   text/binary message  -> echoed back in one frame (fragments joined)
#   ping                 -> pong with the same payload
#   close                -> close frame with the same code, then TCP close
#   unmasked client frame or RSV bits -> close 1002, TCP close
#   text "cmd:ping"      -> server sends ping "srv-ping"; the client's pong
#                           is reported as text "got pong srv-ping"
#   text "cmd:close"     -> server sends close 1001 "bye", waits up to 2 s
#                           for the client's close, closes TCP
#   text "cmd:fragments" -> "frag-","ment-","ed" as 3 frames, a ping between
#   text "cmd:masked"    -> a (forbidden) masked text frame "masked"
#   text "cmd:drop"      -> TCP close without a close frame
#   text "cmd:big:N"     -> text frame of N "x" bytes

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Digest::SHA qw(sha1_base64);
use POSIX ();

my $buf;    # per-connection read buffer (one connection per process)
my %opt = (port => 0, idle => 30);
while (@ARGV) {
    my $a = shift @ARGV;
    if ($a eq '--port') { $opt{port} = shift @ARGV }
    elsif ($a eq '--idle') { $opt{idle} = shift @ARGV }
    else { die "unknown option $a\n" }
}

my $listen = IO::Socket::INET->new(
    LocalAddr => '127.0.0.1', LocalPort => $opt{port},
    Proto => 'tcp', Listen => 16, ReuseAddr => 1,
) or die "listen: $!\n";
$| = 1;
print "PORT ", $listen->sockport, "\n";

$SIG{CHLD} = 'IGNORE';
my $sel = IO::Select->new($listen);
my %kids;
while (1) {
    my @r = $sel->can_read($opt{idle});
    last unless @r;
    my $c = $listen->accept or next;
    my $pid = fork;
    if (!defined $pid) { close $c; next }
    if ($pid == 0) {
        close $listen;
        handle($c);
        POSIX::_exit(0);
    }
    $kids{$pid} = 1;
    close $c;
}
kill 'TERM', keys %kids;
exit 0;

# ---------------------------------------------------------------------------

sub rd {
    my ($c, $need) = @_;
    while (length $buf < $need) {
        my $n = sysread($c, my $chunk, 65536);
        return 0 unless $n;
        $buf .= $chunk;
    }
    return 1;
}

sub frame {
    my ($op, $payload, %o) = @_;
    my $fin = exists $o{fin} ? $o{fin} : 1;
    my $f = chr(($fin ? 0x80 : 0) | $op);
    my $len = length $payload;
    my $m = $o{mask} ? 0x80 : 0;
    if ($len < 126)      { $f .= chr($m | $len) }
    elsif ($len < 65536) { $f .= chr($m | 126) . pack('n', $len) }
    else                 { $f .= chr($m | 127) . pack('Q>', $len) }
    if ($o{mask}) {
        my $key = "\x01\x02\x03\x04";
        my $k = $key x (int($len / 4) + 1);
        $f .= $key . ($payload ^ substr($k, 0, $len));
    } else {
        $f .= $payload;
    }
    return $f;
}

sub out {
    my ($c, $data) = @_;
    local $SIG{PIPE} = 'IGNORE';
    while (length $data) {
        my $n = syswrite($c, $data);
        return unless $n;
        substr($data, 0, $n, '');
    }
}

sub read_frame {
    my $c = shift;
    rd($c, 2) or return;
    my ($b0, $b1) = unpack 'CC', $buf;
    my $len = $b1 & 0x7f;
    my $off = 2;
    if ($len == 126) { rd($c, 4) or return; $len = unpack 'n', substr($buf, 2, 2); $off = 4 }
    elsif ($len == 127) { rd($c, 10) or return; $len = unpack 'Q>', substr($buf, 2, 8); $off = 10 }
    my $masked = $b1 >> 7;
    my $key = '';
    if ($masked) { rd($c, $off + 4) or return; $key = substr($buf, $off, 4); $off += 4 }
    rd($c, $off + $len) or return;
    my $p = substr($buf, $off, $len);
    substr($buf, 0, $off + $len, '');
    if ($masked && $len) {
        my $k = $key x (int($len / 4) + 1);
        $p ^= substr($k, 0, $len);
    }
    return { fin => $b0 >> 7, rsv => ($b0 >> 4) & 7, op => $b0 & 15,
             masked => $masked, payload => $p };
}

sub handle {
    my $c = shift;
    binmode $c;
    $buf = '';
    alarm 60;
    while (index($buf, "\r\n\r\n") < 0) {
        my $n = sysread($c, my $chunk, 65536);
        return unless $n;
        $buf .= $chunk;
    }
    my $hend = index($buf, "\r\n\r\n");
    my $head = substr($buf, 0, $hend + 4, '');
    my ($path) = $head =~ m{^\S+\s+(\S+)};
    my %h;
    for (split /\r\n/, $head) {
        $h{lc $1} = $2 if /^([^:]+):\s*(.*?)\s*$/;
    }
    if ($path =~ m{^/notfound}) {
        out($c, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
              . "Content-Length: 10\r\nConnection: close\r\n\r\nnot found\n");
        return;
    }
    my $key = $h{'sec-websocket-key'};
    if (!defined $key || ($h{'sec-websocket-version'} || '') ne '13'
        || lc($h{upgrade} || '') ne 'websocket')
    {
        out($c, "HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n"
              . "Content-Length: 12\r\nConnection: close\r\n\r\nbad request\n");
        return;
    }
    my $accept = sha1_base64($key . '258EAFA5-E914-47DA-95CA-C5AB0DC85B11') . '=';
    $accept = 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' if $path =~ m{^/badaccept};
    my $resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             . "Connection: Upgrade\r\nSec-WebSocket-Accept: $accept\r\n\r\n";
    $resp .= frame(1, 'welcome') if $path =~ /[?&]greet=1/;
    out($c, $resp);

    my ($mop, $mbuf);
    while (1) {
        alarm 60;
        my $f = read_frame($c) or return;
        if (!$f->{masked}) {
            out($c, frame(8, pack('n', 1002) . 'unmasked frame'));
            return;
        }
        if ($f->{rsv}) {
            out($c, frame(8, pack('n', 1002) . 'rsv'));
            return;
        }
        my $op = $f->{op};
        if ($op == 9) { out($c, frame(10, $f->{payload})); next }
        if ($op == 10) {
            out($c, frame(1, "got pong $f->{payload}")) if $f->{payload} eq 'srv-ping';
            next;
        }
        if ($op == 8) {
            my $code = length($f->{payload}) >= 2 ? substr($f->{payload}, 0, 2) : '';
            out($c, frame(8, $code));
            return;
        }
        if ($op == 0) {
            $mbuf .= $f->{payload} if defined $mop;
        } elsif ($op == 1 || $op == 2) {
            ($mop, $mbuf) = ($op, $f->{payload});
        } else {
            out($c, frame(8, pack('n', 1002) . 'bad opcode'));
            return;
        }
        next unless $f->{fin} && defined $mop;
        my ($mo, $m) = ($mop, $mbuf);
        undef $mop;
        if ($mo == 1 && $m eq 'cmd:ping') {
            out($c, frame(9, 'srv-ping'));
        } elsif ($mo == 1 && $m eq 'cmd:close') {
            out($c, frame(8, pack('n', 1001) . 'bye'));
            alarm 2;
            while (my $r = read_frame($c)) { last if $r->{op} == 8 }
            return;
        } elsif ($mo == 1 && $m eq 'cmd:fragments') {
            out($c, frame(1, 'frag-', fin => 0) . frame(9, 'mid')
                  . frame(0, 'ment-', fin => 0) . frame(0, 'ed'));
        } elsif ($mo == 1 && $m eq 'cmd:masked') {
            out($c, frame(1, 'masked', mask => 1));
        } elsif ($mo == 1 && $m eq 'cmd:drop') {
            return;
        } elsif ($mo == 1 && $m =~ /^cmd:big:(\d+)$/) {
            out($c, frame(1, 'x' x $1));
        } else {
            out($c, frame($mo, $m));
        }
    }
}
