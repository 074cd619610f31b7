# WebSocket over TLS (wss) and HTTP/2 on a chat location.
#
# nginx terminates TLS; the module then reads and writes through c->recv /
# c->send (ngx_ssl_recv / ngx_ssl_write) instead of its own send()/writev()
# path.  Checked through a real nginx:
#   - the 101 handshake and welcome over TLS;
#   - join/send/message/ack between a TLS client and a plain client in the
#     same room (one server with a TLS and a plain listen);
#   - a large history reply over TLS to a client with a small receive
#     buffer (the server's SSL_write has to be retried: partial writes);
#   - a slow reader over TLS is closed with 1008 and the others keep working;
#   - a clean close handshake (1000) over TLS;
#   - a request over HTTP/2 is refused (426, Sec-WebSocket-Version: 13) and
#     the same port keeps serving WebSocket over HTTP/1.1;
#   - no [alert]/[crit]/[emerg] and no crashed worker.
#
# Two of these checks keep earlier bugs fixed:
#   - TLS slow reader: closing it must keep the buffer OpenSSL still holds
#     from a half-done SSL_write() (an SSL_write() retry must see the same
#     buffer), or OpenSSL fails with "bad length" ([crit]) and the client
#     gets EOF instead of close 1008 ("TLS slow reader: closed with 1008",
#     "error.log: no SSL_write() failure while closing the slow reader");
#   - HTTP/2: the 426 carries no "Upgrade" header, a connection-specific
#     header HTTP/2 forbids (RFC 9113 8.2.2), for which curl (nghttp2)
#     would reset the stream and never show the 426 ("HTTP/2: a request to
#     the chat location is refused with 426").

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();
use JSON::PP ();
use Test::Chat::Nginx;
use Test::Chat::Util qw(now);
use Test::Chat::WS;

BEGIN {
    eval { require IO::Socket::SSL; 1 }
        or plan skip_all => 'IO::Socket::SSL is not installed (libio-socket-ssl-perl)';
}
plan skip_all => 'no openssl command (openssl)'
    unless system('openssl version >/dev/null 2>&1') == 0;

plan tests => 58;

use constant HISTORY_MSGS => 150;   # messages in the large history reply
use constant HISTORY_LEN  => 1000;  # bytes of content of each
use constant SLOW_MSGS    => 400;   # messages posted past the slow reader
use constant SLOW_LEN     => 1000;

# content number $i of $len bytes: deterministic, varied, with characters
# JSON must escape and one two-byte UTF-8 character, so that a lost,
# repeated or shifted byte anywhere shows
sub content_for {
    my ($i, $len) = @_;
    my $alpha = join '', 'a' .. 'z', 'A' .. 'Z', 0 .. 9, ' .,;:"\\/<>{}[]';
    my $s = sprintf('%04d:', $i) . "\x{e9}";
    my $x = $i * 7919 + 17;
    while (length($s) + 1 < $len) {      # the e-acute is 2 bytes
        $x = ($x * 1103515245 + 12345) % 2147483648;
        $s .= substr($alpha, ($x >> 8) % length $alpha, 1);
    }
    return $s;
}

# --- nginx: a TLS listen (small sndbuf, so TLS writes block), a plain one,
# and a TLS + HTTP/2 one, all in one server -----------------------------------

my $t = Test::Chat::Nginx->new(conf => <<'_EOC_', workers => 1, log_level => 'info', start => 0);
%%TEST_GLOBALS%%
events { worker_connections 256; }
http {
    %%TEST_GLOBALS_HTTP%%
    chat_zone chat 4m;
    server {
        listen 127.0.0.1:%%PORT%% ssl sndbuf=8k;
        listen 127.0.0.1:%%PORT_1%%;
        listen 127.0.0.1:%%PORT_2%% ssl http2;
        server_name localhost;

        ssl_certificate     %%SERVROOT%%/conf/tls.crt;
        ssl_certificate_key %%SERVROOT%%/conf/tls.key;

        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 200;
        }

        location = /slow {
            chat chat;
            chat_user $arg_user;
            chat_send_buffer 16k;
        }
    }
}
_EOC_

my $sr = $t->servroot;
my $gen = system('openssl', 'req', '-x509', '-newkey', 'ec',
                 '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                 '-keyout', "$sr/conf/tls.key", '-out', "$sr/conf/tls.crt",
                 '-days', '2', '-subj', '/CN=localhost',
                 '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost')
             == 0 && -s "$sr/conf/tls.crt" && -s "$sr/conf/tls.key";
ok($gen, 'self-signed certificate generated with openssl');
my $started = $gen && $t->start;
ok($started, 'nginx started with ssl and http2 listens')
    or diag($t->{start_output});
BAIL_OUT('nginx did not start') unless $started;

my ($tls_port, $plain_port, $h2_port) = ($t->port, $t->port(1), $t->port(2));
my @workers0 = $t->worker_pids;

sub wss {
    my ($path, %o) = @_;
    return $t->ws(path => $path, ssl => 1, timeout => 5, %o);
}

sub ws_plain {
    my ($path, %o) = @_;
    return $t->ws(path => $path, port => $plain_port, timeout => 5, %o);
}

# --- 1. handshake, welcome, TLS <-> plain in one room -------------------------

my $ann = wss('/chat?user=ann');
ok($ann->ok, 'TLS: WebSocket handshake') or diag($ann->error);
is($ann->status, 101, 'TLS: 101 Switching Protocols');
ok($ann->ssl && ref($ann->sock) =~ /SSL/, 'TLS: the client really speaks TLS')
    or diag(ref $ann->sock);
my $w = $ann->recv_json(3);
is_deeply($w, { type => 'welcome', user => 'ann' }, 'TLS: welcome');

my $bob = ws_plain('/chat?user=bob');
ok($bob->ok, 'plain: handshake on the plain listen of the same server')
    or diag($bob->error);
$bob->recv_json(3);                                   # welcome

$ann->send_json({ type => 'join', room => 'mix' });
my $j = $ann->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
is($j && $j->{members}, 1, 'TLS: joined mix');
$bob->send_json({ type => 'join', room => 'mix' });
$j = $bob->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
is($j && $j->{members}, 2, 'plain: joined mix, 2 members');
my $p = $ann->recv_until(sub { $_[0]{type} eq 'presence' }, 3);
is($p && "$p->{user}:$p->{event}", 'bob:join', 'TLS: presence join of the plain client');

my $text1 = "from TLS \x{263a} " . ('t' x 300);
$ann->send_json({ type => 'send', room => 'mix', content => $text1, ref => 'a1' });
my $ack = $ann->recv_until(sub { $_[0]{type} eq 'ack' }, 3);
$ann->clear_skipped;
is($ack && $ack->{ref}, 'a1', 'TLS: ack with the ref');
my $m = $bob->recv_until(sub { $_[0]{type} eq 'message' }, 3);
ok($m && $m->{content} eq $text1 && $m->{user} eq 'ann' && $m->{room} eq 'mix',
   'plain: got the TLS client\'s message intact');
is($m && $m->{id}, $ack && $ack->{id}, 'plain: message id = ack id');

my $text2 = "from plain \x{e9}\"\\ " . ('p' x 3000);
$bob->send_json({ type => 'send', room => 'mix', content => $text2, ref => 'b1' });
my $back = $bob->recv_until(sub { $_[0]{type} eq 'ack' }, 3);
$m = $ann->recv_until(sub { $_[0]{type} eq 'message' && $_[0]{user} eq 'bob' }, 3);
ok($m && $m->{content} eq $text2, 'TLS: got the plain client\'s message intact');
is($m && $m->{id}, $back && $back->{id}, 'TLS: message id = ack id');

# --- 2. a large history reply over TLS ----------------------------------------

my $poster = ws_plain('/chat?user=poster');
$poster->recv_json(3);
$poster->send_json({ type => 'join', room => 'big' });
$poster->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
my (@hist_ids, $post_fail);
for my $i (1 .. HISTORY_MSGS) {
    $poster->send_json({ type => 'send', room => 'big',
                         content => content_for($i, HISTORY_LEN), ref => "h$i" });
    my $a = $poster->recv_until(sub { $_[0]{type} eq 'ack' }, 3);
    unless ($a && $a->{ref} eq "h$i") { $post_fail = "no ack for h$i"; last }
    push @hist_ids, $a->{id};
}
ok(!$post_fail, HISTORY_MSGS . ' messages of ' . HISTORY_LEN . ' bytes posted')
    or diag($post_fail);

# a TLS reader with a 4k receive buffer that waits before reading: the
# server's SSL_write of the ~160 kB reply cannot complete at once
my $carl = wss('/chat?user=carl', rcvbuf => 4096);
ok($carl->ok, 'TLS: carl connected (SO_RCVBUF 4k)') or diag($carl->error);
$carl->recv_json(3);
$carl->send_json({ type => 'join', room => 'big', history => 200 });
Time::HiRes::sleep(0.5);
$j = $carl->recv_json(5);
is($j && $j->{type}, 'joined', 'TLS: carl joined big');
my $h = $carl->recv_json(10);
is($h && $h->{type}, 'history', 'TLS: history reply') or diag($carl->error);
my @hm = $h && ref $h->{messages} eq 'ARRAY' ? @{ $h->{messages} } : ();
is(scalar @hm, HISTORY_MSGS, 'TLS: history has every message');
is_deeply([ map { $_->{id} } @hm ], \@hist_ids, 'TLS: history ids in order');
my @bad_hist = grep { $hm[$_ - 1]{content} ne content_for($_, HISTORY_LEN) }
               1 .. scalar @hm;
ok(@hm && !@bad_hist, 'TLS: every history content intact')
    or diag('corrupt contents: ' . join(', ', @bad_hist[0 .. ($#bad_hist > 9 ? 9 : $#bad_hist)]));
ok($h && $h->{complete}, 'TLS: history complete');
ok(length($carl->{last_raw} || '') > HISTORY_MSGS * HISTORY_LEN,
   'TLS: the reply was one large frame')
    or diag('raw length ' . length($carl->{last_raw} || ''));

# and the connection keeps working afterwards
$carl->send_json({ type => 'send', room => 'big', content => 'after', ref => 'c1' });
my $ca = $carl->recv_until(sub { $_[0]{type} eq 'ack' }, 3);
is($ca && $ca->{ref}, 'c1', 'TLS: carl can send after the large reply');
$m = $poster->recv_until(sub { $_[0]{type} eq 'message' && $_[0]{user} eq 'carl' }, 3);
is($m && $m->{content}, 'after', 'plain: poster got carl\'s message');

# the same again at full speed: a second TLS client that reads at once
my $dora = wss('/chat?user=dora');
$dora->recv_json(3);
$dora->send_json({ type => 'join', room => 'big', history => 200 });
$dora->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
my $h2 = $dora->recv_json(10);
my @hm2 = $h2 && $h2->{type} eq 'history' ? @{ $h2->{messages} } : ();
is_deeply([ map { $_->{content} } @hm2 ],
          [ (map { content_for($_, HISTORY_LEN) } 1 .. HISTORY_MSGS), 'after' ],
          'TLS: a second history reply, read at once, is intact too');

# --- 3. a slow reader over TLS ------------------------------------------------

my $mark_slow = $t->log_mark;
my $reader = wss('/slow?user=reader', rcvbuf => 4096);
ok($reader->ok, 'TLS: slow reader connected (SO_RCVBUF 4k)') or diag($reader->error);
$reader->recv_json(3);
$reader->send_json({ type => 'join', room => 's' });
$j = $reader->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
ok($j, 'TLS: slow reader joined s');
# from here on the reader reads nothing until the others see it leave

my $carol  = wss('/slow?user=carol');
my $sender = ws_plain('/slow?user=sender');
for my $ws ($carol, $sender) {
    $ws->recv_json(3);
    $ws->send_json({ type => 'join', room => 's' });
}
$carol->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
$j = $sender->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
is($j && $j->{members}, 3, 'three members in s (two over TLS)');

# read what the slow reader has, answer its close frame, wait for EOF
my ($rcode, $reof, $drained);
sub drain_reader {
    return if $drained++;
    ($rcode, $reof) = $reader->expect_close(5);
}

my (%got, @sacks, $slow_fail, $reader_left_at);
MSG: for my $i (1 .. SLOW_MSGS) {
    my $content = content_for($i, SLOW_LEN);
    $sender->send_json({ type => 'send', room => 's', content => $content, ref => "$i" });
    for my $c ([ sender => $sender, 2 ], [ carol => $carol, 1 ]) {
        my ($name, $ws, $need) = @$c;
        my $have = 0;
        while ($have < $need) {
            my $x = $ws->recv_json(5);
            unless ($x) {
                $slow_fail = "$name: nothing for message $i: " . ($ws->error || 'timeout');
                last MSG;
            }
            if ($x->{type} eq 'message') {
                push @{ $got{$name} }, $x;
                $have++ if $x->{content} eq $content;
            } elsif ($x->{type} eq 'ack') {
                push @sacks, $x;
                $have++ if defined $x->{ref} && $x->{ref} eq "$i";
            } elsif ($x->{type} eq 'presence' && $x->{event} eq 'leave'
                     && $x->{user} eq 'reader')
            {
                $reader_left_at ||= $i;
                drain_reader();
            }
        }
    }
}
ok(!$slow_fail, 'sender (plain) and carol (TLS) were served throughout')
    or diag($slow_fail);
drain_reader();

is($rcode, 1008, 'TLS slow reader: closed with 1008')
    or diag('no close frame before EOF' . ($reader->{read_error} ? " ($reader->{read_error})" : ''));
ok($reof, 'TLS slow reader: TCP connection closed');
ok($reader_left_at && $reader_left_at <= 300,
   'TLS slow reader: the others saw it leave early (the backlog is bounded)')
    or diag('left at message ' . ($reader_left_at || 'never'));

# what the slow reader got: whole frames, valid JSON, a prefix of the posts
my @rframes = @{ $reader->skipped_frames };
my @rbad = grep { $_->{errors} || ($_->{opcode} != 1 && $_->{opcode} != 8) } @rframes;
ok(!@rbad, 'TLS slow reader: only well-formed text frames before the close')
    or diag(scalar(@rbad) . ' bad frames, first: opcode ' . $rbad[0]{opcode}
            . ' ' . join('; ', @{ $rbad[0]{errors} || [] }));
my (@rmsgs, $rjson_bad);
my $J = JSON::PP->new->utf8;
for my $f (grep { $_->{opcode} == 1 } @rframes) {
    my $d = eval { $J->decode($f->{payload}) };
    unless ($d) { $rjson_bad++; next }
    push @rmsgs, $d if $d->{type} eq 'message';
}
ok(!$rjson_bad, 'TLS slow reader: every text frame is valid JSON')
    or diag("$rjson_bad frames are not JSON");
my @rseq = map { $_->{content} =~ /^(\d{4}):/ ? $1 + 0 : -1 } @rmsgs;
is_deeply(\@rseq, [ 1 .. scalar @rseq ],
          'TLS slow reader: got messages 1..' . scalar(@rseq) . ' in order, no gap');
ok(!grep({ $rmsgs[$_ - 1]{content} ne content_for($_, SLOW_LEN) } 1 .. scalar @rmsgs),
   'TLS slow reader: every content it got is intact');
ok(@rmsgs < SLOW_MSGS, 'TLS slow reader: it was cut off (' . scalar(@rmsgs) . ' messages)');

is_deeply([ map { $_->{ref} } @sacks ], [ map { "$_" } 1 .. SLOW_MSGS ],
          'sender: every ack, in order');
is_deeply([ map { $_->{content} } @{ $got{carol} || [] } ],
          [ map { content_for($_, SLOW_LEN) } 1 .. SLOW_MSGS ],
          'TLS carol: every message, intact and in order');
is_deeply([ map { $_->{id} } @{ $got{carol} || [] } ],
          [ map { $_->{id} } @{ $got{sender} || [] } ], 'same ids for carol and the sender');

$sender->send_json({ type => 'who', room => 's' });
my $who = $sender->recv_until(sub { $_[0]{type} eq 'who' }, 3);
is_deeply([ sort @{ $who ? $who->{users} : [] } ], [qw(carol sender)],
          'who: the slow reader is no longer a member');
ok($t->wait_for_log(qr/reads too slowly/, since => $mark_slow, timeout => 2),
   'error.log: the slow reader was closed for reading too slowly');
my @sslerr = $t->grep_error_log(qr/SSL_write\(\) failed/, since => $mark_slow);
is(scalar @sslerr, 0, 'error.log: no SSL_write() failure while closing the slow reader')
    or diag(join "\n", @sslerr);

# --- 4. clean close over TLS --------------------------------------------------

my ($code, $eof) = $ann->close(code => 1000);
is($code, 1000, 'TLS: close 1000 echoed');
ok($eof, 'TLS: TCP connection closed after the close handshake');
$p = $bob->recv_until(sub { $_[0]{type} eq 'presence' }, 3);
is($p && "$p->{user}:$p->{event}", 'ann:leave', 'plain: presence leave of the TLS client');
($code, $eof) = $carol->close(code => 1000);
ok($code && $code == 1000 && $eof, 'TLS carol closes normally');
($code, $eof) = $carl->close(code => 1000, reason => 'bye');
ok($code && $code == 1000 && $eof, 'TLS carl closes normally');

# --- 5. HTTP/2 ----------------------------------------------------------------

my $curl_v = `curl -V 2>/dev/null` || '';
SKIP: {
    skip 'curl is not installed', 3 unless $curl_v =~ /^curl /;
    skip 'curl has no HTTP/2 support here', 3 unless $curl_v =~ /^Features:.*\bHTTP2\b/m;

    my $hdr = "$sr/h2.headers";
    my $out = `curl --http2 -k -s -D '$hdr' -o /dev/null -w '%{http_code} %{http_version}' --max-time 5 'https://127.0.0.1:$h2_port/chat?user=h2' 2>&1`;
    my $curl_rc = $? >> 8;
    is($out, '426 2', 'HTTP/2: a request to the chat location is refused with 426')
        or diag("curl exit code $curl_rc");
    my $headers = do { local (@ARGV, $/) = ($hdr); <> } || '';
    like($headers, qr/^sec-websocket-version:\s*13\s*$/mi,
         'HTTP/2: the 426 says Sec-WebSocket-Version: 13')
        or diag($headers);

    # the same over HTTP/1.1 on the same port, for comparison
    $out = `curl --http1.1 -k -s -o /dev/null -w '%{http_code} %{http_version}' --max-time 5 'https://127.0.0.1:$h2_port/chat?user=h1' 2>&1`;
    is($out, '426 1.1', 'HTTPS/1.1 without upgrade on the http2 port: 426');
}

my $eve = wss('/chat?user=eve', port => $h2_port);
ok($eve->ok, 'http2 port: WebSocket over TLS + HTTP/1.1 still works afterwards')
    or diag($eve->error);
$eve->recv_json(3);
$eve->send_json({ type => 'join', room => 'mix' });
$eve->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
$eve->send_json({ type => 'send', room => 'mix', content => 'h2 port', ref => 'e1' });
my $ea = $eve->recv_until(sub { $_[0]{type} eq 'ack' }, 3);
is($ea && $ea->{ref}, 'e1', 'http2 port: send acked');
$m = $bob->recv_until(sub { $_[0]{type} eq 'message' && $_[0]{user} eq 'eve' }, 3);
is($m && $m->{content}, 'h2 port', 'plain: got the message from the http2 port');

# --- 6. the log and the workers -----------------------------------------------

for my $ws ($eve, $bob, $poster, $dora, $sender) {
    $ws->close(code => 1000);
}
is_deeply([ sort { $a <=> $b } $t->worker_pids ], [ sort { $a <=> $b } @workers0 ],
          'the worker is the one that started (no crash, no respawn)');
my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]|exited on signal/);
is(scalar @bad, 0, 'no [alert], [crit], [emerg] or crashed worker in error.log')
    or diag(join "\n", @bad);

undef $t;
