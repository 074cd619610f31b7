# The HTTP API with PostgreSQL (SPEC §11): a publish is answered once its
# row is committed (the answer comes from the store's callback, the worker
# goes on meanwhile), members get it live at once; history beyond the ring
# is read from storage; a message the table refuses is 503 unavailable.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX ();
use Time::HiRes ();
use JSON::PP ();
use Test::Chat::Nginx;
use Test::Chat::Pg;
use Test::Chat::Util qw(now poll client take);

plan skip_all => 'no PostgreSQL server binaries (Test::Chat::Pg->available)'
    unless Test::Chat::Pg->available;

my $JSON = JSON::PP->new->utf8->canonical;

my $pg = Test::Chat::Pg->start;
(my $q = $pg->conninfo) =~ s/(["\\])/\\$1/g;

my $t = Test::Chat::Nginx->new(workers => 2,
    http => "chat_zone chat 4m;\n    chat_postgres \"$q\";",
    server => <<'_EOC_');
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 3;
        }
        location = /api {
            chat_api chat;
            chat_history 3;
        }
_EOC_

my $deadline = now() + 15;
while (now() < $deadline) {
    last if (my @l = $t->grep_error_log(qr/chat postgres: .* is up/)) >= 4;
    Time::HiRes::sleep(0.05);
}

sub post {
    my ($body, $timeout) = @_;
    $body = $JSON->encode($body) if ref $body;
    my $r = $t->http("POST /api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     . "Content-Type: application/json\r\nContent-Length: "
                     . length($body) . "\r\n\r\n$body", timeout => $timeout || 10);
    $r->{json} = eval { $JSON->decode($r->{body}) };
    return $r;
}

sub stored {
    my $id = shift;
    return $pg->psql("SELECT count(*) FROM messages WHERE id = '$id'");
}

# --- a publish is answered after the COMMIT -----------------------------------
my $m = client($t, 'ann');
$m->{ws}->send_json({ type => 'join', room => 'r' });
take($m, sub { $_[0]{type} eq 'joined' }, 3);

{
    my $r = post({ type => 'publish', room => 'r', user => 'bot', content => 'first' });
    is($r->{status}, 200, 'publish with storage: 200');
    is(stored($r->{json}{id}), 1, 'the row is committed when the answer comes');
    ok(take($m, sub { $_[0]{type} eq 'message' && $_[0]{content} eq 'first' }, 3),
       'the member got it');
}

{
    # the table locked for writes: the INSERT waits, the answer too
    my $locker = fork;
    die "fork: $!" unless defined $locker;
    if ($locker == 0) {
        eval { $pg->psql('BEGIN; LOCK TABLE messages IN SHARE MODE; '
                         . 'SELECT pg_sleep(3); COMMIT;') };
        POSIX::_exit(0);
    }
    Time::HiRes::sleep(0.5);

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $r = post({ type => 'publish', room => 'r', user => 'bot', content => 'locked' });
        POSIX::_exit($r->{status} == 200 ? 0 : 1);
    }
    my $t0 = now();
    my $live = take($m, sub { $_[0]{type} eq 'message' && $_[0]{content} eq 'locked' }, 3);
    my $live_el = now() - $t0;
    ok($live && $live_el < 1.5, 'delivered live at once, the row not committed')
        or diag(sprintf '%.2f s', $live_el);

    # meanwhile the workers answer other requests
    my $w0 = now();
    my $w = post({ type => 'who', room => 'r' });
    ok($w->{status} == 200 && now() - $w0 < 1, 'the worker goes on meanwhile (who answered)');

    waitpid($pid, 0);
    my $el = now() - $t0;
    is($? >> 8, 0, 'the publish got 200 once the lock went');
    ok($el > 1.5, 'and not before the COMMIT') or diag(sprintf '%.2f s', $el);
    waitpid($locker, 0);
    is(stored($live->{id}), 1, 'the row is there');
}

# --- a retry with the key while the first waits for its COMMIT --------------------
{
    my $locker = fork;
    die "fork: $!" unless defined $locker;
    if ($locker == 0) {
        eval { $pg->psql('BEGIN; LOCK TABLE messages IN SHARE MODE; '
                         . 'SELECT pg_sleep(3); COMMIT;') };
        POSIX::_exit(0);
    }
    Time::HiRes::sleep(0.5);
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $r = post({ type => 'publish', room => 'r', user => 'bot', content => 'k1', key => 'K1' });
        POSIX::_exit($r->{status} == 200 ? 0 : 1);
    }
    Time::HiRes::sleep(0.5);
    my $retry = post({ type => 'publish', room => 'r', user => 'bot', content => 'k1', key => 'K1' });
    ok($retry->{status} == 503 && $retry->{json}{error} eq 'unavailable',
       'key: a retry before the first is committed: 503, try again')
        or diag("$retry->{status} $retry->{body}");
    waitpid($pid, 0);
    is($? >> 8, 0, 'key: the first got 200 after its COMMIT');
    waitpid($locker, 0);
    my $again = post({ type => 'publish', room => 'r', user => 'bot', content => 'k1', key => 'K1' });
    is($again->{status}, 200, 'key: a retry after the COMMIT: 200');
    is($pg->psql("SELECT count(*) FROM messages WHERE content = 'k1'"), 1,
       'key: one row');
    is(stored($again->{json}{id}), 1, 'key: the retry answers with that row\'s id');
}

# --- history beyond the ring is read from storage ------------------------------
{
    my @ids;
    for my $i (1 .. 6) {
        my $r = post({ type => 'publish', room => 'deep', user => 'bot', content => "d$i" });
        push @ids, $r->{json}{id};
    }
    my $h = post({ type => 'history', room => 'deep', limit => 5 });
    is($h->{status}, 200, 'history beyond the ring: 200');
    is_deeply([ map { $_->{content} } @{ $h->{json}{messages} || [] } ],
              [qw(d2 d3 d4 d5 d6)], 'history: 5 from storage, oldest first')
        or diag($h->{body});
    is($h->{json}{complete}, JSON::PP::true, 'complete');
    $h = post({ type => 'history', room => 'deep', limit => 10, before => $ids[2] });
    is_deeply([ map { $_->{content} } @{ $h->{json}{messages} || [] } ],
              [qw(d1 d2)], 'history before an id the ring no longer has')
        or diag($h->{body});
}

# a message accepted and not committed yet comes from the ring
{
    my $locker = fork;
    die "fork: $!" unless defined $locker;
    if ($locker == 0) {
        eval { $pg->psql('BEGIN; LOCK TABLE messages IN SHARE MODE; '
                         . 'SELECT pg_sleep(3); COMMIT;') };
        POSIX::_exit(0);
    }
    Time::HiRes::sleep(0.5);
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        post({ type => 'publish', room => 'deep', user => 'bot', content => 'd7' });
        POSIX::_exit(0);
    }
    my $h;
    poll(2, sub {
        $h = post({ type => 'history', room => 'deep', limit => 5 });
        grep { $_->{content} eq 'd7' } @{ $h->{json}{messages} || [] };
    }, 0.1);
    is_deeply([ map { $_->{content} } @{ $h->{json}{messages} || [] } ],
              [qw(d3 d4 d5 d6 d7)],
              'history merges the ring: an uncommitted message is there, in order')
        or diag($h->{body});
    waitpid($pid, 0);
    waitpid($locker, 0);
}

# a room the zone has never seen (rows from before a restart)
{
    $pg->psql(q{INSERT INTO messages (id, zone, room_id, user_id, content, created_at)
                VALUES ('1000-000000000000', 'chat', 'old', 'x', 'from before',
                        now() - interval '1 day')});
    my $h = post({ type => 'history', room => 'old' });
    is_deeply([ map { $_->{content} } @{ $h->{json}{messages} || [] } ],
              [ 'from before' ], 'history of a room only storage knows')
        or diag($h->{body});
}

# --- broadcast: every row committed ---------------------------------------------
{
    my $b = post({ type => 'broadcast', rooms => [qw(b1 b2 b3)], user => 'bot', content => 'all' });
    is($b->{status}, 200, 'broadcast with storage: 200');
    is(scalar(grep { stored($_) == 1 } @{ $b->{json}{ids} || [] }), 3,
       'broadcast: the three rows are committed');
}

# --- a message the table refuses: 503 -------------------------------------------
{
    $pg->psql(q{ALTER TABLE messages ADD CONSTRAINT api_no_poison
                CHECK (content <> 'poison')});
    my $r = post({ type => 'publish', room => 'r', user => 'bot', content => 'poison' });
    ok($r->{status} == 503 && $r->{json} && $r->{json}{error} eq 'unavailable',
       'a row the table refuses: 503 unavailable') or diag("$r->{status} $r->{body}");
    $r = post({ type => 'publish', room => 'r', user => 'bot', content => 'fine' });
    is($r->{status}, 200, 'the next one is stored');
}

# PostgreSQL down: the read waits for it (10 s at most), then what the
# ring has, not complete
{
    $pg->stop;
    my $t0 = now();
    my $h = post({ type => 'history', room => 'deep', limit => 5 }, 20);
    my $waited = now() - $t0;
    ok($waited >= 9 && $waited < 15,
       sprintf('PostgreSQL down: the read waited for it (%.1f s)', $waited));
    is_deeply([ map { $_->{content} } @{ $h->{json}{messages} || [] } ], [qw(d5 d6 d7)],
              'PostgreSQL down: the ring\'s messages') or diag($h->{body});
    is($h->{json} && $h->{json}{complete}, JSON::PP::false, 'and complete: false');
}

$m->{ws}->close;

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
is(scalar @bad, 0, 'no [alert], [crit] or [emerg] in error.log')
    or diag(join "\n", @bad);

undef $t;

done_testing();
