# Self-test of the WebSocket test client t/lib/Test/Chat/WS.pm against the
# tiny Perl echo server t/lib/ws_echo_server.pl (no nginx involved).

use strict;
use warnings;
use Test::More;
use FindBin ();
use lib "$FindBin::Bin/lib";
use Test::Chat::WS;

my $server = "$FindBin::Bin/lib/ws_echo_server.pl";
# a global handle: a file-scoped lexical would be closed (waiting for the
# server to exit) before the END block below gets to kill it
our $SRV;
my $pid = open($SRV, '-|', $^X, $server, '--port', 0, '--idle', 20)
    or die "cannot start $server: $!";
my $line = <$SRV>;
my ($port) = defined $line ? $line =~ /^PORT (\d+)/ : ();
BAIL_OUT("echo server did not start") unless $port;

END { kill 'TERM', $pid if $pid }

sub ws { Test::Chat::WS->connect(port => $port, timeout => 3, @_) }

# --- handshake -------------------------------------------------------------
{
    my $ws = ws(path => '/chat?user=ann', headers => { Origin => 'http://localhost' });
    ok($ws->ok, 'handshake ok') or diag($ws->error);
    is($ws->status, 101, 'status 101');
    ok($ws->accept_ok, 'Sec-WebSocket-Accept verified');
    is($ws->header('Sec-WebSocket-Accept'),
       Test::Chat::WS->expected_accept($ws->key), 'accept header value');
    is(lc $ws->header('upgrade'), 'websocket', 'Upgrade header');
    like($ws->{request}, qr{^GET /chat\?user=ann HTTP/1\.1\r\n}, 'request line');
    like($ws->{request}, qr{^Origin: http://localhost\r$}m, 'extra header sent');

    # echo
    ok($ws->send_text('hello'), 'send_text');
    my $f = $ws->recv_frame(timeout => 2);
    ok($f, 'got a frame');
    is($f->{opcode}, 1, 'text opcode');
    ok($f->{fin}, 'fin set');
    is($f->{payload}, 'hello', 'echoed payload');
    ok(!$f->{masked}, 'server frame unmasked');
    ok(!$f->{errors}, 'no protocol errors');

    # JSON round trip
    $ws->send_json({ type => 'say', text => "caf\x{e9} \x{263a}" });
    my $j = $ws->recv_json(2);
    is_deeply($j, { type => 'say', text => "caf\x{e9} \x{263a}" }, 'recv_json decodes UTF-8 JSON');

    # binary
    $ws->send_binary("\x00\x01\xff");
    $f = $ws->recv_frame(2);
    is($f->{opcode}, 2, 'binary echoed');
    is($f->{payload}, "\x00\x01\xff", 'binary payload');

    # ping -> pong
    $ws->send_ping('p1');
    $f = $ws->recv_frame(2);
    is($f->{type}, 'pong', 'pong for ping');
    is($f->{payload}, 'p1', 'pong payload');

    # length forms
    $ws->send_text('y' x 200);
    $f = $ws->recv_frame(2);
    is($f->{len_form}, 16, '16-bit length from server');
    is(length $f->{payload}, 200, '200 bytes echoed');
    $ws->send_text('z' x 70000);
    $f = $ws->recv_frame(3);
    is($f->{len_form}, 64, '64-bit length from server');
    is(length $f->{payload}, 70000, '70000 bytes echoed');
    $ws->send_frame(opcode => 'text', payload => 'hi', len_form => 64);
    $f = $ws->recv_frame(2);
    is($f->{payload}, 'hi', 'non-minimal 64-bit length accepted by the echo server');

    # fragmented send with a ping between the fragments
    $ws->send_fragmented(['ab', 'cd', 'ef'], ping_between => 1);
    my @got = map { $ws->recv_frame(2) } 1 .. 3;
    is_deeply([ map { $_->{type} } @got ], [qw(pong pong text)],
              'two pongs, then the joined message');
    is($got[2]{payload}, 'abcdef', 'fragments joined');

    # server fragments a message (with a ping in the middle)
    $ws->send_text('cmd:fragments');
    my $m = $ws->recv_message(2);
    is($m->{payload}, 'frag-ment-ed', 'recv_message joins fragments');
    is($m->{fragments}, 3, 'three fragments');
    is(scalar(grep { $_->{type} eq 'ping' } @{ $ws->skipped_frames }), 1,
       'ping in between kept in skipped_frames');

    # server ping, auto_pong
    $ws->auto_pong(1);
    $ws->send_text('cmd:ping');
    $f = $ws->recv_frame(2);
    is($f->{payload}, 'got pong srv-ping', 'auto_pong answered the server ping');
    is($ws->pings_answered, 1, 'one ping answered');
    $ws->auto_pong(0);
    $ws->send_text('cmd:ping');
    $f = $ws->recv_frame(2);
    is($f->{type}, 'ping', 'without auto_pong the test sees the ping');

    # recv_until skips messages
    $ws->clear_skipped;
    $ws->send_json({ type => 'a', n => 1 });
    $ws->send_json({ type => 'b', n => 2 });
    $ws->send_json({ type => 'joined', n => 3 });
    $m = $ws->recv_until(sub { $_[0]{type} eq 'joined' }, 2);
    is($m->{n}, 3, 'recv_until found the message');
    is_deeply([ map { $_->{type} } @{ $ws->skipped } ], [qw(a b)], 'skipped kept');

    # timeout
    my $t0 = time;
    is($ws->recv_frame(timeout => 0.3), undef, 'recv_frame times out');
    ok($ws->timed_out, 'timed_out flag');
    ok(!$ws->eof, 'not eof');

    # client-initiated close handshake
    my ($code, $eof) = $ws->close(code => 1000);
    is($code, 1000, 'server echoed close code 1000');
    ok($eof, 'server closed TCP');
}

# --- server-initiated close ------------------------------------------------
{
    my $ws = ws(path => '/?greet=1');
    ok($ws->ok, 'handshake with greeting');
    my $f = $ws->recv_frame(2);
    is($f->{payload}, 'welcome', 'frame sent together with the 101 kept');
    $ws->send_text('cmd:close');
    my ($code, $eof, $reason) = $ws->expect_close(2);
    is($code, 1001, 'server close code');
    is($reason, 'bye', 'server close reason');
    ok($eof, 'TCP closed after our close reply');
}

# --- unmasked client frame -> 1002 ------------------------------------------
{
    my $ws = ws();
    $ws->send_frame(opcode => 'text', payload => 'bad', mask => 0);
    my ($code, $eof) = $ws->expect_close(2);
    is($code, 1002, 'unmasked frame rejected with 1002');
    ok($eof, 'and the connection closed');
}

# --- RSV bits -> 1002 -------------------------------------------------------
{
    my $ws = ws();
    $ws->send_frame(opcode => 'text', payload => 'bad', rsv => 4);
    is(scalar $ws->expect_close(2), 1002, 'RSV bits rejected');
}

# --- masked server frame fails loudly ----------------------------------------
{
    my $ws = ws();
    $ws->send_text('cmd:masked');
    my $f = eval { $ws->recv_frame(2) };
    like($@, qr/MASKED frame/, 'masked server frame croaks');
}

# --- TCP drop without close frame -------------------------------------------
{
    my $ws = ws();
    $ws->send_text('cmd:drop');
    is($ws->recv_frame(2), undef, 'no frame');
    ok($ws->eof, 'eof flag');
    ok(!$ws->timed_out, 'not a timeout');
    my ($code, $eof) = $ws->expect_close(1);
    ok(!defined $code && $eof, 'expect_close: no code, eof');
}

# --- recv_json on a close frame ------------------------------------------------
{
    my $ws = ws();
    $ws->send_text('cmd:close');
    is($ws->recv_json(2), undef, 'recv_json undef on close');
    is($ws->close_code, 1001, 'close code recorded');
    my ($code, $eof) = $ws->expect_close(2);
    is($code, 1001, 'expect_close after recv_json');
    ok($eof, 'eof');
}

# --- handshake failures ----------------------------------------------------
{
    my $ws = ws(path => '/notfound');
    ok(!$ws->ok, 'not ok on 404');
    is($ws->status, 404, 'status 404');
    is($ws->body, "not found\n", 'error body');
    is($ws->header('content-type'), 'text/plain', 'error headers');

    $ws = ws(path => '/badaccept');
    ok(!$ws->ok, 'not ok on a wrong accept value');
    is($ws->status, 101, 'still 101');
    like($ws->error, qr/bad Sec-WebSocket-Accept/, 'error explains');

    $ws = ws(headers => { 'Sec-WebSocket-Version' => 8 });
    is($ws->status, 400, 'version override sent');
    is($ws->header('Sec-WebSocket-Version'), '13', 'server tells its version');

    $ws = ws(headers => { 'Sec-WebSocket-Key' => undef });
    is($ws->status, 400, 'header deleted with undef');
    like($ws->{request}, qr/\A(?!.*Sec-WebSocket-Key)/s, 'no key in request');

    $ws = Test::Chat::WS->handshake_raw(
        port => $port, timeout => 2,
        request => "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 . "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 . "Sec-WebSocket-Version: 13\r\n\r\n");
    ok($ws->ok, 'handshake_raw ok');
    is($ws->header('sec-websocket-accept'), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=',
       'RFC 6455 sample accept value');

    my $closed = Test::Chat::WS->connect(port => 1, timeout => 1);
    ok(!$closed->ok, 'connection refused is not ok');
    like($closed->error, qr/cannot connect/, 'connect error');
}

# --- build_frame ------------------------------------------------------------
{
    my $fr = Test::Chat::WS->build_frame(opcode => 'ping', payload => 'x',
                                         mask => 0, fin => 1);
    is($fr, "\x89\x01x", 'unmasked ping frame bytes');
    $fr = Test::Chat::WS->build_frame(opcode => 1, payload => 'abc', mask => 0,
                                      len_form => 16, rsv => 1, fin => 0);
    is($fr, "\x11\x7e\x00\x03abc", 'rsv, fin=0, 16-bit length');
    $fr = Test::Chat::WS->build_frame(opcode => 2, payload => 'abcd',
                                      mask_key => "\x00\x00\x00\x00");
    is($fr, "\x82\x84\x00\x00\x00\x00abcd", 'masked with a zero key');
    $fr = Test::Chat::WS->build_frame(opcode => 1, payload => '', mask => 0,
                                      declared_len => 1 << 40);
    is(length $fr, 10, 'declared 64-bit length without the payload');
}

done_testing();
