# Slow reader (SPEC §5): a member that does not read is closed with 1008
# once its queued output would exceed chat_send_buffer; the worker does
# not buffer without bound and the other members are unaffected.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Select ();
use Time::HiRes ();
use Test::Chat::Nginx;
use Test::Chat::Util qw(now raw_ws);
use Test::Chat::WS;

plan tests => 21;

use constant MESSAGES => 400;
use constant CONTENT  => 1000;      # bytes of content per message (< 4k)

# sndbuf on the listen socket keeps the kernel's share of the backlog small,
# so the module's own queue (chat_send_buffer) is what fills up
my $t = Test::Chat::Nginx->new(conf => <<'_EOC_', workers => 1, log_level => 'info');
%%TEST_GLOBALS%%
events { worker_connections 64; }
http {
    %%TEST_GLOBALS_HTTP%%
    chat_zone chat 1m;
    server {
        listen 127.0.0.1:%%PORT%% sndbuf=8k;
        server_name localhost;
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_send_buffer 16k;
        }
    }
}
_EOC_

# --- the reader: a raw socket with a small receive buffer (Test::Chat::Util)

sub raw_connect { raw_ws($t, $_[0]) }

# read what is there (up to $timeout); 0 on EOF
sub raw_fill {
    my ($r, $timeout) = @_;
    return 0 if $r->{eof};
    $r->{sel}->can_read($timeout) or return 1;
    my $n = sysread($r->{sock}, $r->{buf}, 65536, length $r->{buf});
    if (!$n) {
        $r->{eof} = 1;
        $r->{read_error} = $! unless defined $n;
        return 0;
    }
    return 1;
}

# server frames (unmasked); returns (\@frames, $clean): $clean is false when
# the bytes do not end on a frame boundary
sub parse_frames {
    my ($buf) = @_;
    my @f;
    while (length $buf) {
        return (\@f, 0) if length $buf < 2;
        my ($b0, $b1) = unpack 'CC', $buf;
        return (\@f, 0) if $b1 & 0x80;           # masked: not from a server
        my ($len, $off) = ($b1 & 0x7f, 2);
        if ($len == 126) {
            return (\@f, 0) if length $buf < 4;
            ($len, $off) = (unpack('n', substr($buf, 2, 2)), 4);
        } elsif ($len == 127) {
            return (\@f, 0) if length $buf < 10;
            ($len, $off) = (unpack('Q>', substr($buf, 2, 8)), 10);
        }
        return (\@f, 0) if length $buf < $off + $len;
        push @f, { opcode => $b0 & 0x0f, fin => $b0 >> 7, rsv => ($b0 >> 4) & 7,
                   payload => substr($buf, $off, $len) };
        substr($buf, 0, $off + $len, '');
    }
    return (\@f, 1);
}

# a close frame at the very end of the stream, found without parsing what
# comes before it (tolerant of a cut message); its code or undef
sub tail_close_code {
    my ($buf) = @_;
    my $l = length $buf;
    for my $len (0 .. 125) {
        my $p = $l - 2 - $len;
        last if $p < 0;
        next unless substr($buf, $p, 2) eq "\x88" . chr($len);
        return $len >= 2 ? unpack('n', substr($buf, $p + 2, 2)) : 0;
    }
    return undef;
}

sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)\s+kB/ }
    return undef;
}

# --- set up: reader, carol (a reading member) and the sender join room r ------

my $reader = raw_connect('reader');
ok($reader, 'reader connected (SO_RCVBUF 4k)');
BAIL_OUT('reader could not connect') unless $reader;
syswrite($reader->{sock}, Test::Chat::WS->build_frame(
    opcode => 'text', payload => '{"type":"join","room":"r"}'));
{
    my $deadline = now() + 3;
    raw_fill($reader, $deadline - now())
        while $reader->{buf} !~ /"type":"joined"/ && !$reader->{eof} && now() < $deadline;
}
like($reader->{buf}, qr/"type":"joined","room":"r"/, 'reader joined r');
# from here on the reader reads nothing until the end

my %ws;
for my $user (qw(carol sender)) {
    my $ws = $t->ws(path => "/chat?user=$user", timeout => 3);
    die "$user: " . ($ws->error || 'handshake failed') unless $ws->ok;
    $ws->send_json({ type => 'join', room => 'r' });
    $ws{$user} = $ws;
}
my ($carol, $sender) = @ws{qw(carol sender)};
my $jc = $carol->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
my $js = $sender->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
is($js && $js->{members}, 3, 'three members in r');

my ($worker) = $t->worker_pids;
my $rss0 = rss_kb($worker);

# read everything the slow reader has left, answer its close frame, wait for
# the TCP close.  Done as soon as the others see it leave: the server gives a
# client that does not read its close frame only a short time (it lingers
# at most 2 s), and the test must not depend on how fast it posts.
my ($drained, $replied, $code);
sub drain_reader {
    my $start = now();
    $drained = 1;
    local $SIG{PIPE} = 'IGNORE';
    my $deadline = now() + 5;
    while (!$reader->{eof} && now() < $deadline) {
        raw_fill($reader, $deadline - now());
        if (!$replied && defined($code = tail_close_code($reader->{buf}))) {
            # answer the close, then the server closes the TCP connection
            syswrite($reader->{sock}, Test::Chat::WS->build_frame(
                opcode => 'close', payload => pack('n', 1008)));
            $replied = 1;
        }
    }
    return $start;
}

# --- the sender posts MESSAGES messages, one at a time ------------------------

my (%got, %acks, @left, $left_at, $reader_left_at, $drain_start);
my $fail;
my $t0 = now();
MSG: for my $i (1 .. MESSAGES) {
    my $content = sprintf('%04d:', $i) . ('x' x (CONTENT - 5));
    $sender->send_json({ type => 'send', room => 'r', content => $content, ref => "$i" });
    # the sender needs its message and its ack, carol the message
    for my $c ([ sender => $sender, 2 ], [ carol => $carol, 1 ]) {
        my ($name, $ws, $need) = @$c;
        my $have = 0;
        while ($have < $need) {
            my $m = $ws->recv_json(5);
            unless ($m) {
                $fail = "$name: nothing for message $i: " . ($ws->error || 'timeout');
                last MSG;
            }
            if ($m->{type} eq 'message') {
                push @{ $got{$name} }, $m;
                $have++ if $m->{content} eq $content;
            } elsif ($m->{type} eq 'ack') {
                push @{ $acks{$name} }, $m;
                $have++ if defined $m->{ref} && $m->{ref} eq "$i";
            } elsif ($m->{type} eq 'presence' && $m->{event} eq 'leave') {
                push @left, "$name:$m->{user}";
                if ($m->{user} eq 'reader' && !$reader_left_at) {
                    $reader_left_at = $i;
                    $left_at = now();
                    $drain_start = drain_reader();
                }
            } else {
                push @{ $got{"$name-other"} }, $m;
            }
        }
    }
}
my $elapsed = now() - $t0;
note(sprintf '%d messages in %.2f s; reader left at message %s',
     MESSAGES, $elapsed, $reader_left_at || '-');
ok(!$fail, 'sender and carol were served throughout') or diag($fail);

# --- the slow reader: what is left, ending with close 1008 --------------------

$drain_start = drain_reader() unless $drained;
note(sprintf 'started reading the slow reader %.3f s after the others saw it leave',
     $drain_start - $left_at) if $left_at && $drain_start;
my $rbytes = length $reader->{buf};
my ($frames, $clean) = parse_frames($reader->{buf});
my @msgs = grep { $_->{opcode} == 1 && $_->{payload} =~ /"type":"message"/ } @$frames;
note(sprintf 'reader got %d bytes, %d frames, %d messages%s', $rbytes,
     scalar @$frames, scalar @msgs,
     $reader->{read_error} ? ", read error: $reader->{read_error}" : '');

is($code, 1008, 'slow reader: the last frame is a close frame with 1008');
ok($reader->{eof}, 'slow reader: TCP connection closed');
ok($clean, 'slow reader: the stream consists of whole frames (no message cut in the middle)')
    or diag(sprintf 'parsed %d frames, %d bytes left unparsed', scalar @$frames,
            $rbytes - length join '', map { $_->{payload} } @$frames);
cmp_ok($rbytes, '<', 200_000,
       'slow reader: got a bounded part of the ' . MESSAGES * CONTENT . ' bytes posted');
ok(@msgs < MESSAGES, 'slow reader: did not get every message (it was cut off)')
    or diag(scalar(@msgs) . ' messages');
ok($reader_left_at && $reader_left_at <= 200,
   'the others saw the reader leave r early (the backlog is bounded)')
    or diag('left at message ' . ($reader_left_at || 'never'));

# --- the others were unaffected -----------------------------------------------

my @sacks = map { $_->{ref} } @{ $acks{sender} || [] };
is_deeply(\@sacks, [ map { "$_" } 1 .. MESSAGES ], 'sender: every ack, in order');
my @smsg = map { substr($_->{content}, 0, 4) } @{ $got{sender} || [] };
is_deeply(\@smsg, [ map { sprintf '%04d', $_ } 1 .. MESSAGES ],
          'sender: every own message, in order');
my @cmsg = map { substr($_->{content}, 0, 4) } @{ $got{carol} || [] };
is_deeply(\@cmsg, [ map { sprintf '%04d', $_ } 1 .. MESSAGES ],
          'carol: every message, in order');
is_deeply([ map { $_->{id} } @{ $got{carol} || [] } ],
          [ map { $_->{id} } @{ $got{sender} || [] } ], 'same ids for carol and the sender');
is_deeply([ map { $_->{id} } @{ $acks{sender} || [] } ],
          [ map { $_->{id} } @{ $got{sender} || [] } ], 'ack ids match the message ids');
ok(!grep({ length $_->{content} != CONTENT } @{ $got{carol} || [] }),
   'carol: contents complete');

$sender->send_json({ type => 'who', room => 'r' });
my $who = $sender->recv_until(sub { $_[0]{type} eq 'who' }, 3);
is_deeply([ sort @{ $who ? $who->{users} : [] } ], [qw(carol sender)],
          'who: the slow reader is no longer a member');

my $rss1 = rss_kb($worker);
note("worker RSS ${rss0} kB -> ${rss1} kB") if defined $rss0 && defined $rss1;
SKIP: {
    skip 'no /proc', 1 unless defined $rss0 && defined $rss1;
    cmp_ok($rss1 - $rss0, '<', 16 * 1024, 'worker RSS grew by less than 16 MB');
}

for my $name (qw(carol sender)) {
    my ($c, $eof) = $ws{$name}->close(code => 1000);
    ok($c && $c == 1000 && $eof, "$name closes normally");
}

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
is(scalar @bad, 0, 'no [alert], [crit] or [emerg] in error.log')
    or diag(join "\n", @bad);

# stop nginx now, not in global destruction (Test::Chat::Nginx's DESTROY
# asks Test::Builder whether all passed, which warns once Test2 is gone)
undef $t;
