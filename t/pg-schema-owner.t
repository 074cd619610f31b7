# A table of an earlier version that the chat role may not alter (SPEC §7,
# README "Storage"): its owner created it from an older schema.sql, with
# zone and the indexes but without prior and holes, and granted the chat
# role only SELECT and INSERT.  The worker cannot migrate it: the log
# says which statement the owner must run; once the owner ran it, sends
# are acked and stored.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Chat::Nginx;
use Test::Chat::Util qw(poll client join_room send_msg ack_id);
use Test::Chat::Pg;

plan skip_all => 'no PostgreSQL server binaries (Test::Chat::Pg->available)'
    unless Test::Chat::Pg->available;

plan tests => 5;

my $pg = Test::Chat::Pg->start;

$pg->psql(<<'_SQL_');
CREATE TABLE messages (
    id          text PRIMARY KEY,
    zone        text NOT NULL DEFAULT '',
    room_id     text NOT NULL,
    user_id     text NOT NULL,
    content     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_room_created ON messages (room_id, created_at);
CREATE INDEX messages_zone_room_created
    ON messages (zone, room_id, created_at, id);
ALTER TABLE messages OWNER TO postgres;
GRANT SELECT, INSERT ON messages TO chat;
_SQL_

my $t = Test::Chat::Nginx->new(workers => 1,
    http => "chat_zone chat 1m;\n    " . $pg->directive,
    server => <<'_EOC_');
        location = /chat {
            chat chat;
            chat_user $arg_user;
        }
_EOC_

my $want = qr/\[error\].*table messages lacks column prior or holes \(.*\), its owner must add them: ALTER TABLE messages ADD COLUMN IF NOT EXISTS prior bigint, ADD COLUMN IF NOT EXISTS holes text/;
ok(poll(10, sub { $t->grep_error_log($want) > 0 }),
   'the log says what the owner must run')
    or diag(join "\n", $t->grep_error_log(qr/chat postgres/));
is(scalar $pg->psql(q{SELECT count(*) FROM information_schema.columns
                      WHERE table_name = 'messages'
                        AND column_name IN ('prior', 'holes')}),
   '0', 'the table is left as it was');

# the owner runs it
$pg->psql('ALTER TABLE messages ADD COLUMN IF NOT EXISTS prior bigint, '
          . 'ADD COLUMN IF NOT EXISTS holes text');

my $ann = client($t, 'ann');
ok(join_room($ann, 'r'), 'ann joined r');
my $id;
poll(15, sub {
    $id = ack_id(send_msg($ann, 'r', 'after the owner ran it', 'a1'));
    defined $id;
});
ok($id, 'a send is acked once the owner added the columns');
is(scalar $pg->psql("SELECT content FROM messages WHERE id = '$id'"),
   'after the owner ran it', 'and stored');
