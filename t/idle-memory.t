# What an idle joined connection holds (README, Memory): after the upgrade
# the request is freed and the connection's 512-byte pool is replaced by a
# right-sized one holding the WebSocket's state (the address and log nginx
# still uses are moved into it, so log lines still name the client); a
# message that spans reads takes a buffer that goes when the client is idle
# again; a control frame split between reads still comes whole.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::WS;
use Time::HiRes ();

plan tests => 20;

my $wild = Test::Chat::Nginx::free_port();

# a second server on a wildcard address shared with a specific one: nginx
# looks the local address up into the connection's pool (getsockname()),
# which is then moved too

my $t = Test::Chat::Nginx->new(
    http => <<"_EOC_",
    chat_zone chat 1m;
    limit_conn_zone \$binary_remote_addr zone=perip:1m;

    server {
        listen $wild;
        listen 127.0.0.2:$wild;

        location = /chat {
            chat chat;
            chat_user \$arg_user;
        }
    }
_EOC_
    log_level => 'debug',
    workers => 1,
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
        }

        # limit_conn counts the connection until it closes, with a
        # cleanup on the request: the request and the pool are kept
        location = /limited {
            limit_conn perip 10;
            chat chat;
            chat_user $arg_user;
        }
_EOC_
);

sub client {
    my ($user) = @_;
    my $ws = $t->ws(path => "/chat?user=$user");
    return undef unless $ws->ok;
    my $w = $ws->recv_json(3);
    return undef unless $w && $w->{type} eq 'welcome';
    $ws->send_json({ type => 'join', room => 'lobby' });
    for (1 .. 5) {
        my $m = $ws->recv_json(3) or last;
        return $ws if $m->{type} eq 'joined';
    }
    return undef;
}

my $mark = $t->log_mark;

my $alice = client('alice');
my $bob = client('bob');
ok($alice && $bob, 'alice and bob joined');

my @started = $t->grep_error_log(qr/chat ws: started/, since => $mark);
is(scalar @started, 2, 'two connections started');

my ($size, $blocks, $large) = ($started[0] || '')
    =~ /request freed, connection pool of (\d+) bytes in (\d+) blocks, (\d+) large/;

# the whole state, ours included (nginx's pool alone was 512 bytes, and
# ngx_chat_ws_t took a second 512-byte block)

ok(defined $size && $size < 768,
   'the connection pool, with the WebSocket state, under 768 bytes'
   . (defined $size ? " ($size)" : ''));
is($blocks, 1, 'in one block');
is($large, 0, 'no large allocation (the header buffer is gone)');
ok(scalar $t->grep_error_log(qr/chat ws: connection pool replaced, \d+ bytes/,
                             since => $mark),
   'the pool was replaced');

# a message in two fragments, read apart: a buffer while it spans reads,
# freed once the client is idle

my $content = 'x' x 600;
my $json = '{"type":"send","room":"lobby","ref":"f1","content":"'
           . $content . '"}';
my $half = int(length($json) / 2);

$mark = $t->log_mark;

$alice->send_frame(opcode => 1, fin => 0, payload => substr($json, 0, $half));
Time::HiRes::sleep(0.3);
$alice->send_frame(opcode => 0, fin => 1, payload => substr($json, $half));

my $got;
for (1 .. 10) {
    my $m = $bob->recv_json(3) or last;
    if ($m->{type} eq 'message') { $got = $m; last }
}
ok($got && $got->{content} eq $content, 'the fragmented message was delivered');

ok($t->wait_for_log(qr/chat ws: idle, message buffer of \d+ bytes freed/,
                    since => $mark),
   'the message buffer was freed when the client went idle');

# a ping split between two reads: its payload is kept meanwhile

$alice->drain_json(0.3);

my $ping = $alice->build_frame(opcode => 9, payload => 'abcdefghij');
$alice->send_raw(substr($ping, 0, 8));
Time::HiRes::sleep(0.3);
$alice->send_raw(substr($ping, 8));

my $pong = $alice->recv_frame(3);
ok($pong && $pong->{opcode} == 10, 'a ping split between reads: a pong');
is($pong && $pong->{payload}, 'abcdefghij', 'with the ping\'s payload');

# and a whole one, unmasked where it was read

$alice->send_ping('whole');
$pong = $alice->recv_frame(3);
is($pong && $pong->{payload}, 'whole', 'a whole ping: its pong');

# on the wildcard address

$mark = $t->log_mark;

my $carol = Test::Chat::WS->connect(port => $wild, path => '/chat?user=carol',
                                    timeout => 3);
my $w = $carol->ok ? $carol->recv_json(3) : undef;
ok($w && $w->{type} eq 'welcome', 'a connection on the wildcard address');

my ($wsize) = ($t->wait_for_log(qr/chat ws: connection pool replaced/,
                                since => $mark) || '') =~ /(\d+) bytes/;
ok(defined $wsize && $wsize == $size + 16,
   'its pool also holds the local address (16 bytes more)'
   . (defined $wsize ? " ($wsize)" : ''));

$carol->send_json({ type => 'join', room => 'lobby' });
my $j;
for (1 .. 5) {
    $j = $carol->recv_json(3) or last;
    last if $j->{type} eq 'joined';
}
ok($j && $j->{type} eq 'joined', 'it joins');
$carol->disconnect;

# limit_conn: the request is kept, and so is nginx's pool

$mark = $t->log_mark;

my $dan = $t->ws(path => '/limited?user=dan');
$w = $dan->ok ? $dan->recv_json(3) : undef;
ok($w && $w->{type} eq 'welcome', 'a connection under limit_conn');

like($t->wait_for_log(qr/chat ws: started/, since => $mark) || '',
     qr/request kept, connection pool of \d+ bytes/,
     'its request is kept');

$dan->send_json({ type => 'join', room => 'lobby' });
$j = undef;
for (1 .. 5) {
    $j = $dan->recv_json(3) or last;
    last if $j->{type} eq 'joined';
}
ok($j && $j->{type} eq 'joined', 'it joins');
$dan->disconnect;

# the log, from the moved log and context, still names the client

# bob goes first: were alice's close first, the presence event it sends
# bob could meet bob's reset and close his connection on the write side,
# with another line (the check raced on that)

$mark = $t->log_mark;
$bob->disconnect;

my $closed = $t->wait_for_log(qr/chat: client closed connection/,
                              since => $mark, timeout => 10);
like($closed || '', qr/client: 127\.0\.0\.1, server: /,
     'a log line after the upgrade names the client and server');

$alice->send_close(code => 1000);
$alice->wait_eof(3);

Time::HiRes::sleep(0.3);

my $log = $t->error_log;
unlike($log, qr/\[(alert|emerg|crit)\]/, 'no alert in the log');
ok($t->running, 'nginx still running');
