-- ngx_chat_module: PostgreSQL schema for stored messages (SPEC 7).
--
-- nginx creates this itself when it connects (chat_postgres), if the role
-- in the conninfo may create tables.  To create it yourself instead, e.g.
-- for a role that may only read and write, run as the owner you want:
--
--     psql -d chat -f schema.sql
--
-- then grant the chat role what it needs (see the end of this file).  When
-- the table and its index exist, nginx creates nothing and needs no other
-- privilege.  Safe to run again: everything is "IF NOT EXISTS".

-- One row per accepted message.  Inserts are parameterised (no user text
-- is ever spliced into SQL) and use ON CONFLICT (id) DO NOTHING, so a
-- batch retried after a lost connection adds no duplicates.
CREATE TABLE IF NOT EXISTS messages (
    -- the message id as sent on the wire; unique
    id          text PRIMARY KEY,
    -- the room name
    room_id     text NOT NULL,
    -- the sender, as authenticated by nginx (chat_user)
    user_id     text NOT NULL,
    -- the message text, UTF-8
    content     text NOT NULL,
    -- when the server accepted the message
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- History of a room, newest or oldest first.  nginx checks for this index
-- by name (messages_room_created) and creates it if it is missing.
CREATE INDEX IF NOT EXISTS messages_room_created
    ON messages (room_id, created_at);

-- For a role "chat" that only stores and reads messages:
--
--     GRANT SELECT, INSERT ON messages TO chat;
