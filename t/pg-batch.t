# The table and the batches that go into it (SPEC §7, §8), against a
# private PostgreSQL server (Test::Chat::Pg):
#
#   1. a table of an earlier version (no zone column, rows in it) is
#      migrated in place: column zone (not null, default ''), columns prior
#      and holes (null: relay-restart-order.t), the index on
#      (zone, room_id, created_at, id), the old rows kept with zone '';
#      sends are acked and stored with their zone, the stored history has
#      this zone's rows only until the old rows are given the zone
#   2. a batch with one message PostgreSQL refuses for a lasting reason (a
#      CHECK constraint): only that one is refused ("unavailable" with its
#      ref, an [error] line), the 9 others are acked and stored; later
#      sends are acked; the same with two such messages in 60
#   3. the same with a statement cancelled (SQLSTATE 57014, what the
#      statement timeout raises)
#   4. an error that is not the message's (INSERT not allowed for a while):
#      nothing is refused, the messages wait and are acked once allowed
#   5. a database in LATIN1: the connection's client_encoding is UTF8, so
#      "café" is stored as "café" (not "cafÃ©") and read back so after a
#      restart; a character LATIN1 has not (an emoji) is refused for that
#      message alone (it was delivered live: it stays in the zone's ring,
#      it is not stored); this server logs at debug level (a worker with a
#      debug log crashed at the first send)
#
# Everything waits by polling with deadlines; the file takes ~10 s.

use strict;
use warnings;
use utf8;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Encode ();
use JSON::PP ();
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll client send_json take join_room send_msg
                        ack_id collect);
use Test::Chat::Pg;

plan skip_all => 'no PostgreSQL server binaries (Test::Chat::Pg->available)'
    unless Test::Chat::Pg->available;

plan tests => 35;

for my $h (qw(output failure_output todo_output)) {
    binmode(Test::More->builder->$h, ':encoding(UTF-8)');
}

my $pg = Test::Chat::Pg->start;

sub server {
    my ($level, %o) = @_;
    return Test::Chat::Nginx->new(workers => 1, log_level => $level,
        http => "chat_zone chat 1m;\n    " . $pg->directive(%o),
        server => <<'_EOC_');
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 5;
        }
_EOC_
}

sub connected {
    my ($t) = @_;
    return $pg->wait_up($t, 2, 10);
}

sub member {
    my ($t, $user) = @_;
    my $c = client($t, $user);
    join_room($c, 'r') or diag("$user: no joined") if $c->{ws}->ok;
    return $c;
}

# the stored history of room "r", from a new client (the ring holds 5: a
# limit of 100 asks storage)
sub stored_history {
    my ($t) = @_;
    my $c = member($t, 'reader');
    send_json($c, type => 'history', room => 'r', limit => 100);
    my $h = take($c, sub { $_[0]{type} eq 'history' }, 5);
    $c->{ws}->close;
    return [ map { $_->{content} } @{ $h ? $h->{messages} : [] } ];
}

# id => "zone|user|content" of the rows of database $db (zone "?"
# without the column)
sub rows {
    my ($db) = @_;
    $db ||= 'chat';
    my $zone = $pg->psql(q{SELECT count(*) FROM information_schema.columns
                           WHERE table_name = 'messages'
                             AND column_name = 'zone'}, db => $db)
               ? 'zone' : q{'?'};
    my %by;
    for ($pg->psql(qq{SELECT id, $zone, user_id,
                             encode(convert_to(content, 'UTF8'), 'hex')
                      FROM messages}, db => $db))
    {
        my ($id, $zone, $user, $hex) = split /\|/, $_, -1;
        $by{$id} = "$zone|$user|" . Encode::decode('UTF-8', pack 'H*', $hex);
    }
    return \%by;
}

# sends @contents in one write (one batch); returns { ref => reply }
sub burst {
    my ($c, $tag, @contents) = @_;
    my $ws = $c->{ws};
    my $i = 0;
    $ws->send_raw(join '', map {
        $i++;
        $ws->build_frame(opcode => 1, payload => Encode::encode('UTF-8',
            JSON::PP->new->encode({ type => 'send', room => 'r',
                                    content => $_, ref => "$tag$i" })))
    } @contents);
    my %want = map { ("$tag$_" => 1) } 1 .. @contents;
    my %got;
    for (collect($c, sub { ($_[0]{type} eq 'ack' || $_[0]{type} eq 'error')
                           && $want{ $_[0]{ref} // '' } },
                 scalar @contents, 8))
    {
        $got{ $_->{ref} } = $_;
    }
    return \%got;
}

# checks a burst in which the messages at @$bad (1-based) are to be
# refused
sub refused_alone {
    my ($name, $t, $c, $tag, $bad, @contents) = @_;
    my $mark = $t->log_mark;
    my $got = burst($c, $tag, @contents);
    my $n = @contents;
    my %bad = map { $_ => 1 } @$bad;
    my @acked = grep { ack_id($got->{"$tag$_"}) } 1 .. $n;
    my @refused = grep { my $r = $got->{"$tag$_"};
                         $r && $r->{type} eq 'error'
                         && $r->{code} eq 'unavailable' } 1 .. $n;

    is(join(',', @acked), join(',', grep { !$bad{$_} } 1 .. $n),
       "$name: the others are acked");
    is(join(',', @refused), join(',', @$bad),
       "$name: those are refused, \"unavailable\"")
        or diag(explain [ map { $got->{"$tag$_"} } @$bad ]);

    my $rows = rows();
    my @bad = grep { ($rows->{ ack_id($got->{"$tag$_"}) } // '')
                     ne "chat|ann|$contents[$_ - 1]" } @acked;
    ok(!@bad && @acked, "$name: the acked ones are stored")
        or diag("not stored: @bad");
    ok(poll(3, sub { $t->error_log(since => $mark)
                     =~ /\[error\].*chat postgres: .*refused/ }),
       "$name: an [error] line");

    my $a = send_msg($c, 'r', "after $tag", "after-$tag");
    ok(ack_id($a), "$name: a later send is acked") or diag(explain $a);
}

# --- 1. a table of an earlier version ---------------------------------------

$pg->psql(<<'_SQL_');
CREATE TABLE messages (
    id          text PRIMARY KEY,
    room_id     text NOT NULL,
    user_id     text NOT NULL,
    content     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_room_created ON messages (room_id, created_at);
ALTER TABLE messages OWNER TO chat;
INSERT INTO messages (id, room_id, user_id, content, created_at)
VALUES ('1700000000000000', 'r', 'old', 'old one', now() - interval '1 day'),
       ('1700000000001000', 'r', 'old', 'old two', now() - interval '1 day');
_SQL_

my $t = server('info');
ok(connected($t), 'the worker connected to PostgreSQL');

is(scalar $pg->psql(q{SELECT is_nullable || ' ' || column_default
                      FROM information_schema.columns
                      WHERE table_name = 'messages' AND column_name = 'zone'}),
   q{NO ''::text}, 'migrated: column zone, not null, default \'\'');
is(scalar $pg->psql(q{SELECT data_type || ' ' || is_nullable
                      FROM information_schema.columns
                      WHERE table_name = 'messages' AND column_name = 'prior'}),
   'bigint YES', 'migrated: column prior, bigint, null for the old rows');
is(scalar $pg->psql(q{SELECT data_type || ' ' || is_nullable
                      FROM information_schema.columns
                      WHERE table_name = 'messages' AND column_name = 'holes'}),
   'text YES', 'migrated: column holes, text, null for the old rows');
like(join("\n", $pg->psql(q{SELECT indexdef FROM pg_indexes
                            WHERE tablename = 'messages'})),
     qr/\(zone, room_id, created_at, id\)/,
     'migrated: an index on (zone, room_id, created_at, id)');
is(join(',', sort grep { /^\|old\|/ } values %{ rows() }),
   '|old|old one,|old|old two', 'migrated: the old rows are kept, zone \'\'');

my $ann = member($t, 'ann');
my @ids = map { ack_id(send_msg($ann, 'r', "new $_", "n$_")) } 1 .. 3;
is(scalar(grep { defined } @ids), 3, 'sends after the migration are acked');
{
    my $rows = rows();
    is(join(',', map { $rows->{ $_ // '' } // 'none' } @ids),
       'chat|ann|new 1,chat|ann|new 2,chat|ann|new 3',
       'and stored with their zone');
}
is(join(',', @{ stored_history($t) }), 'new 1,new 2,new 3',
   "the stored history is this zone's");

$pg->psql(q{UPDATE messages SET zone = 'chat' WHERE zone = ''});
is(join(',', @{ stored_history($t) }), 'old one,old two,new 1,new 2,new 3',
   'old rows given the zone are in its history');

# --- 2. a message the table refuses: CHECK ----------------------------------

$pg->psql(q{ALTER TABLE messages ADD CONSTRAINT no_poison
            CHECK (content <> 'poison')});

refused_alone('CHECK', $t, $ann, 'c', [4],
              map { $_ == 4 ? 'poison' : "fine $_" } 1 .. 10);

# two in a batch of 60: halves of halves
refused_alone('CHECK, two of 60', $t, $ann, 'd', [23, 41],
              map { $_ == 23 || $_ == 41 ? 'poison' : "fine $_" } 1 .. 60);

# --- 3. a statement cancelled (57014) ----------------------------------------

$pg->psql(<<'_SQL_');
CREATE FUNCTION cancel_it() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.content = 'cancel me' THEN
        RAISE EXCEPTION 'canceling statement due to statement timeout'
            USING ERRCODE = 'query_canceled';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER cancel_it BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION cancel_it();
_SQL_

refused_alone('57014', $t, $ann, 's', [1],
              map { $_ == 1 ? 'cancel me' : "fine $_" } 1 .. 6);

# --- 4. an error that is not the message's -----------------------------------

{
    $pg->psql('REVOKE INSERT ON messages FROM chat');
    my $ws = $ann->{ws};
    send_json($ann, type => 'send', room => 'r', content => "wait $_",
              ref => "w$_") for 1 .. 3;
    my @early = collect($ann, sub { ($_[0]{ref} // '') =~ /^w/ }, 1, 1.5);
    is(scalar @early, 0, 'INSERT not allowed: no ack, nothing refused')
        or diag(explain \@early);
    $pg->psql('GRANT INSERT ON messages TO chat');
    my @late = collect($ann, sub { ($_[0]{ref} // '') =~ /^w/ }, 3, 5);
    is(join(',', map { "$_->{type}:$_->{ref}" } @late), 'ack:w1,ack:w2,ack:w3',
       'allowed again: all acked, in order');
}

# --- 5. a database in LATIN1 --------------------------------------------------

{
    $pg->psql(q{CREATE DATABASE latin OWNER chat ENCODING 'LATIN1'
                LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0},
              db => 'postgres');
    my $l = server('debug', dbname => 'latin');
    ok(connected($l), 'LATIN1: connected');

    my $cat = member($l, 'ann');
    my $a = send_msg($cat, 'r', 'café', 'l1');
    ok(ack_id($a), 'LATIN1: "café" acked');
    is((rows('latin')->{ ack_id($a) // '' } // ''), 'chat|ann|café',
       'LATIN1: stored as "café"');

    my $mark = $l->log_mark;
    my $r = send_msg($cat, 'r', "smile \x{1F642}", 'l2');
    is($r && $r->{type} eq 'error' && $r->{code}, 'unavailable',
       'LATIN1: an emoji is refused for that message') or diag(explain $r);
    ok(poll(3, sub { $l->error_log(since => $mark)
                     =~ /\[error\].*chat postgres: .*refused/ }),
       'LATIN1: an [error] line');

    $a = send_msg($cat, 'r', 'après', 'l3');
    ok(ack_id($a), 'LATIN1: later sends are acked');

    # restarted, the zone is empty: the history is what was stored
    $l->stop;
    ok($l->start && connected($l), 'LATIN1: restarted');
    is(join(',', @{ stored_history($l) }), 'café,après',
       'LATIN1: the stored history reads back in UTF-8, without the emoji');
}
