//! The Lua scripts that make every shared change atomic on the Redis side.
//!
//! Each script is one read-check-write-publish step: a seq is allocated and
//! the message stored and published in one go, a reaction toggled and
//! published in one go, the author checked where the message lives. Because
//! publishing happens inside the script, the order events reach every
//! instance is the order Redis applied them.
//!
//! Every script takes the key prefix as `ARGV[1]` and builds key names
//! from it (no `KEYS`: roomcast does not target Redis Cluster). Keys for
//! room `R` put the variable part last so two rooms can never share a key:
//! `P:meta:R` (hash: `seq`, `ev`, `evicted`), `P:ids:R` (zset: message id
//! by seq), `P:msgs:R` (hash: id → stored JSON), `P:users:R` (hash: user →
//! connections on every live instance), `P:typing:R\nuser` (throttle),
//! `P:floor:R` (the room's last seq when it last emptied, kept a day past
//! its other keys so a room made again numbers on).
//! Presence per instance: `P:instances` (zset: instance id by expiry, ms),
//! `P:inst:ID` (hash: `room\nuser` → connections), `P:reaped:ID` (a
//! tombstone telling a revived instance to re-announce its members).
//! Events go to channel `P:room:R` as `<ev>\n<event JSON>` (`ev` counts the
//! room's events), `0\t<user>\n<JSON>` (typing: unnumbered, not for `user`)
//! or `s<ev>` (a marker: "every event up to `ev` has been published").

/// How long a room's last seq (`P:floor:R`) outlives its other keys after
/// it emptied: a room made again within it numbers on, and a client
/// resuming from before is told `gap`. Past it the room numbers from 1
/// again, and only an `after` beyond its new numbering is seen as a reset.
/// A day covers a laptop closed overnight; each key is a few dozen bytes
/// per room used in the last day.
pub const FLOOR_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Helpers shared by every script.
const PRELUDE: &str = r#"
local P = ARGV[1]
local function k(kind, room) return P .. ':' .. kind .. ':' .. room end
local function enc_list(t) if #t == 0 then return '[]' end return cjson.encode(t) end
local function enc_reactions(r)
  local parts = {}
  for i, e in ipairs(r) do parts[i] = cjson.encode(e[1]) .. ':' .. enc_list(e[2]) end
  return '{' .. table.concat(parts, ',') .. '}'
end
-- The first SAMPLE names of a list.
local function sample(users)
  local s = {}
  for j = 1, math.min(SAMPLE, #users) do s[j] = users[j] end
  return s
end
-- Reactions as message events show them: whole while they take at most
-- FULL_REACTIONS bytes, else a sample of names per emoji and the counts.
local function enc_shown(r)
  local whole = enc_reactions(r)
  if #whole <= FULL_REACTIONS then return whole, nil end
  local parts, counts = {}, {}
  for i, e in ipairs(r) do
    parts[i] = cjson.encode(e[1]) .. ':' .. enc_list(sample(e[2]))
    counts[i] = cjson.encode(e[1]) .. ':' .. #e[2]
  end
  return '{' .. table.concat(parts, ',') .. '}', '{' .. table.concat(counts, ',') .. '}'
end
-- A stored message (reactions as an ordered [[emoji, [users]]] list) in its wire form.
local function msg_json(m, kind, cid)
  local t = {type = kind, message_id = m.id, seq = m.seq, user = m.user, content = m.content,
             timestamp = m.timestamp, attachment = m.attachment, edited_at = m.edited_at}
  if cid and cid ~= '' then t.client_id = cid end
  local s = cjson.encode(t)
  local shown, counts = enc_shown(m.r or {})
  if counts then shown = shown .. ',"reaction_counts":' .. counts end
  return string.sub(s, 1, -2) .. ',"reactions":' .. shown .. '}'
end
-- The stored message `id` of `room` if identity `who` wrote it (or
-- `any`, for a moderator); else nil and the refusal code (-1: no such
-- message, -3: not the author). Messages stored before identities have
-- the identity of their name.
local function own_message(msgs, id, who, any)
  local raw = redis.call('HGET', msgs, id)
  if not raw then return nil, -1 end
  local m = cjson.decode(raw)
  if not any and (m.who or ('n:' .. m.user)) ~= who then return nil, -3 end
  return m
end
local function publish(room, body)
  local ev = redis.call('HINCRBY', k('meta', room), 'ev', 1)
  redis.call('PUBLISH', k('room', room), ev .. '\n' .. body)
  return ev
end
-- A durable store may hold messages up to `floor` (Redis lost them, or
-- never had them): the room's numbering continues above it. A room whose
-- keys expired while it was empty numbers on from where it stopped
-- (`P:floor:R`), and what went with the keys counts as evicted, so a
-- resume from before is told `gap` instead of taking the new room's
-- messages for ones it has.
-- Below the store's floor the same holds: what Redis lacks up to it counts
-- as evicted, so a resume from before is told `gap` and completed from the
-- store. What Redis still has of the room is older than what it lost (an
-- older snapshot, a replica that lagged) and may be stale (edits and
-- reactions since): it goes, so that the ring holds only what follows
-- `evicted`, as it always does, and a welcome takes the newest messages
-- from the store instead of a run of older ones with a hole after them.
local function raise_seq(room, floor)
  local meta = k('meta', room)
  local seq = redis.call('HGET', meta, 'seq')
  if not seq then
    local before = tonumber(redis.call('GET', k('floor', room)) or '0')
    if before > 0 then
      redis.call('HSET', meta, 'seq', before, 'evicted', before)
    end
    seq = before
  end
  floor = tonumber(floor) or 0
  if tonumber(seq) < floor then
    local ids, msgs, top = k('ids', room), k('msgs', room), string.format('%d', floor)
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', ids, '-inf', top)) do
      redis.call('HDEL', msgs, id)
    end
    redis.call('ZREMRANGEBYSCORE', ids, '-inf', top)
    redis.call('HSET', meta, 'seq', top, 'evicted', top)
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function online(room, cap)
  local key = k('users', room)
  -- Past the cap only the count goes out: HLEN, not every name.
  local n = redis.call('HLEN', key)
  if n > cap then return n, nil end
  local names = redis.call('HKEYS', key)
  table.sort(names)
  return #names, names
end
local function presence_event(kind, room, user, cap)
  local count, names = online(room, cap)
  local s = '{"type":"' .. kind .. '","user":' .. cjson.encode(user) .. ',"online_count":' .. count
  if names then s = s .. ',"online":' .. enc_list(names) end
  return publish(room, s .. '}')
end
-- Who holds a name in a room: `P:hold:R\nuser` = the identity, kept while
-- the name has connections, then for HOLD_MS.
local function hold_key(room, user) return k('hold', room) .. '\n' .. user end
-- Adds delta to a user's connections over all instances; says 'join' or
-- 'leave' when the user came online or went offline. An empty room's
-- history expires after room_ttl ms, as on a single instance.
local function adjust(room, user, delta, room_ttl)
  local uk = k('users', room)
  local total = redis.call('HINCRBY', uk, user, delta)
  local before = total - delta
  if total <= 0 then redis.call('HDEL', uk, user) end
  local keys = {k('meta', room), k('ids', room), k('msgs', room)}
  if before <= 0 and total > 0 then
    for _, key in ipairs(keys) do redis.call('PERSIST', key) end
    redis.call('PERSIST', hold_key(room, user))
    return 'join'
  elseif before > 0 and total <= 0 then
    -- The name stays its identity's for the grace period.
    redis.call('PEXPIRE', hold_key(room, user), HOLD_MS)
    if redis.call('HLEN', uk) == 0 then
      for _, key in ipairs(keys) do redis.call('PEXPIRE', key, math.max(1, room_ttl)) end
      local seq = redis.call('HGET', keys[1], 'seq')
      if seq then redis.call('SET', k('floor', room), seq, 'PX', FLOOR_MS) end
    end
    return 'leave'
  end
  return nil
end
-- Sets this instance's connection count for (room, user).
local function set_count(inst, room, user, n, room_ttl)
  local ik = P .. ':inst:' .. inst
  local field = room .. '\n' .. user
  local old = tonumber(redis.call('HGET', ik, field) or '0')
  if n == old then return nil end
  if n > 0 then redis.call('HSET', ik, field, n) else redis.call('HDEL', ik, field) end
  return adjust(room, user, n - old, room_ttl)
end
local function register(inst, ttl)
  redis.call('ZADD', P .. ':instances', 'NX', now_ms() + ttl, inst)
end
-- Removes a dead instance's members, announcing who went offline.
local function reap(inst, cap, room_ttl)
  local ik = P .. ':inst:' .. inst
  local fields = redis.call('HGETALL', ik)
  redis.call('DEL', ik)
  redis.call('ZREM', P .. ':instances', inst)
  redis.call('SET', P .. ':reaped:' .. inst, 1, 'PX', 86400000)
  for i = 1, #fields, 2 do
    local nl = string.find(fields[i], '\n', 1, true)
    local room, user = string.sub(fields[i], 1, nl - 1), string.sub(fields[i], nl + 1)
    if adjust(room, user, -tonumber(fields[i + 1]), room_ttl) then
      presence_event('leave', room, user, cap)
    end
  end
end
"#;

/// A script the backbone runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// `P, room, ring, id, user, content, timestamp, attachment JSON|'',
    /// client_id|'', identity, seq floor` → seq, or for a retry of a
    /// client_id `[seq, message JSON]` (`[0, '']` if it was deleted).
    Post,
    /// `P, room, inst, ttl, user, n, room_ttl, after|'', welcome_history, cap,
    /// history byte budget, seq floor, identity` → -6 if another identity
    /// holds the name, else `[last_seq, ev, gap, online_count, online JSON,
    /// [message JSON, oldest first]]`; then publishes `join`.
    Join,
    /// `P, room, inst, ttl, user, n, cap, room_ttl` → lowers this instance's
    /// count for the user to `n` (never raises it: a count Redis no longer
    /// has, this instance having been reaped, comes back by `Resync`, which
    /// checks who holds the name).
    Presence,
    /// `P, room, id, user, emoji, add|remove|toggle, max emoji, max users,
    /// identity, max reaction bytes` → `[seq, reactions as [[emoji, [users],
    /// [identities]]]]` changed, 0 no-op, -7 the reactions would be too large, -1 unknown, -2 too many emoji, -5 too many users on this emoji.
    React,
    /// `P, room, id, identity, content, blank 0|1, now` → the message's seq,
    /// -1 unknown, -3 forbidden, -4 blank.
    Edit,
    /// `P, room, id, identity, moderator 0|1` → the message's seq, -1
    /// unknown, -3 forbidden.
    Delete,
    /// `P, room, user, interval_ms` → 1 published, 0 throttled.
    Typing,
    /// `P, room` → `[online_count, online JSON]`.
    Online,
    /// `P, room` → publishes the marker `s<ev>`.
    Mark,
    /// `P, inst, ttl, cap, room_ttl` → 1 if this instance was reaped and must resync.
    Heartbeat,
    /// `P, inst, ttl, cap, room_ttl, (room, user, n, identity)*` → makes the
    /// instance's presence exactly this, announcing the differences, and
    /// holds each name for its identity again (a name given with two
    /// identities: the holder's, or the first's if none holds it); answers
    /// `[room, user, identity]` for each name whose hold another identity
    /// has now (taken while this instance was reaped), left out.
    Resync,
    /// `P, inst, cap, room_ttl` → removes this instance (graceful shutdown).
    Bye,
    /// `P, room, before|'', limit` → `[more 0|1, [message JSON, oldest first]]`.
    Page,
    /// `P, room, user` → the identity holding the name, or nil.
    Hold,
    /// `P, room, id` → the message's whole reactions as `{emoji: [users]}`
    /// JSON, or -1 unknown.
    Reactions,
}

impl Script {
    /// Every script, in a fixed order (their index is their slot for SHAs).
    pub const ALL: [Script; 15] = [
        Self::Post,
        Self::Join,
        Self::Presence,
        Self::React,
        Self::Edit,
        Self::Delete,
        Self::Typing,
        Self::Online,
        Self::Mark,
        Self::Heartbeat,
        Self::Resync,
        Self::Bye,
        Self::Page,
        Self::Hold,
        Self::Reactions,
    ];

    /// Position in [`Script::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// The full Lua source.
    pub fn source(self) -> String {
        let body = match self {
            Self::Post => POST,
            Self::Join => JOIN,
            Self::Presence => PRESENCE,
            Self::React => REACT,
            Self::Edit => EDIT,
            Self::Delete => DELETE,
            Self::Typing => TYPING,
            Self::Online => ONLINE,
            Self::Mark => MARK,
            Self::Heartbeat => HEARTBEAT,
            Self::Resync => RESYNC,
            Self::Bye => BYE,
            Self::Page => PAGE,
            Self::Hold => HOLD,
            Self::Reactions => REACTIONS,
        };
        let hold_ms = crate::hub::NAME_HOLD_GRACE.as_millis();
        let floor_ms = FLOOR_KEPT.as_millis();
        let retry_ms = crate::hub::POST_RETRY_WINDOW.as_millis();
        let (full, sample) = (
            crate::hub::FULL_REACTIONS_BYTES,
            crate::hub::REACTION_SAMPLE,
        );
        format!(
            "local HOLD_MS = {hold_ms}\nlocal RETRY_MS = {retry_ms}\nlocal FLOOR_MS = {floor_ms}\n\
             local FULL_REACTIONS = {full}\nlocal SAMPLE = {sample}\n{PRELUDE}\n{body}"
        )
    }
}

const POST: &str = r#"
local room, ring = ARGV[2], tonumber(ARGV[3])
local meta, ids, msgs = k('meta', room), k('ids', room), k('msgs', room)
-- A retry of a client_id this identity posted within RETRY_MS: nothing new,
-- the earlier message for the sender (or nothing, if it was deleted).
local retry = nil
if ARGV[9] ~= '' then
  retry = k('cid', room) .. '\n' .. ARGV[10] .. '\n' .. ARGV[9]
  local prev = redis.call('GET', retry)
  if prev then
    local raw = redis.call('HGET', msgs, prev)
    if raw then
      local m = cjson.decode(raw)
      return {m.seq, msg_json(m, 'message', ARGV[9])}
    end
    return {0, ''}
  end
end
raise_seq(room, ARGV[11])
local seq = redis.call('HINCRBY', meta, 'seq', 1)
local m = {id = ARGV[4], seq = seq, user = ARGV[5], who = ARGV[10], content = ARGV[6], timestamp = ARGV[7], r = {}}
if ARGV[8] ~= '' then m.attachment = cjson.decode(ARGV[8]) end
redis.call('HSET', msgs, m.id, cjson.encode(m))
redis.call('ZADD', ids, seq, m.id)
local extra = redis.call('ZCARD', ids) - ring
if extra > 0 then
  local old = redis.call('ZPOPMIN', ids, extra)
  local evicted = tonumber(redis.call('HGET', meta, 'evicted') or '0')
  for i = 1, #old, 2 do
    redis.call('HDEL', msgs, old[i])
    evicted = math.max(evicted, tonumber(old[i + 1]))
  end
  redis.call('HSET', meta, 'evicted', evicted)
end
publish(room, msg_json(m, 'message', ARGV[9]))
if retry then redis.call('SET', retry, m.id, 'PX', RETRY_MS) end
return seq
"#;

const JOIN: &str = r#"
local room, inst, user, who = ARGV[2], ARGV[3], ARGV[5], ARGV[13]
local room_ttl = tonumber(ARGV[7])
local holder = redis.call('GET', hold_key(room, user))
if holder and holder ~= who then return -6 end
redis.call('SET', hold_key(room, user), who)
register(inst, tonumber(ARGV[4]))
local change = set_count(inst, room, user, tonumber(ARGV[6]), room_ttl)
local meta, ids, msgs = k('meta', room), k('ids', room), k('msgs', room)
raise_seq(room, ARGV[12])
local st = redis.call('HMGET', meta, 'seq', 'ev', 'evicted')
local last_seq, ev, evicted = tonumber(st[1] or '0'), tonumber(st[2] or '0'), tonumber(st[3] or '0')
local idl, gap = {}, 0
if ARGV[8] == '' then
  local n = tonumber(ARGV[9])
  if n > 0 then idl = redis.call('ZRANGE', ids, -n, -1) end
else
  -- Past the newest seq: the client counted in a numbering the room no
  -- longer has (Redis lost it), so all of the current one is news.
  local after = tonumber(ARGV[8])
  if after > last_seq then after = 0 end
  idl = redis.call('ZRANGEBYSCORE', ids, '(' .. string.format('%d', after), '+inf')
  if after < evicted then gap = 1 end
end
-- The newest messages whose JSON fits in ARGV[11] bytes. One too large
-- for what is left is skipped and older ones still fit in, as on one
-- instance (src/hub/room.rs), so one huge message cannot hide the rest; a
-- resume that had to leave some out reports a gap.
local budget, used, newest_first = tonumber(ARGV[11]), 0, {}
for i = #idl, 1, -1 do
  local raw = redis.call('HGET', msgs, idl[i])
  if raw then
    local part = msg_json(cjson.decode(raw), 'message')
    if used + #part + 1 > budget then
      if ARGV[8] ~= '' then gap = 1 end
    else
      used = used + #part + 1
      newest_first[#newest_first + 1] = part
    end
  end
end
local parts = {}
for i = #newest_first, 1, -1 do parts[#parts + 1] = newest_first[i] end
local count, names = online(room, 1e9)
if change then presence_event(change, room, user, tonumber(ARGV[10])) end
return {last_seq, ev, gap, count, enc_list(names), parts}
"#;

const PRESENCE: &str = r#"
local room, inst, user = ARGV[2], ARGV[3], ARGV[5]
register(inst, tonumber(ARGV[4]))
local old = tonumber(redis.call('HGET', P .. ':inst:' .. inst, room .. '\n' .. user) or '0')
local change = set_count(inst, room, user, math.min(tonumber(ARGV[6]), old), tonumber(ARGV[8]))
if change then presence_event(change, room, user, tonumber(ARGV[7])) end
return 1
"#;

const REACT: &str = r#"
local room, id, user, emoji, who = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[9]
local msgs = k('msgs', room)
local raw = redis.call('HGET', msgs, id)
if not raw then return -1 end
local m = cjson.decode(raw)
local r = m.r
-- Each entry: {emoji, {names}, {identities}}; an entry stored before
-- identities has the identity of each name.
local pos, at = nil, nil
for i, e in ipairs(r) do if e[1] == emoji then pos = i end end
if pos then
  local e = r[pos]
  e[3] = e[3] or {}
  for i, u in ipairs(e[2]) do
    e[3][i] = e[3][i] or ('n:' .. u)
    if e[3][i] == who then at = i end
  end
end
local add
if ARGV[6] == 'add' then add = true elseif ARGV[6] == 'remove' then add = false else add = (at == nil) end
if add == (at ~= nil) then return 0 end
if add then
  if pos and #r[pos][2] >= tonumber(ARGV[8]) then return -5
  elseif pos then table.insert(r[pos][2], user); table.insert(r[pos][3], who)
  elseif #r >= tonumber(ARGV[7]) then return -2
  else table.insert(r, {emoji, {user}, {who}}) end
  if #enc_reactions(r) > tonumber(ARGV[10]) then return -7 end
else
  -- The event names the reaction taken away: one identity may hold
  -- several names, and the name is the one it reacted under.
  user = r[pos][2][at]
  table.remove(r[pos][2], at)
  table.remove(r[pos][3], at)
  if #r[pos][2] == 0 then table.remove(r, pos) end
end
-- The message's changes counted, so that stores written by several
-- instances keep the newest whatever order their writes land in.
m.v = (m.v or 0) + 1
redis.call('HSET', msgs, id, cjson.encode(m))
local users = {}
for _, e in ipairs(r) do if e[1] == emoji then users = e[2] end end
-- What changed, and the whole reactions only while they are small.
local whole = enc_reactions(r)
local fits = #whole <= FULL_REACTIONS
publish(room, '{"type":"reaction_update","message_id":' .. cjson.encode(id) ..
  ',"emoji":' .. cjson.encode(emoji) .. ',"user":' .. cjson.encode(user) ..
  ',"action":"' .. (add and 'add' or 'remove') .. '","count":' .. #users ..
  ',"users":' .. enc_list(fits and users or sample(users)) ..
  (fits and (',"reactions":' .. whole) or '') .. '}')
return {m.seq, enc_list(r), m.v}
"#;

const EDIT: &str = r#"
local room, id, who = ARGV[2], ARGV[3], ARGV[4]
local msgs = k('msgs', room)
local m, refused = own_message(msgs, id, who, false)
if not m then return refused end
if ARGV[6] == '1' and not m.attachment then return -4 end
m.content, m.edited_at = ARGV[5], ARGV[7]
m.v = (m.v or 0) + 1
redis.call('HSET', msgs, id, cjson.encode(m))
publish(room, msg_json(m, 'message_updated'))
return {m.seq, m.v}
"#;

const DELETE: &str = r#"
local room, id, who = ARGV[2], ARGV[3], ARGV[4]
local msgs = k('msgs', room)
local m, refused = own_message(msgs, id, who, ARGV[5] == '1')
if not m then return refused end
redis.call('HDEL', msgs, id)
redis.call('ZREM', k('ids', room), id)
publish(room, '{"type":"message_deleted","message_id":' .. cjson.encode(id) .. ',"seq":' .. m.seq .. '}')
return m.seq
"#;

const TYPING: &str = r#"
local room, user = ARGV[2], ARGV[3]
if not redis.call('SET', k('typing', room) .. '\n' .. user, 1, 'NX', 'PX', math.max(1, tonumber(ARGV[4]))) then
  return 0
end
redis.call('PUBLISH', k('room', room), '0\t' .. user .. '\n{"type":"typing","user":' .. cjson.encode(user) .. '}')
return 1
"#;

const REACTIONS: &str = r#"
local raw = redis.call('HGET', k('msgs', ARGV[2]), ARGV[3])
if not raw then return -1 end
return enc_reactions(cjson.decode(raw).r or {})
"#;

const ONLINE: &str = r#"
local count, names = online(ARGV[2], 1e9)
return {count, enc_list(names)}
"#;

const MARK: &str = r#"
local room = ARGV[2]
local ev = tonumber(redis.call('HGET', k('meta', room), 'ev') or '0')
redis.call('PUBLISH', k('room', room), 's' .. ev)
return ev
"#;

const HEARTBEAT: &str = r#"
local inst, ttl, cap, room_ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local insts = P .. ':instances'
local resync = redis.call('DEL', P .. ':reaped:' .. inst)
redis.call('ZADD', insts, now + ttl, inst)
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', insts, '-inf', now)) do
  reap(dead, cap, room_ttl)
end
return resync
"#;

const RESYNC: &str = r#"
local inst, ttl, cap, room_ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZADD', P .. ':instances', now_ms() + ttl, inst)
redis.call('DEL', P .. ':reaped:' .. inst)
local ik = P .. ':inst:' .. inst
local want, fields, taken = {}, {}, {}
for i = 6, #ARGV, 4 do
  local room, user, who = ARGV[i], ARGV[i + 1], ARGV[i + 3]
  local f = room .. '\n' .. user
  -- The name's hold lapsed while this instance was taken for dead: if
  -- another identity took it since, its members here must go; else it
  -- is this identity's again.
  local holder = redis.call('GET', hold_key(room, user))
  if holder and holder ~= who then
    taken[#taken + 1] = {room, user, who}
  else
    redis.call('SET', hold_key(room, user), who)
    want[f] = (want[f] or 0) + tonumber(ARGV[i + 2])
  end
end
local have = redis.call('HGETALL', ik)
for i = 1, #have, 2 do fields[have[i]] = true end
for f, _ in pairs(want) do fields[f] = true end
for f, _ in pairs(fields) do
  local nl = string.find(f, '\n', 1, true)
  local room, user = string.sub(f, 1, nl - 1), string.sub(f, nl + 1)
  local change = set_count(inst, room, user, want[f] or 0, room_ttl)
  if change then presence_event(change, room, user, cap) end
end
return taken
"#;

const BYE: &str = r#"
reap(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
redis.call('DEL', P .. ':reaped:' .. ARGV[2])
return 1
"#;

const PAGE: &str = r#"
local room, limit = ARGV[2], tonumber(ARGV[4])
local top = '+inf'
if ARGV[3] ~= '' then top = '(' .. ARGV[3] end
local idl = redis.call('ZREVRANGEBYSCORE', k('ids', room), top, '-inf', 'LIMIT', 0, limit + 1)
local more = 0
if #idl > limit then more = 1; table.remove(idl) end
local msgs, parts = k('msgs', room), {}
for i = #idl, 1, -1 do
  local raw = redis.call('HGET', msgs, idl[i])
  if raw then parts[#parts + 1] = msg_json(cjson.decode(raw), 'message') end
end
return {more, parts}
"#;

const HOLD: &str = r#"
return redis.call('GET', hold_key(ARGV[2], ARGV[3]))
"#;
