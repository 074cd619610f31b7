# A history flood against PostgreSQL costs its sender, not the neighbours
# (SPEC §8): a connection has one storage read in flight, the others wait
# in order behind it (at most chat_max_rooms, beyond: rate_limited), and
# reads have a PostgreSQL connection of their own, so other members'
# stores and acks never wait behind them.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();
use Test::Chat::Nginx;
use Test::Chat::Pg;

plan skip_all => 'no PostgreSQL server binaries (Test::Chat::Pg->available)'
    unless Test::Chat::Pg->available;

plan tests => 10;

sub now { Time::HiRes::time() }

my $pg = Test::Chat::Pg->start;

# chat_request_rate off: the storage read queue is what is under test
my $t = Test::Chat::Nginx->new(workers => 1,
    http => "chat_zone chat 4m;\n    " . $pg->directive,
    server => <<'_EOC_');
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 10;
            chat_request_rate off;
        }
_EOC_

# both connections of the worker (stores, reads) are up
$pg->wait_up($t, 2);
ok(scalar(my @up = $t->grep_error_log(qr/chat postgres: .* \((stores|reads)\)" is up/)) >= 2,
   'the worker has two PostgreSQL connections up');

sub client {
    my ($user, $room) = @_;
    my $ws = $t->ws(path => "/chat?user=$user");
    return undef unless $ws->ok;
    $ws->recv_json(3);
    $ws->send_json({ type => 'join', room => $room });
    for (1 .. 5) {
        my $m = $ws->recv_json(3) or last;
        return $ws if $m->{type} eq 'joined';
    }
    return undef;
}

my $bob = client('bob', 'calm');
my $mallory = client('mallory', 'flood');
ok($bob && $mallory, 'bob and mallory joined');

# mallory stores 500 messages, then sends 2,000 history requests that only
# storage can answer (limit 1000 over a ring of 10), in one write, and she
# does not read

$mallory->send_raw(join '', map {
    $mallory->build_frame(opcode => 1, payload =>
        qq({"type":"send","room":"flood","content":"filler $_ ) . ('x' x 200)
        . '"}')
} 1 .. 500);
my $acked = 0;
my $deadline = now() + 20;
while ($acked < 500 && now() < $deadline) {
    my $m = $mallory->recv_json(5) or last;
    $acked++ if $m->{type} eq 'ack';
}
is($acked, 500, 'mallory stored 500 messages');

my $flood = join '', map {
    $mallory->build_frame(opcode => 1, payload =>
        qq({"type":"history","room":"flood","limit":1000}))
} 1 .. 2000;
$mallory->send_raw($flood);

# bob: 20 sends, 50 ms apart, each timed until its ack

my @lat;
for my $i (1 .. 20) {
    my $t0 = now();
    $bob->send_json({ type => 'send', room => 'calm', content => "m$i",
                      ref => "b$i" });
    while (now() - $t0 < 5) {
        my $m = $bob->recv_json(5) or last;
        if ($m->{type} eq 'ack' && ($m->{ref} // '') eq "b$i") {
            push @lat, (now() - $t0) * 1000;
            last;
        }
    }
    Time::HiRes::sleep(0.05);
}

is(scalar @lat, 20, "bob's 20 sends were all acked");
my @s = sort { $a <=> $b } @lat;
my $max = $s[-1] // 9999;
diag(sprintf "bob's ack latency under the flood: median %.1f ms, max %.1f ms",
     $s[int(@s / 2)] // -1, $max);
ok($max < 500, 'every ack within 500 ms');

# what mallory got: a few replies, the rest refused (or, as she did not
# read those replies of 500 messages each, a close with 1008)

my ($replies, $limited, $other) = (0, 0, 0);
$deadline = now() + 20;
while ($replies + $limited < 2000 && now() < $deadline) {
    my $m = $mallory->recv_json(5) or last;
    if ($m->{type} eq 'history') { $replies++ }
    elsif (($m->{code} // '') eq 'rate_limited') { $limited++ }
    else { $other++ }
}
my $closed = $mallory->close_code // 0;
diag("mallory: $replies history replies, $limited rate_limited, "
     . "closed with $closed");
ok($replies + $limited == 2000 || $closed == 1008,
   'each of her requests was answered, or she was closed for not reading');
ok($replies <= 40, "at most chat_max_rooms + 1 reads were made ($replies)");
ok($limited >= 1940, 'the rest were refused with rate_limited');

# storage still answers others

my $carol = client('carol', 'flood');
$carol->send_json({ type => 'history', room => 'flood', limit => 5 });
my $h;
for (1 .. 5) {
    $h = $carol->recv_json(5) or last;
    last if $h->{type} eq 'history';
}
is($h && scalar @{ $h->{messages} || [] }, 5,
   'after the flood another member gets stored history');

ok($t->stop, 'nginx stops');
