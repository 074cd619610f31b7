# Ids and rows of several zones and servers on one PostgreSQL database
# (SPEC §8): ids are unique across every zone and server that shares the
# database, with or without Redis (here without), across restarts and a
# clock stepped back; rooms of different zones never share rows or
# history; an ack means the committed row is this message.
#
#   1. two zones of one nginx, a room "r" in each, 20 sends each at the
#      same instants: 40 acks, 40 distinct ids ("<digits>-<12 hex>"), 40
#      rows, each zone's stored history only its own
#   2. two nginx servers (no Redis) on the database, 20 sends each at the
#      same instants: 40 acks, 40 distinct ids, 40 rows
#   3. server 2 restarted with its clock "stepped back": the rows its
#      previous life would have written with a clock 20 s ahead (ids of
#      the next 20 s, with that life's tag) are there; 20 sends after the
#      restart are all acked and stored, none on one of those rows
#   4. an id that clashes with another row (rows with the ids the server
#      is about to produce, another user and content): no ack, error
#      "unavailable" with the ref, an [error] line; an identical row (a
#      batch committed before a lost connection) is acked; later sends
#      are acked again
#
# Everything waits by polling with deadlines; the file takes ~10 s.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll client send_json take join_room send_msg
                        ack_id);
use Test::Chat::Pg;

plan skip_all => 'no PostgreSQL server binaries (Test::Chat::Pg->available)'
    unless Test::Chat::Pg->available;

plan tests => 24;

my $pg = Test::Chat::Pg->start;

my $ID = qr/^\d+-[0-9a-f]{12}$/;

sub server {
    return Test::Chat::Nginx->new(workers => 1,
        http => "chat_zone a 1m;\n    chat_zone b 1m;\n"
                . "    " . $pg->directive,
        server => <<'_EOC_');
        location = /a {
            chat a;
            chat_user $arg_user;
            chat_history 5;
        }
        location = /b {
            chat b;
            chat_user $arg_user;
            chat_history 5;
        }
_EOC_
}

sub connected {
    my ($t) = @_;
    return $pg->wait_up($t, 2, 10);
}

# a client of zone $zone, joined to room "r"
sub member {
    my ($t, $zone, $user) = @_;
    my $c = client($t, $user, name => "$zone:$user",
                   ws => { path => "/$zone?user=$user" });
    return $c unless $c->{ws}->ok;
    join_room($c, 'r') or diag("$zone:$user: no joined");
    return $c;
}

sub has_zone_column {
    return scalar $pg->psql(q{SELECT count(*) FROM information_schema.columns
                              WHERE table_name = 'messages'
                                AND column_name = 'zone'});
}

# id => [ "zone|user|content", ... ] (zone "-" without the column)
sub rows_by_id {
    my $zone = has_zone_column() ? 'zone' : q{'-'};
    my %by;
    for ($pg->psql("SELECT id, $zone, user_id, content FROM messages")) {
        my ($id, @rest) = split /\|/, $_, -1;
        push @{ $by{$id} }, join '|', @rest;
    }
    return \%by;
}

# one send on each client [client, content, tag] at the same instant (the
# workers of @$pids stopped meanwhile, so that each reads them in one turn
# of its event loop, at one time), then each one's ack; returns the acks
# (or errors) in client order
sub round {
    my ($pids, $ref, @cs) = @_;
    kill 'STOP', @$pids;
    send_json($_->[0], type => 'send', room => 'r', content => $_->[1],
              ref => "$ref-$_->[2]") for @cs;
    kill 'CONT', @$pids;
    return map {
        my $r = "$ref-$_->[2]";
        take($_->[0], sub { ($_[0]{type} eq 'ack' || $_[0]{type} eq 'error')
                            && ($_[0]{ref} // '') eq $r }, 5)
    } @cs;
}

# every acked [id, "zone|user|content"] is exactly one row, that one
sub stored_as_acked {
    my ($name, @acked) = @_;
    my $rows = rows_by_id();
    my $zc = has_zone_column();
    my @bad;
    for (@acked) {
        my ($id, $want) = @$_;
        $want =~ s/^[^|]*/-/ unless $zc;
        my $got = $rows->{$id} || [];
        push @bad, "$id: " . (join(' / ', @$got) || 'no row')
            unless @$got == 1 && $got->[0] eq $want;
    }
    ok(!@bad, "$name: every acked id is one row, this message")
        or diag(join "\n", (@bad > 5 ? @bad[0 .. 4] : @bad),
                @bad > 5 ? ('... ' . scalar(@bad) . ' in all') : ());
}

sub distinct {
    my %seen;
    return scalar grep { defined && !$seen{$_}++ } @_;
}

# the stored history of room "r" of a zone, from a new client (the ring
# holds 5: a limit of 100 asks storage)
sub stored_history {
    my ($t, $zone) = @_;
    my $c = member($t, $zone, 'reader');
    send_json($c, type => 'history', room => 'r', limit => 100);
    my $h = take($c, sub { $_[0]{type} eq 'history' }, 5);
    $c->{ws}->close;
    return $h ? $h->{messages} : undef;
}

# --- 1. two zones of one nginx ----------------------------------------------

my $t = server();
ok(connected($t), 'server 1 connected to PostgreSQL');

my $ann = member($t, 'a', 'ann');
my $bob = member($t, 'b', 'ann');

my (@ids, @acked);

for my $i (1 .. 20) {
    my ($x, $y) = round([$t->worker_pids], "z$i", [$ann, "a-$i", 'a'],
                        [$bob, "b-$i", 'b']);
    push @ids, ack_id($x), ack_id($y);
    push @acked, [ack_id($x), "a|ann|a-$i"] if ack_id($x);
    push @acked, [ack_id($y), "b|ann|b-$i"] if ack_id($y);
}

is(scalar(grep { defined } @ids), 40, 'two zones: 40 acks');
is(distinct(@ids), 40, 'two zones: 40 distinct ids');
is(scalar(grep { defined && /$ID/ } @ids), 40,
   'two zones: every id is "<digits>-<12 hex>"');
stored_as_acked('two zones', @acked);
is(scalar $pg->psql('SELECT count(*) FROM messages'), 40, 'two zones: 40 rows');

{
    my $ha = stored_history($t, 'a');
    my $hb = stored_history($t, 'b');
    is(join(',', map { $_->{content} } @{ $ha || [] }),
       join(',', map { "a-$_" } 1 .. 20), "zone a's stored history is its own");
    is(join(',', map { $_->{content} } @{ $hb || [] }),
       join(',', map { "b-$_" } 1 .. 20), "zone b's stored history is its own");
}

# --- 2. two servers on one database, no Redis --------------------------------

my $t2 = server();
ok(connected($t2), 'server 2 connected to PostgreSQL');

my $cat = member($t2, 'a', 'cat');
my (@ids2, @acked2);

for my $i (1 .. 20) {
    my ($x, $y) = round([$t->worker_pids, $t2->worker_pids], "s$i",
                        [$ann, "one-$i", 'a'], [$cat, "two-$i", 'b']);
    push @ids2, ack_id($x), ack_id($y);
    push @acked2, [ack_id($x), "a|ann|one-$i"] if ack_id($x);
    push @acked2, [ack_id($y), "a|cat|two-$i"] if ack_id($y);
}

is(scalar(grep { defined } @ids2), 40, 'two servers: 40 acks');
is(distinct(@ids2, @ids), 80, 'two servers: 40 distinct ids, none seen before');
stored_as_acked('two servers', @acked2);
is(scalar $pg->psql('SELECT count(*) FROM messages'), 80, 'two servers: 80 rows');

# --- 3. server 2 restarted, its clock stepped back 20 s ----------------------

{
    my ($tag) = ($ids2[-1] // '') =~ /^\d+(.*)$/;
    $cat->{ws}->close;
    $t2->stop;

    # what the previous life wrote with a clock 20 s ahead: the ids of the
    # next 20 s (the first of each millisecond), with its tag
    my $zc = has_zone_column() ? ', zone' : '';
    my $zv = $zc ? q{, 'a'} : '';
    $pg->psql(qq{INSERT INTO messages (id, room_id, user_id, content$zc)
                 SELECT ((extract(epoch FROM clock_timestamp()) * 1000)::bigint
                         + d) * 1000 || '$tag', 'r', 'cat', 'previous life'$zv
                 FROM generate_series(0, 20000) AS d});

    ok($t2->start, 'server 2 restarted');
    ok(connected($t2), 'server 2 connected again');

    $cat = member($t2, 'a', 'cat');
    my (@ids3, @acked3);

    for my $i (1 .. 20) {
        my ($x) = round([], "c$i", [$cat, "again-$i", 'c']);
        push @ids3, ack_id($x);
        push @acked3, [ack_id($x), "a|cat|again-$i"] if ack_id($x);
        Time::HiRes::sleep(0.003);
    }

    is(scalar(grep { defined } @ids3), 20, 'restart: 20 acks');
    is(distinct(@ids3, @ids2, @ids), 100,
       'restart: 20 distinct ids, none seen before');
    stored_as_acked('restart', @acked3);
}

# --- 4. an id that clashes with another row -----------------------------------

{
    my $a0 = send_msg($ann, 'r', 'probe', 'probe');
    my ($tag) = (ack_id($a0) // '') =~ /^\d+(.*)$/;
    my $zc = has_zone_column() ? ', zone' : '';
    my $zv = $zc ? q{, 'a'} : '';

    # the ids of the next 1.5 s (the first of each millisecond)
    my $window = sub {
        my ($user, $content) = @_;
        $pg->psql(qq{INSERT INTO messages (id, room_id, user_id, content$zc)
                     SELECT ((extract(epoch FROM clock_timestamp()) * 1000)
                             ::bigint + d) * 1000 || '$tag', 'r', '$user',
                            '$content'$zv
                     FROM generate_series(0, 1500) AS d
                     ON CONFLICT (id) DO NOTHING});
        return now() + 1.5;
    };

    my $mark = $t->log_mark;
    my $until = $window->('mallory', 'not yours');
    Time::HiRes::sleep(0.01);
    my $r = send_msg($ann, 'r', 'clash', 'clash');

    is($r && $r->{type}, 'error', 'a clashing id: no ack, an error')
        or diag(explain $r);
    is($r && $r->{code}, 'unavailable', 'a clashing id: "unavailable"');
    ok(poll(3, sub { $t->error_log(since => $mark)
                     =~ /\[error\].*chat postgres: .*clash/ }),
       'a clashing id: an [error] line');

    Time::HiRes::sleep($until - now()) if $until > now();

    # a row that is this very message: committed before a lost connection
    $until = $window->('ann', 'twice');
    Time::HiRes::sleep(0.01);
    $r = send_msg($ann, 'r', 'twice', 'twice');
    my $rows = rows_by_id();

    ok(ack_id($r) && @{ $rows->{ack_id($r)} || [] } == 1,
       'an identical row: acked, one row');

    Time::HiRes::sleep($until - now()) if $until > now();

    $r = send_msg($ann, 'r', 'later', 'later');
    ok(ack_id($r), 'later sends are acked') or diag(explain $r);
    stored_as_acked('after the clash', [ack_id($r), 'a|ann|later']);
}
