-- ngx_chat_module: PostgreSQL schema for stored messages (SPEC 7).
--
-- nginx creates this itself when it connects (chat_postgres), if the role
-- in the conninfo may create tables.  To create it yourself instead, e.g.
-- for a role that may only read and write, run as the owner you want:
--
--     psql -d chat -f schema.sql
--
-- then grant the chat role what it needs (see the end of this file).  When
-- the table, its zone, prior and holes columns and its indexes exist,
-- nginx creates nothing and needs no other privilege.  Safe to run again:
-- everything is "IF NOT EXISTS"; run it again to migrate a table of an
-- earlier version (it adds the zone, prior and holes columns and the
-- index).

-- One row per accepted message.  Inserts are parameterised (no user text
-- is ever spliced into SQL) and use ON CONFLICT (id) DO NOTHING; a message
-- whose id is taken is acked only when that row is this very message (a
-- batch retried after a lost connection), refused otherwise.
CREATE TABLE IF NOT EXISTS messages (
    -- the message id as sent on the wire ("<number>-<12 hex>"); unique
    id          text PRIMARY KEY,
    -- the chat_zone: rooms of different zones share no rows
    zone        text NOT NULL DEFAULT '',
    -- the room name
    room_id     text NOT NULL,
    -- the sender, as authenticated by nginx (chat_user)
    user_id     text NOT NULL,
    -- the message text, UTF-8
    content     text NOT NULL,
    -- when the server accepted the message
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- with chat_redis: the highest number of another server's message its
    -- server had delivered in the room when this one came (NULL: none),
    -- and the ranges of a server's numbers below it that had not come yet
    -- ("<tag>:<lo>:<hi>,...", NULL: none), so that history after a
    -- restart comes in the order its members saw
    prior       bigint,
    holes       text
);

-- A table of an earlier version has no zone column: its rows get the zone
-- '' (no zone's history shows them); to give them to a zone:
--
--     UPDATE messages SET zone = 'chat' WHERE zone = '';
ALTER TABLE messages ADD COLUMN IF NOT EXISTS zone text NOT NULL DEFAULT '';

-- A table of an earlier version has no prior and holes columns either
ALTER TABLE messages ADD COLUMN IF NOT EXISTS prior bigint;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS holes text;

-- History of a zone's room, newest or oldest first (the queries' order),
-- and of a room (SPEC 7).  nginx checks for these indexes by name and
-- creates them if they are missing.
CREATE INDEX IF NOT EXISTS messages_zone_room_created
    ON messages (zone, room_id, created_at, id);
CREATE INDEX IF NOT EXISTS messages_room_created
    ON messages (room_id, created_at);

-- For a role "chat" that only stores and reads messages:
--
--     GRANT SELECT, INSERT ON messages TO chat;
