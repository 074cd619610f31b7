# The table and the batches that go into it (SPEC §7, §8), against a
# private PostgreSQL server (Test::Chat::Pg):
#
#   1. a table of an earlier version (no zone column, rows in it) is
#      migrated in place: column zone (not null, default ''), the index on
#      (zone, room_id, created_at, id), the old rows kept with zone '';
#      sends are acked and stored with their zone, the stored history has
#      this zone's rows only until the old rows are given the zone
#   2. a batch with one message PostgreSQL refuses for a lasting reason (a
#      CHECK constraint): only that one is refused ("unavailable" with its
#      ref, an [error] line), the 9 others are acked and stored; later
#      sends are acked
#   3. the same with a statement cancelled (SQLSTATE 57014, what the
#      statement timeout raises)
#   4. an error that is not the message's (INSERT not allowed for a while):
#      nothing is refused, the messages wait and are acked once allowed
#   5. a database in LATIN1: the connection's client_encoding is UTF8, so
#      "café" is stored as "café" (not "cafÃ©") and read back so; a
#      character LATIN1 has not (an emoji) is refused for that message
#      alone
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

plan tests => 8;

for my $h (qw(output failure_output todo_output)) {
    binmode(Test::More->builder->$h, ':encoding(UTF-8)');
}

my $pg = Test::Chat::Pg->start;

sub server {
    my (%o) = @_;
    (my $q = $pg->conninfo(%o)) =~ s/(["\\])/\\$1/g;
    return Test::Chat::Nginx->new(workers => 1,
        http => "chat_zone chat 1m;\n    chat_postgres \"$q\";",
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
    return poll(10, sub {
        scalar(my @l = $t->grep_error_log(qr/chat postgres: .* is up/)) >= 2
    });
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

# checks a burst in which message $bad (1-based) is to be refused
sub refused_alone {
    my ($name, $t, $c, $tag, $bad, @contents) = @_;
    my $mark = $t->log_mark;
    my $got = burst($c, $tag, @contents);
    my $n = @contents;
    my @acked = grep { ack_id($got->{"$tag$_"}) } 1 .. $n;
    my $r = $got->{"$tag$bad"};

    is(join(',', @acked), join(',', grep { $_ != $bad } 1 .. $n),
       "$name: the others are acked");
    is($r && $r->{type} eq 'error' && $r->{code}, 'unavailable',
       "$name: that one is refused, \"unavailable\"") or diag(explain $r);

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

my $t = server();
ok(connected($t), 'the worker connected to PostgreSQL');

is(scalar $pg->psql(q{SELECT is_nullable || ' ' || column_default
                      FROM information_schema.columns
                      WHERE table_name = 'messages' AND column_name = 'zone'}),
   q{NO ''::text}, 'migrated: column zone, not null, default \'\'');
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
