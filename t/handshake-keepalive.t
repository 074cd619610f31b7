# A refused upgrade is an ordinary HTTP/1.1 response: it says how long its
# body is (Content-Length), a request body is discarded, and a keep-alive
# connection stays usable, so that a client can, say, answer a 401 with
# credentials on the same connection.  Each refusal (426 without upgrade or
# with a bad version, 401, 403 for the origin and for "deny", 405) is
# followed on the same connection by a plain request, which must be
# answered.  t/handshake.t checks the refusals themselves; its requests ask
# for "close" because both Test::Nginx runners read until nginx closes.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Select;
use IO::Socket::INET;
use Time::HiRes ();
use Test::Chat::Nginx;

my $t = Test::Chat::Nginx->new(
    http    => 'chat_zone chat 1m;',
    server  => <<'_EOS_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_origins https://app.example.com;
        }
        location = /deny { deny all; chat chat; chat_user $arg_user; }
        location = /next { return 200 "next\n"; }
_EOS_
    workers => 1,
);

my $up = "Upgrade: websocket\r\nConnection: Upgrade\r\n"
       . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

my @cases = (
    [ 426, 'plain GET', "GET /chat?user=ann HTTP/1.1\r\nHost: x\r\n\r\n" ],
    [ 426, 'version 8',
      "GET /chat?user=ann HTTP/1.1\r\nHost: x\r\n$up"
      . "Sec-WebSocket-Version: 8\r\n\r\n" ],
    [ 401, 'no user',
      "GET /chat HTTP/1.1\r\nHost: x\r\n$up"
      . "Sec-WebSocket-Version: 13\r\n\r\n" ],
    [ 403, 'origin not listed',
      "GET /chat?user=ann HTTP/1.1\r\nHost: x\r\n$up"
      . "Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example.com\r\n\r\n" ],
    [ 403, 'deny all',
      "GET /deny?user=ann HTTP/1.1\r\nHost: x\r\n$up"
      . "Sec-WebSocket-Version: 13\r\n\r\n" ],
    # a body that would be a request of its own if it were not discarded
    [ 405, 'POST with a body',
      "POST /chat?user=ann HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n$up"
      . "Sec-WebSocket-Version: 13\r\n\r\nGET /evil\r\n\r\n" ],
);

plan tests => 4 * @cases;

my $next = "GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

for my $c (@cases) {
    my ($status, $what, $req) = @$c;

    my ($raw, $eof) = exchange($t->port, $req . $next, 3);
    my ($first, $rest) = response($raw);
    my ($second) = response($rest);

    is($first->{status}, $status, "$what: $status");
    like($first->{head}, qr/^Connection: keep-alive\r$/mi,
         "$what: the connection is kept");
    is_deeply([ $second->{status}, $second->{body} ], [ 200, "next\n" ],
              "$what: the next request on it is answered")
        or diag("got:\n$raw");
    ok($eof, "$what: nginx closes after the Connection: close one");
}


# sends $req, reads until nginx closes or $timeout; returns (bytes, eof)

sub exchange {
    my ($port, $req, $timeout) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => $timeout)
        or die "connect: $!";
    binmode $s;
    syswrite($s, $req) == length $req or die "short write";

    my $sel = IO::Select->new($s);
    my $deadline = Time::HiRes::time() + $timeout;
    my ($buf, $eof) = ('', 0);

    while ((my $left = $deadline - Time::HiRes::time()) > 0) {
        next unless $sel->can_read($left);
        my $n = sysread($s, my $chunk, 65536);
        if (!$n) {
            $eof = 1;
            last;
        }
        $buf .= $chunk;
    }

    close $s;
    return ($buf, $eof);
}


# one Content-Length framed response off the front of $buf: ({status,
# head, body}, what follows it); no status when it is not there whole

sub response {
    my ($buf) = @_;

    return ({}, '') unless defined $buf
        && $buf =~ m{\A(HTTP/1\.1 (\d{3})[^\r]*\r\n(.*?)\r\n)\r\n}s;

    my ($head, $status, $fields) = ($1, $2, $3);
    my ($len) = $fields =~ /^Content-Length: (\d+)\r?$/mi;
    my $off = length($head) + 2;

    return ({ head => $head }, '')
        unless defined $len && length($buf) >= $off + $len;

    return ({ status => $status, head => $head,
              body => substr($buf, $off, $len) },
            substr($buf, $off + $len));
}
