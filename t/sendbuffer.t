# chat_send_buffer bounds what a connection has queued beyond what the
# kernel accepted (SPEC §8): a client that keeps reading is never closed,
# however large a burst it causes; pongs are bounded (at most the latest
# one queued), so a client that floods pings and never reads costs the
# worker no memory.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Select ();
use Time::HiRes ();
use Test::Chat::Nginx;
use Test::Chat::WS;
use Test::Chat::Util qw(raw_ws);

plan tests => 10;

use constant SENDS   => 200;
use constant CONTENT => 1000;

my $t = Test::Chat::Nginx->new(workers => 1, log_level => 'info',
                               http => 'chat_zone chat 4m;', server => <<'_EOC_');
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_send_buffer 16k;
            chat_max_message_size 4k;
        }
_EOC_

sub now { Time::HiRes::time() }

sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) {
        return $1 if /^VmRSS:\s+(\d+)/;
    }
    return undef;
}

# --- a reader that keeps up, sending a burst in one write ------------------

my $ws = $t->ws(path => '/chat?user=burst');
ok($ws->ok, 'the bursting client connects');
$ws->recv_json(3);
$ws->send_json({ type => 'join', room => 'r' });
my $j = $ws->recv_json(3);
ok($j && $j->{type} eq 'joined', 'and joins');

my $burst = '';
for my $i (1 .. SENDS) {
    $burst .= $ws->build_frame(opcode => 1, payload =>
        qq({"type":"send","room":"r","ref":"$i","content":")
        . ('x' x CONTENT) . '"}');
}
$ws->send_raw($burst);

my ($messages, $acks, $other) = (0, 0, 0);
my $deadline = now() + 15;
while (($messages < SENDS || $acks < SENDS) && now() < $deadline) {
    my $m = $ws->recv_json(5) or last;
    if ($m->{type} eq 'message') { $messages++ }
    elsif ($m->{type} eq 'ack') { $acks++ }
    else { $other++ }
}

is($messages, SENDS, 'every message of the burst comes back');
is($acks, SENDS, 'every send of the burst is acked');
ok(!defined $ws->close_code, 'the client that keeps reading is not closed')
    or diag('closed with ' . $ws->close_code . ' '
            . ($ws->close_reason // ''));
$ws->close;

# --- a ping flooder that never reads ----------------------------------------


my ($worker) = $t->worker_pids;
my $before = rss_kb($worker);
ok($before, "worker $worker RSS before: ${\ ($before // '?')} kB");

my $r = raw_ws($t, 'flooder');
my $s = $r->{sock};
my $sel = IO::Select->new($s);
my $ping = Test::Chat::WS->build_frame(opcode => 9, payload => 'p' x 125);
my $chunk = $ping x 500;                        # ~65 KB
my ($sent, $stalled) = (0, 0);
$deadline = now() + 10;

# 20 MB of pings, never reading a byte of the pongs
while ($sent < 20_000_000 && now() < $deadline) {
    $sel->can_write(1) or do { $stalled++; last if $stalled > 3; next };
    my $n = syswrite($s, $chunk);
    last unless defined $n && $n > 0;
    $sent += $n;
}
Time::HiRes::sleep(0.5);

my $after = rss_kb($worker);
my $grew = defined $after && defined $before ? $after - $before : undef;
diag(sprintf 'ping flood: %.1f MB sent, worker RSS %s kB -> %s kB',
     $sent / 1e6, $before // '?', $after // '?');
ok($sent > 1_000_000, 'the flooder got megabytes of pings in');
ok(defined $grew && $grew < 4096,
   'the worker did not grow by more than 4 MB for it')
    or diag("grew by " . ($grew // '?') . ' kB');

# the server still serves others

my $n = $t->ws(path => '/chat?user=neighbour');
my $w = $n->ok ? $n->recv_json(3) : undef;
ok($w && $w->{type} eq 'welcome', 'a neighbour is still served');
close $s;
$n->close;

ok($t->stop, 'nginx stops');
