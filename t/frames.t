# RFC 6455 framing (SPEC §4): every protocol violation closes with the
# right code and then the TCP connection; the good paths (length forms,
# fragmentation with control frames in between, byte-at-a-time input,
# pipelining right after the handshake, ping/pong, the close handshake)
# work; the server stays healthy.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes ();
use MIME::Base64 qw(encode_base64);
use Test::Chat::Nginx;
use Test::Chat::WS;
use JSON::PP ();

plan tests => 201;

my $t = Test::Chat::Nginx->new(
    # the zone must hold messages of the largest chat_max_message_size (128k)
    http      => 'chat_zone chat 4m;',
    server    => <<'_EOS_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_max_message_size 1k;
        }
        location = /big {
            chat chat;
            chat_user $arg_user;
            chat_max_message_size 128k;
        }
_EOS_
    workers   => 1,
    log_level => 'info',
);

my $Seq = 0;

# connect and read the welcome; the connection object, or undef
sub open_ws {
    my ($path, $user) = @_;
    $user = 'u' . ++$Seq unless defined $user;
    my $ws = $t->ws(path => "$path?user=$user", timeout => 3);
    unless ($ws->ok) {
        diag("$path: handshake failed: " . ($ws->error || '?'));
        return undef;
    }
    my $w = $ws->recv_json(3);
    unless ($w && $w->{type} eq 'welcome') {
        diag("$path: no welcome: " . ($ws->error || 'timeout'));
        return undef;
    }
    return $ws;
}

sub join_json {
    my ($room, $size) = @_;
    my $j = qq({"type":"join","room":"$room"});
    return $j unless defined $size;
    my $pad = $size - length $j;
    die "join_json: $size too small" if $pad < 0;
    # JSON whitespace inside the object, before the closing brace
    return substr($j, 0, -1) . (' ' x $pad) . '}';
}

# next "joined" (other JSON messages skipped), undef on timeout/close
sub joined {
    my ($ws, $timeout) = @_;
    return $ws->recv_until(sub { $_[0]{type} eq 'joined' }, $timeout || 3);
}

# a fresh connection can join a room: the server is healthy
sub healthy {
    my ($name) = @_;
    my $ws = open_ws('/chat', 'health');
    my $ok = 0;
    if ($ws) {
        $ws->send_json({ type => 'join', room => 'health' });
        my $j = joined($ws);
        $ok = $j && $j->{room} eq 'health';
        $ws->close(code => 1000, timeout => 2);
    }
    ok($ok, "$name: a new connection still works");
}

# one protocol violation: 5 assertions (close code, TCP close, no reply to
# the offending input, info log, server healthy afterwards)
sub violation {
    my ($name, $code, $send) = @_;
    my $mark = $t->log_mark;
    my $ws = open_ws('/chat');
  SKIP: {
        skip "$name: no connection", 4 unless $ws;
        $send->($ws);
        my ($got, $eof) = $ws->expect_close(timeout => 3);
        is($got, $code, "$name: close code $code");
        ok($eof, "$name: TCP connection closed after the close frame");
        my @data = grep { $_->{opcode} < 8 } @{ $ws->skipped_frames };
        is(scalar @data, 0, "$name: the offending input was not processed")
            or diag("data frames before the close: "
                    . join(' | ', map { substr($_->{payload}, 0, 80) } @data));
        ok($t->wait_for_log(qr/chat: client sent invalid frame/,
                            since => $mark, timeout => 2),
           "$name: violation logged at info level");
    }
    healthy($name);
}

# a long-lived bystander that must not be disturbed by anything below
my $bystander = open_ws('/chat', 'bystander');
ok($bystander, 'bystander connected');
$bystander->send_json({ type => 'join', room => 'lobby' }) if $bystander;
ok($bystander && joined($bystander), 'bystander joined');

# ---------------------------------------------------------------------------
# protocol violations -> 1002

violation('unmasked client frame', 1002, sub {
    $_[0]->send_frame(opcode => 'text', payload => join_json('x'), mask => 0);
});

for my $rsv (1, 2, 4) {
    violation("RSV bits $rsv", 1002, sub {
        $_[0]->send_frame(opcode => 'text', payload => join_json('x'), rsv => $rsv);
    });
}

violation('RSV bit on a ping', 1002, sub {
    $_[0]->send_frame(opcode => 'ping', payload => 'p', rsv => 4);
});

for my $op (3, 0xB) {
    violation(sprintf('unknown opcode 0x%X', $op), 1002, sub {
        $_[0]->send_frame(opcode => $op, payload => 'abc');
    });
}

violation('fragmented control frame (ping with FIN=0)', 1002, sub {
    $_[0]->send_frame(opcode => 'ping', payload => 'p', fin => 0);
});

violation('control frame with 126 bytes payload', 1002, sub {
    $_[0]->send_frame(opcode => 'ping', payload => 'p' x 126);
});

violation('continuation without a start frame', 1002, sub {
    $_[0]->send_frame(opcode => 'continuation', payload => join_json('x'));
});

violation('new text frame while a fragmented message is open', 1002, sub {
    my $ws = shift;
    $ws->send_frame(opcode => 'text', payload => '{"type":"join",', fin => 0);
    $ws->send_frame(opcode => 'text', payload => join_json('x'));
});

# ---------------------------------------------------------------------------
# binary -> 1003

violation('binary message', 1003, sub {
    $_[0]->send_binary(join_json('x'));
});

# ---------------------------------------------------------------------------
# invalid UTF-8 -> 1007

my %bad_utf8 = (
    'invalid UTF-8 (0xFF byte)'            => "\xff",
    'invalid UTF-8 (overlong C0 AF)'       => "\xc0\xaf",
    'invalid UTF-8 (surrogate ED A0 80)'   => "\xed\xa0\x80",
    'invalid UTF-8 (above U+10FFFF)'       => "\xf4\x90\x80\x80",
);
for my $name (sort keys %bad_utf8) {
    violation($name, 1007, sub {
        $_[0]->send_text('{"type":"join","room":"a' . $bad_utf8{$name} . 'b"}');
    });
}

violation('invalid UTF-8 (truncated sequence at the end)', 1007, sub {
    $_[0]->send_text("{\"type\":\"join\",\"room\":\"x\"} \xe2\x82");
});

violation('invalid UTF-8 split across two fragments', 1007, sub {
    # E2 82 | 28: a 3-byte sequence broken by the second fragment
    $_[0]->send_fragmented([ "{\"type\":\"join\",\"room\":\"a\xe2\x82",
                             "\x28\"}" ]);
});

# ---------------------------------------------------------------------------
# over chat_max_message_size (1k) -> 1009

violation('single frame over chat_max_message_size', 1009, sub {
    $_[0]->send_text(join_json('big', 1025));
});

violation('fragmented message whose total exceeds chat_max_message_size', 1009, sub {
    my $j = join_json('big', 1200);
    $_[0]->send_fragmented([ substr($j, 0, 600), substr($j, 600) ]);
});

violation('frame declaring a 2^40 byte payload', 1009, sub {
    $_[0]->send_frame(opcode => 'text', payload => '', declared_len => 1 << 40);
});

# ---------------------------------------------------------------------------
# bad close frames -> 1002 (1007 for a bad reason)

for my $code (0, 999, 1004, 1005, 1006, 1015, 1016, 2999) {
    violation("close frame with invalid code $code", 1002, sub {
        $_[0]->send_frame(opcode => 'close', payload => pack('n', $code));
    });
}

violation('close frame with a 1-byte payload', 1002, sub {
    $_[0]->send_frame(opcode => 'close', payload => "\x03");
});

violation('close frame with an invalid UTF-8 reason', 1007, sub {
    $_[0]->send_frame(opcode => 'close', payload => pack('n', 1000) . "a\xffb");
});

# the server closes TCP by itself when the client does not answer its close
{
    my $ws = open_ws('/chat');
    my $t0 = Time::HiRes::time();
    $ws->send_frame(opcode => 'text', payload => 'x', mask => 0) if $ws;
    my ($code, $eof) = $ws ? $ws->expect_close(timeout => 5, reply => 0) : ();
    my $el = Time::HiRes::time() - $t0;
    note(sprintf "server closed the TCP connection %.2f s after our frame", $el);
    is($code, 1002, 'unanswered close: code 1002');
    ok($eof && $el < 4, 'unanswered close: server closes TCP itself (lingering is bounded)')
        or diag(sprintf 'eof=%s after %.2f s', $eof ? 1 : 0, $el);
}

# ---------------------------------------------------------------------------
# good paths: the three length forms

{
    my $ws = open_ws('/big');
    for my $c ([ 125, 7 ], [ 126, 16 ], [ 65535, 16 ], [ 65536, 64 ], [ 100000, 64 ]) {
        my ($size, $form) = @$c;
        my $room = "len$size";
        $ws->send_frame(opcode => 'text', payload => join_json($room, $size),
                        len_form => $form) if $ws;
        my $j = $ws ? joined($ws, 5) : undef;
        is($j && $j->{room}, $room, "payload $size bytes, $form-bit length: answered");
    }
    $ws->close if $ws;
}

# exactly chat_max_message_size is accepted
{
    my $ws = open_ws('/chat');
    $ws->send_text(join_json('max1k', 1024)) if $ws;
    my $j = $ws ? joined($ws) : undef;
    is($j && $j->{room}, 'max1k', 'message of exactly chat_max_message_size accepted');
    $ws->close if $ws;
}

# ---------------------------------------------------------------------------
# fragmentation

{
    my $ws = open_ws('/chat');
  SKIP: {
        skip 'no connection', 4 unless $ws;
        # first fragment, then a ping: the pong comes while the message is open
        $ws->send_frame(opcode => 'text', payload => '{"type":"join",', fin => 0);
        $ws->send_ping('mid-message');
        my $f = $ws->recv_frame(3);
        ok($f && $f->{type} eq 'pong' && $f->{payload} eq 'mid-message',
           'ping between fragments: pong with the same payload')
            or diag(explain $f);
        $ws->send_frame(opcode => 'continuation', payload => '"room":', fin => 0);
        $ws->send_frame(opcode => 'continuation', payload => '"frag"}', fin => 1);
        $f = $ws->recv_frame(3);
        is($f && $f->{type}, 'text', 'then the reply to the fragmented message');
        my $j = $f ? eval { JSON::PP->new->decode($f->{payload}) } : undef;
        is($j && "$j->{type}:$j->{room}", 'joined:frag', 'joined the room of the fragmented join');

        # all in one write, with pings between every fragment: the second
        # ping comes before the first pong is out, and only the latest ping
        # is answered (RFC 6455 5.5.3; SPEC 8: at most the latest pong queued)
        $ws->send_fragmented([ '{"type":"join",', '"room":', '"frag2"}' ],
                             ping_between => 1);
        my @f = map { $ws->recv_frame(3) } 1 .. 2;
        is_deeply([ map { $_ ? "$_->{type}:" . ($_->{type} eq 'pong'
                                                ? $_->{payload}
                                                : ($_->{payload} =~ /"room":"(\w+)"/)[0])
                             : 'none' } @f ],
                  [ 'pong:ping1', 'text:frag2' ],
                  'pipelined fragments with pings: the latest pong, then the reply');
    }
    $ws->close if $ws;
}

# valid UTF-8 split across fragments is fine
{
    my $ws = open_ws('/chat');
    $ws->send_fragmented([ "{\"type\":\"join\",\"room\":\"caf\xc3", "\xa9\"}" ]) if $ws;
    my $j = $ws ? joined($ws) : undef;
    is($j && $j->{room}, "caf\x{e9}", 'UTF-8 character split across fragments accepted');
    $ws->close if $ws;
}

# empty fragments
{
    my $ws = open_ws('/chat');
    if ($ws) {
        $ws->send_frame(opcode => 'text', payload => '', fin => 0);
        $ws->send_frame(opcode => 'continuation', payload => join_json('empty'), fin => 0);
        $ws->send_frame(opcode => 'continuation', payload => '', fin => 1);
    }
    my $j = $ws ? joined($ws) : undef;
    is($j && $j->{room}, 'empty', 'empty first and last fragments');
    $ws->close if $ws;
}

# ---------------------------------------------------------------------------
# byte at a time

sub nodelay { setsockopt($_[0]->sock, IPPROTO_TCP, TCP_NODELAY, 1) }

{
    my $ws = open_ws('/chat');
  SKIP: {
        skip 'no connection', 2 unless $ws;
        nodelay($ws);
        # 16-bit length form, every byte its own write
        my $frame = Test::Chat::WS->build_frame(opcode => 'text',
                                                payload => join_json('bytes', 300));
        for my $i (0 .. length($frame) - 1) {
            $ws->send_raw(substr($frame, $i, 1));
            Time::HiRes::sleep(0.001);
        }
        my $j = joined($ws);
        is($j && $j->{room}, 'bytes', 'frame sent one byte at a time (16-bit length)');

        # a ping byte by byte
        $frame = Test::Chat::WS->build_frame(opcode => 'ping', payload => 'slow');
        for my $i (0 .. length($frame) - 1) {
            $ws->send_raw(substr($frame, $i, 1));
            Time::HiRes::sleep(0.002);
        }
        my $f = $ws->recv_frame(3);
        ok($f && $f->{type} eq 'pong' && $f->{payload} eq 'slow',
           'ping sent one byte at a time answered');
    }
    $ws->close if $ws;
}

{
    my $ws = open_ws('/big');
    if ($ws) {
        nodelay($ws);
        # 64-bit length form: the 14 header bytes one at a time, then the payload
        my $frame = Test::Chat::WS->build_frame(opcode => 'text',
                                                payload => join_json('bytes64', 70000));
        for my $i (0 .. 13) {
            $ws->send_raw(substr($frame, $i, 1));
            Time::HiRes::sleep(0.002);
        }
        $ws->send_raw(substr($frame, 14, 3));
        Time::HiRes::sleep(0.01);
        $ws->send_raw(substr($frame, 17));
    }
    my $j = $ws ? joined($ws, 5) : undef;
    is($j && $j->{room}, 'bytes64', 'header of a 64-bit length frame one byte at a time');
    $ws->close if $ws;
}

# ---------------------------------------------------------------------------
# bytes pipelined with the handshake

{
    my $key = encode_base64(join('', map { chr int rand 256 } 1 .. 16), '');
    my $port = $t->port;
    my $req = "GET /chat?user=pipe HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n"
            . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n\r\n"
            . Test::Chat::WS->build_frame(opcode => 'text', payload => join_json('piped'))
            . Test::Chat::WS->build_frame(opcode => 'ping', payload => 'piped-ping')
            . Test::Chat::WS->build_frame(opcode => 'text',
                  payload => '{"type":"who","room":"piped"}');
    my $ws = Test::Chat::WS->handshake_raw(port => $port, request => $req, timeout => 3);
    ok($ws->ok, 'pipelined handshake: 101') or diag($ws->error);
    my @f = $ws->ok ? map { $ws->recv_frame(3) } 1 .. 4 : ();
    my @d = map { !$_ ? 'none'
                  : $_->{type} eq 'pong' ? "pong:$_->{payload}"
                  : $_->{type} eq 'text' ? 'text:' . ($_->{payload} =~ /"type":"(\w+)"/)[0]
                  : $_->{type} } @f;
    # a pong may legitimately overtake queued data frames: compare the data
    # frames in order and the pong on its own
    is_deeply([ grep { /^text:/ } @d ], [ 'text:welcome', 'text:joined', 'text:who' ],
              'frames sent with the handshake are not lost (welcome, joined, who)')
        or diag("@d");
    ok(grep({ $_ eq 'pong:piped-ping' } @d), 'ping sent with the handshake answered')
        or diag("@d");
    $ws->close if $ws->ok;
}

# ---------------------------------------------------------------------------
# ping / pong

{
    my $ws = open_ws('/chat');
  SKIP: {
        skip 'no connection', 3 unless $ws;
        for my $p ('hello', '', 'x' x 125) {
            $ws->send_ping($p);
            my $f = $ws->recv_frame(3);
            ok($f && $f->{type} eq 'pong' && $f->{payload} eq $p,
               'ping with ' . length($p) . ' bytes: pong with the same payload');
        }
    }
    # an unsolicited pong is ignored
    $ws->send_pong('unsolicited') if $ws;
    $ws->send_json({ type => 'join', room => 'afterpong' }) if $ws;
    my $f = $ws ? $ws->recv_frame(3) : undef;
    like($f && $f->{payload}, qr/"type":"joined"/, 'unsolicited pong ignored');
    $ws->close if $ws;
}

# ---------------------------------------------------------------------------
# close handshake

for my $c ([ 1000, undef ], [ 1001, undef ], [ 3000, 'see you' ], [ 4999, undef ]) {
    my ($code, $reason) = @$c;
    my $ws = open_ws('/chat');
    my ($got, $eof) = $ws ? $ws->close(code => $code, reason => $reason, timeout => 3) : ();
    is($got, $code, "client close $code" . ($reason ? ' with a reason' : '')
                    . ": server answers $code");
    ok($eof, "client close $code: then TCP close");
}

{
    my $ws = open_ws('/chat');
    my ($got, $eof) = $ws ? $ws->close(code => undef, timeout => 3) : ();
    is($got, 1000, 'client close without a code: server answers 1000');
    ok($eof, 'client close without a code: then TCP close');
}

# data after a close is ignored
{
    my $ws = open_ws('/chat');
    if ($ws) {
        $ws->send_raw(Test::Chat::WS->build_frame(opcode => 'close', payload => pack('n', 1000))
                    . Test::Chat::WS->build_frame(opcode => 'text', payload => join_json('late'))
                    . Test::Chat::WS->build_frame(opcode => 'ping', payload => 'late'));
        $ws->{close_sent} = 1;
    }
    my ($got, $eof) = $ws ? $ws->expect_close(timeout => 3, reply => 0) : ();
    is($got, 1000, 'close + data in one write: close 1000');
    ok($eof, 'close + data in one write: TCP closed');
    my @extra = $ws ? grep { $_->{opcode} != 8 } @{ $ws->skipped_frames } : ();
    is(scalar @extra, 0, 'nothing answered after the client close')
        or diag(explain \@extra);
}

{
    my $ws = open_ws('/chat');
  SKIP: {
        skip 'no connection', 3 unless $ws;
        $ws->send_frame(opcode => 'binary', payload => 'x');
        my $f;
        do { $f = $ws->recv_frame(3) } while ($f && $f->{opcode} != 8);
        is($f && $f->{close_code}, 1003, 'server close 1003, not answered yet');
        # keep talking before answering the close
        $ws->send_json({ type => 'join', room => 'late' });
        $ws->send_ping('late');
        my @late;
        while (my $g = $ws->recv_frame(0.5)) { push @late, $g }
        is(scalar @late, 0, 'data after the server close is ignored')
            or diag(explain \@late);
        $ws->send_close(code => 1003);
        ok($ws->wait_eof(3), 'TCP closed after the client answers the close');
    }
}

# ---------------------------------------------------------------------------

SKIP: {
    skip 'no bystander', 2 unless $bystander;
    $bystander->send_json({ type => 'join', room => 'lobby' });
    my $j = joined($bystander);
    is($j && $j->{room}, 'lobby', 'bystander still served after all of the above');
    my ($code, $eof) = $bystander->close(code => 1000);
    ok($code && $code == 1000 && $eof, 'bystander closes normally');
}

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
is(scalar @bad, 0, 'no [alert], [crit] or [emerg] in error.log')
    or diag(join "\n", @bad);
ok(!grep({ /signal 11|exited on signal/ } $t->grep_error_log(qr/signal/)),
   'no worker crashed');

# stop nginx now, not in global destruction (Test::Chat::Nginx's DESTROY
# asks Test::Builder whether all passed, which warns once Test2 is gone)
undef $t;
