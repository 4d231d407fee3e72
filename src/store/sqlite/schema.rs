//! The SQLite store's tables: each migration takes the schema from one
//! version (`PRAGMA user_version`) to the next; `Sqlite::open` applies the
//! ones a file lacks.

/// `PRAGMA application_id`: "rcst".
pub(super) const APPLICATION_ID: i32 = 0x7263_7374;

/// Each entry takes the schema from its index to the next version.
pub(super) const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE roomcast_rooms (
    room TEXT PRIMARY KEY,
    seq_reserved INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE roomcast_messages (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    identity TEXT NOT NULL,
    content TEXT NOT NULL,
    created TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attachment TEXT,
    edited_at TEXT,
    reactions TEXT NOT NULL DEFAULT '[]',
    client_id TEXT,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX roomcast_messages_id ON roomcast_messages (id);
CREATE INDEX roomcast_messages_created ON roomcast_messages (created_ms);
",
    "
-- Version 2: messages in a rowid table, in the order they were written,
-- with (room, seq) as an index. Version 1 kept them clustered by (room,
-- seq): with many rooms each insert landed inside the tree, where a full
-- page is split by rebalancing its neighbours, and a whole row moved each
-- time. Now rows are appended at the tree's right edge (a cheap split)
-- and only the small (room, seq) entry lands inside. The writer's CPU per
-- message, 100 rooms at 40 000 posts/s: 7.6-8.1 µs before, 5.4-6.0 after
-- (bench/store_cpu.sh; docs/BENCHMARKS.md, issue 15). The upgrade copies
-- every message once, in the one transaction that applies it.
CREATE TABLE roomcast_messages_v2 (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    identity TEXT NOT NULL,
    content TEXT NOT NULL,
    created TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attachment TEXT,
    edited_at TEXT,
    reactions TEXT NOT NULL DEFAULT '[]',
    client_id TEXT
);
INSERT INTO roomcast_messages_v2
    SELECT room, seq, id, user_name, identity, content, created, created_ms, attachment,
           edited_at, reactions, client_id
    FROM roomcast_messages ORDER BY created_ms, room, seq;
DROP TABLE roomcast_messages;
ALTER TABLE roomcast_messages_v2 RENAME TO roomcast_messages;
CREATE UNIQUE INDEX roomcast_messages_room_seq ON roomcast_messages (room, seq);
CREATE UNIQUE INDEX roomcast_messages_id ON roomcast_messages (id);
CREATE INDEX roomcast_messages_created ON roomcast_messages (created_ms);
",
    "
-- Version 3: messages in chunks. A chunk holds a room's posts of one
-- commit (up to 256 messages or 64 KiB of them; a late post may join an
-- older chunk), one row, its messages a JSON array in seq order; a room's
-- chunks never overlap in seq. A row per message cost four B-tree inserts
-- and a dozen bound values each: the writer's CPU per change at 40 000
-- posts/s in 100 rooms went from 8.1-9.1 µs to 4.3-5.3 µs
-- (src/store/sqlite/json.rs; docs/BENCHMARKS.md, issue 15). Ids find their
-- chunk through roomcast_message_ids. The upgrade makes each old message a
-- chunk of its own, in the order they were written.
CREATE TABLE roomcast_chunks (
    room TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL CHECK (last_seq >= first_seq),
    oldest_ms INTEGER NOT NULL,
    newest_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    messages TEXT NOT NULL
);
CREATE UNIQUE INDEX roomcast_chunks_room ON roomcast_chunks (room, first_seq);
CREATE INDEX roomcast_chunks_age ON roomcast_chunks (oldest_ms);
CREATE TABLE roomcast_message_ids (
    id TEXT PRIMARY KEY,
    chunk INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO roomcast_chunks (rowid, room, first_seq, last_seq, oldest_ms, newest_ms, count, messages)
    SELECT rowid, room, seq, seq, created_ms, created_ms, 1, json_array(json_object(
        'seq', seq, 'id', id, 'user', user_name, 'identity', identity, 'content', content,
        'timestamp', created,
        'attachment', CASE WHEN json_valid(attachment) THEN json(attachment) END,
        'edited_at', edited_at, 'reactions', nullif(reactions, '[]'), 'client_id', client_id))
    FROM roomcast_messages ORDER BY rowid;
INSERT INTO roomcast_message_ids (id, chunk) SELECT id, rowid FROM roomcast_messages;
DROP TABLE roomcast_messages;
",
    "
-- Version 4: no table of message ids. Edits, reactions and deletes carry
-- the message's seq and find its chunk by (room, seq), checking the id
-- there; the id table's insert was a third of the writer's CPU per post
-- (100 rooms at 40 000 posts/s: 2.6-2.9 µs per change without it against
-- 3.8-4.1 µs; docs/BENCHMARKS.md, issue 15, 'Schema version 4').
DROP TABLE roomcast_message_ids;
",
];
