# History reads from PostgreSQL wait for their turn and for PostgreSQL
# (SPEC §5: a PostgreSQL outage costs nothing): a worker keeps at most 100
# reads in flight, and the others used to be answered from the ring alone
# ("complete": false) at once, as were reads made while PostgreSQL was
# down or lost with the connection.  Now they wait, oldest first, up to
# 10 s in all: many clients resuming at once after a server restart, or
# during a short outage, get the whole history ("complete": true).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX ();
use Time::HiRes ();
use Test::Chat::Nginx;
use Test::Chat::Pg;

plan skip_all => 'no PostgreSQL server binaries (Test::Chat::Pg->available)'
    unless Test::Chat::Pg->available;

plan tests => 12;

sub now { Time::HiRes::time() }

my $pg = Test::Chat::Pg->start;

my $t = Test::Chat::Nginx->new(workers => 1,
    http => "chat_zone chat 4m;\n    " . $pg->directive,
    server => <<'_EOC_');
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 3;
        }
_EOC_

$pg->wait_up($t, 2);

sub client {
    my ($user) = @_;
    my $ws = $t->ws(path => "/chat?user=$user");
    return undef unless $ws->ok;
    $ws->recv_json(3);
    return $ws;
}

sub next_of {
    my ($ws, $type, $timeout) = @_;
    my $deadline = now() + ($timeout || 5);
    while (now() < $deadline) {
        my $m = $ws->recv_json($deadline - now()) or return undef;
        return $m if $m->{type} eq $type;
    }
    return undef;
}

# 10 messages, committed (acked); the ring keeps the last 3

my $a = client('alice');
$a->send_json({ type => 'join', room => 'r' });
ok(next_of($a, 'joined'), 'alice joined');

my @ids;
for my $i (1 .. 10) {
    $a->send_json({ type => 'send', room => 'r', content => "m$i",
                    ref => "$i" });
    my $ack = next_of($a, 'ack') or last;
    push @ids, $ack->{id};
}
is(scalar @ids, 10, '10 messages acked (committed)');

# --- 150 resumes at once, beyond the 100 reads in flight ---------------
#
# the table is locked for a few seconds so that every read is in flight
# or waiting at the same time

my $N = 150;
my @c = grep { defined } map { client("u$_") } 1 .. $N;
is(scalar @c, $N, "$N clients connected");

my $locker = fork;
die "fork: $!" unless defined $locker;
if ($locker == 0) {
    eval { $pg->psql('BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE; '
                     . 'SELECT pg_sleep(2); COMMIT;') };
    POSIX::_exit(0);
}
Time::HiRes::sleep(0.5);

$_->send_json({ type => 'join', room => 'r', since => $ids[0] }) for @c;

my ($complete, $whole) = (0, 0);
for my $ws (@c) {
    my $h = next_of($ws, 'history', 15) or next;
    $complete++ if $h->{complete};
    $whole++ if join(',', map { $_->{content} } @{ $h->{messages} })
                eq join(',', map { "m$_" } 2 .. 10);
}
waitpid $locker, 0;

is($complete, $N, "all $N resumes complete (old: only 100 reads, the rest "
                  . 'answered from the ring, complete:false)');
is($whole, $N, 'each with the 9 messages after since, oldest first');

$_->close for @c;

# --- a resume during a PostgreSQL outage waits for it -----------------

$pg->stop;
Time::HiRes::sleep(0.5);

my $b = client('bob');
my $t0 = now();
$b->send_json({ type => 'join', room => 'r', since => $ids[0] });
ok(next_of($b, 'joined'), 'bob joined during the outage');

# back after 2 s
Time::HiRes::sleep(2);
$pg->start_again;

my $h = next_of($b, 'history', 15);
my $waited = now() - $t0;
ok($h && $h->{complete}, 'the history is complete, once PostgreSQL is back '
                         . '(old: complete:false at once)');
is($h && join(',', map { $_->{content} } @{ $h->{messages} }),
   join(',', map { "m$_" } 2 .. 10), 'with the 9 messages');
ok($waited >= 2 && $waited < 11, sprintf('it waited for PostgreSQL (%.1f s)',
                                          $waited));

# live messages meanwhile come after the reply, none lost
$a->send_json({ type => 'send', room => 'r', content => 'after',
                ref => 'after' });
my $m = next_of($b, 'message', 5);
is($m && $m->{content}, 'after', 'then live messages');

# --- a longer outage: answered from memory after 10 s -----------------

$pg->stop;
Time::HiRes::sleep(0.5);

my $d = client('dave');
$t0 = now();
$d->send_json({ type => 'join', room => 'r', since => $ids[0] });
$h = next_of($d, 'history', 20);
$waited = now() - $t0;
ok($h && !$h->{complete}, 'PostgreSQL down for longer: complete:false');
ok($waited >= 9 && $waited < 15,
   sprintf('after the 10 s a read waits at most (%.1f s)', $waited));

$pg->start_again;

$t->stop;
$pg->stop;
