# chat_status (SPEC §6): JSON counters of a zone across all workers, and
# the Prometheus form.  Two workers, connections placed on both.

use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Util qw(status conn req);
use JSON::PP ();
use Time::HiRes ();

plan tests => 56;

my $t = Test::Chat::Nginx->new(
    http   => <<'_EOC_',
    chat_zone chat 1m;
    chat_zone other 1m;
    log_format chatpid '$arg_tag $pid';
_EOC_
    server => <<'_EOC_',
        listen 127.0.0.1:%%PORT_1%% reuseport;
        location = /chat {
            chat chat;
            chat_user $arg_user;
            access_log %%SERVROOT%%/logs/pid.log chatpid;
        }
        location = /chatr { chat chat; chat_user $arg_user; chat_rate 1r/s; }
        location = /status { chat_status chat; }
        location = /ostatus { chat_status other; }
_EOC_
    workers => 2,
);

my @W = sort { $a <=> $b } $t->worker_pids;
is(scalar @W, 2, 'two workers');

# --- helpers -----------------------------------------------------------------


# polls until the status has these values (up to 3 s); returns the last status
sub status_is {
    my (%want) = @_;
    my $st;
    my $deadline = Time::HiRes::time() + 3;
    while (1) {
        $st = status($t, '/status');
        last unless grep { ($st->{$_} // 'undef') ne $want{$_} } keys %want;
        last if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.02);
    }
    return { map { $_ => $st->{$_} } keys %want };
}

my @fields = qw(connections rooms users messages_in messages_out rate_limited);

# --- at rest ---------------------------------------------------------------------

{
    my $r = $t->http_get('/status');
    is($r->{status}, 200, 'status answers 200');
    is($r->{headers}{'content-type'}, 'application/json', 'Content-Type: application/json');
    my $st = eval { JSON::PP->new->decode($r->{body}) };
    ok($st && ref $st eq 'HASH', 'the body is a JSON object') or diag($r->{body});
    for my $f (@fields) {
        like($r->{body}, qr/"$f":0[,}\s]/, "$f is the number 0");
    }
    is($st->{redis}, 'off', 'redis "off"');
    is($st->{postgres}, 'off', 'postgres "off"');
    is($st->{workers}, 2, 'workers 2 (module field)');
    is($st->{zone_full}, 0, 'zone_full 0 (module field)');
}

# --- 3 connections of 2 users in 2 rooms, on both workers ---------------------------------

my $ann1 = conn($t, 'ann', pid => $W[0]);
my $ann2 = conn($t, 'ann', pid => $W[1]);
my $bob  = conn($t, 'bob', pid => $W[1]);
is_deeply(status_is(connections => 3, users => 2, rooms => 0),
          { connections => 3, users => 2, rooms => 0 }, '3 connections of 2 users, no room yet');

req($_, { type => 'join', room => 'A' }) for $ann1, $ann2, $bob;
req($ann2, { type => 'join', room => 'B' });
is_deeply(status_is(connections => 3, users => 2, rooms => 2),
          { connections => 3, users => 2, rooms => 2 }, 'rooms 2');

# 4 sends to A, whose members are 3 connections: 12 message frames out
for my $pair ([ $ann1, 'a1' ], [ $bob, 'b1' ], [ $ann1, 'a2' ], [ $bob, 'b2' ]) {
    $pair->[0]->send_json({ type => 'send', room => 'A', content => $pair->[1] });
}
for my $ws ($ann1, $ann2, $bob) {
    my $n = 0;
    while ($n < 4) {
        my $f = $ws->recv_json(3) or last;
        $n++ if $f->{type} eq 'message';
    }
    is($n, 4, 'a member connection got the 4 messages');
}
is_deeply(status_is(messages_in => 4, messages_out => 12),
          { messages_in => 4, messages_out => 12 }, '4 sends to 3 member connections: in 4, out 12');

# refused requests are not accepted sends
{
    my $e = req($bob, { type => 'send', room => 'B', content => 'x' });
    is($e->{code}, 'not_member', 'a not_member send');
    $e = req($bob, { type => 'send', room => 'A', content => 7 });
    is($e->{code}, 'bad_request', 'a bad_request send');
    $e = req($bob, { type => 'send', room => 'A' . ('x' x 200), content => 'x' });
    is($e->{code}, 'bad_request', 'a send to a bad room name');
}

# one send to B (one member connection)
$ann2->send_json({ type => 'send', room => 'B', content => 'b' });
ok($ann2->recv_until(sub { $_[0]{type} eq 'message' && $_[0]{room} eq 'B' }, 3), 'message in B');
is_deeply(status_is(messages_in => 5, messages_out => 13, rate_limited => 0),
          { messages_in => 5, messages_out => 13, rate_limited => 0 },
          'refused sends not counted; 1 more in and out');

# a connected user in no room counts as a user, not a room
my $cat = conn($t, 'cat', pid => $W[0]);
is_deeply(status_is(connections => 4, users => 3, rooms => 2),
          { connections => 4, users => 3, rooms => 2 }, 'cat connected: 4 connections, 3 users, still 2 rooms');

# a room nobody is in any more is not counted
req($ann2, { type => 'leave', room => 'B' });
is_deeply(status_is(rooms => 1, users => 3), { rooms => 1, users => 3 }, 'B left by its only member: rooms 1');
# a user leaving a room is still a connected user
req($bob, { type => 'leave', room => 'A' });
is_deeply(status_is(rooms => 1, users => 3, connections => 4), { rooms => 1, users => 3, connections => 4 },
          'bob left A: still connected, counted');
req($bob, { type => 'join', room => 'A' });

# --- Prometheus ----------------------------------------------------------------------------

{
    my $r = $t->http_get('/status?format=prometheus');
    is($r->{status}, 200, 'prometheus: 200');
    like($r->{headers}{'content-type'} // '', qr{^text/plain}, 'prometheus: text/plain');
    my %want = (
        chat_connections        => 4,
        chat_rooms              => 1,
        chat_users              => 3,
        chat_messages_in_total  => 5,
        chat_messages_out_total => 13,
        chat_rate_limited_total => 0,
        chat_redis_up           => 0,
        chat_postgres_up        => 0,
    );
    for my $name (sort keys %want) {
        like($r->{body}, qr/^\Q$name\E\{zone="chat"\} $want{$name}$/m, "prometheus: $name $want{$name}")
            or diag($r->{body});
    }
    my @samples = grep { !/^#/ && /\S/ } split /\n/, $r->{body};
    is(scalar(grep { !/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.eE+]+$/ } @samples), 0,
       'every sample line is well-formed');
}

# --- rate_limited -----------------------------------------------------------------------------

{
    my $rl = conn($t, 'rl', path => '/chatr');
    req($rl, { type => 'join', room => 'R' });
    $rl->send_json({ type => 'send', room => 'R', content => 'one', ref => '1' });
    $rl->send_json({ type => 'send', room => 'R', content => 'two', ref => '2' });
    my %got;
    while (keys %got < 2) {
        my $f = $rl->recv_json(3) or last;
        $got{ $f->{ref} } = $f->{type} eq 'ack' ? 'ack' : $f->{code} if defined $f->{ref};
    }
    is_deeply(\%got, { 1 => 'ack', 2 => 'rate_limited' }, 'chat_rate 1r/s: second send refused');
    is_deeply(status_is(rate_limited => 1, messages_in => 6, messages_out => 14, connections => 5, users => 4, rooms => 2),
              { rate_limited => 1, messages_in => 6, messages_out => 14, connections => 5, users => 4, rooms => 2 },
              'rate_limited 1; the refused send is not in messages_in/out');
    my $r = $t->http_get('/status?format=prometheus');
    like($r->{body}, qr/^chat_rate_limited_total\{zone="chat"\} 1$/m, 'prometheus chat_rate_limited_total 1');
    $rl->close;
}

# --- another zone ---------------------------------------------------------------------------

{
    my $o = status($t, '/ostatus');
    is_deeply({ map { $_ => $o->{$_} } @fields }, { map { $_ => 0 } @fields }, 'another zone has its own counters');
    my $r = $t->http_get('/ostatus?format=prometheus');
    like($r->{body}, qr/^chat_connections\{zone="other"\} 0$/m, 'prometheus zone label is the zone name');
    unlike($r->{body}, qr/zone="chat"/, 'and only that zone');
}

# --- everything closed ----------------------------------------------------------------------

{
    $ann1->close(code => 1000);
    $bob->close(code => 1000);
    $ann2->disconnect;          # no close handshake
    $cat->disconnect;
    is_deeply(status_is(connections => 0, rooms => 0, users => 0),
              { connections => 0, rooms => 0, users => 0 }, 'all closed: connections, rooms, users back to 0');
    is_deeply(status_is(messages_in => 6, messages_out => 14, rate_limited => 1),
              { messages_in => 6, messages_out => 14, rate_limited => 1 }, 'the totals stay');
    my $r = $t->http_get('/status?format=prometheus');
    like($r->{body}, qr/^chat_connections\{zone="chat"\} 0$/m, 'prometheus connections 0');
    like($r->{body}, qr/^chat_users\{zone="chat"\} 0$/m, 'prometheus users 0');
    like($r->{body}, qr/^chat_rooms\{zone="chat"\} 0$/m, 'prometheus rooms 0');
    like($r->{body}, qr/^chat_messages_out_total\{zone="chat"\} 14$/m, 'prometheus messages_out_total 14');
}

# --- counts on both workers, many connections -----------------------------------------------

{
    my @c;
    for my $i (0 .. 9) {
        push @c, conn($t, "u$i", pid => $W[ $i % 2 ]);
    }
    req($_, { type => 'join', room => 'big' }) for @c;
    is_deeply(status_is(connections => 10, users => 10, rooms => 1),
              { connections => 10, users => 10, rooms => 1 }, '10 connections on 2 workers: summed');
    $c[0]->send_json({ type => 'send', room => 'big', content => 'all' });
    for my $ws (@c) {
        $ws->recv_until(sub { $_[0]{type} eq 'message' }, 3);
    }
    is_deeply(status_is(messages_in => 7, messages_out => 24), { messages_in => 7, messages_out => 24 },
              'one send to 10 connections on both workers: out +10');
    $_->disconnect for @c;
    is_deeply(status_is(connections => 0, rooms => 0, users => 0),
              { connections => 0, rooms => 0, users => 0 }, 'and back to 0');
}

{
    my $r = $t->http_get('/status');
    is($r->{headers}{'content-type'}, 'application/json', 'still application/json');
    my @bad = grep { /\[(?:alert|crit|emerg)\]|exited on signal/ } split /\n/, $t->error_log;
    is(scalar @bad, 0, 'no alerts or crashed workers in error.log') or diag(join "\n", @bad);
}
