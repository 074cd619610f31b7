# A history read from PostgreSQL does not see messages accepted but not
# committed yet (reads have a connection of their own, so they overtake
# the INSERT): when such a message is no longer in the ring either, the
# reply says "complete": false (SPEC §4), never true.

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

plan tests => 6;

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
    my ($user, $room, %o) = @_;
    my $ws = $t->ws(path => "/chat?user=$user");
    return undef unless $ws->ok;
    $ws->recv_json(3);
    $ws->send_json({ type => 'join', room => $room, %o });
    return $ws;
}

sub next_of {
    my ($ws, $type) = @_;
    for (1 .. 50) {
        my $m = $ws->recv_json(5) or return undef;
        return $m if $m->{type} eq $type;
    }
    return undef;
}

my $a = client('alice', 'r');
ok($a && next_of($a, 'joined'), 'alice joined');

# the table is locked for writes for a few seconds: the INSERT waits,
# reads go on

my $locker = fork;
die "fork: $!" unless defined $locker;
if ($locker == 0) {
    eval { $pg->psql('BEGIN; LOCK TABLE messages IN SHARE MODE; '
                     . 'SELECT pg_sleep(4); COMMIT;') };
    POSIX::_exit(0);
}
Time::HiRes::sleep(0.5);

$a->send_json({ type => 'send', room => 'r', content => "m$_", ref => "$_" })
    for 1 .. 5;
my $delivered = 0;
for (1 .. 20) {
    my $m = $a->recv_json(2) or last;
    $delivered++ if $m->{type} eq 'message';
    last if $delivered == 5;
}
is($delivered, 5, '5 messages delivered live (not committed: the table is locked)');

my $b = client('bob', 'r', history => 5);
ok($b && next_of($b, 'joined'), 'bob joins with history 5');
my $h = next_of($b, 'history');
is(scalar @{ $h->{messages} || [] }, 3,
   'the reply has the ring\'s 3 (m1, m2 are neither stored nor in the ring)');
ok($h && !$h->{complete}, 'and says complete: false');

waitpid $locker, 0;

# committed now: the same request is complete

my $c = client('carol', 'r', history => 5);
next_of($c, 'joined');
my $deadline2 = now() + 5;
my $h2;
while (now() < $deadline2) {
    $h2 = next_of($c, 'history');
    last if $h2 && $h2->{complete};
    Time::HiRes::sleep(0.2);
    $c->send_json({ type => 'history', room => 'r', limit => 5 });
}
is($h2 && scalar @{ $h2->{messages} || [] }, 5,
   'once committed, 5 messages, complete');
