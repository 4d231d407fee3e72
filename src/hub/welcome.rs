//! Completing a join that cannot be answered under the room's lock: the
//! room must first be read from the store, a resume wants messages the
//! ring no longer holds, or the room lives in a backbone. Each runs as a
//! task of its own and ends by queueing the member's `welcome`, or by
//! closing it: with 1013 when the store or backbone failed (the client
//! retries), with 4009 when the backbone says the name is taken. A member
//! that left meanwhile is left alone.

use std::sync::Arc;

use super::event::MessageView;
use super::room::{Reading, Room, RoomState, Waiting};
use super::{
    Backbone, CloseReason, Common, ErrorCode, Identity, Link, PageQuery, RESERVE_BLOCK, Refusal,
    RemoteWelcome, RoomName, StoreError, UserName, frame,
};

/// Messages a resume may read from the store at most (the welcome's byte
/// budget keeps the newest that fit; a resume wanting more reports a gap).
const RESUME_FROM_STORE: usize = 1000;

/// Reads a room from the store (its tail, `tail` messages, and a fresh seq
/// reservation), unless it is loaded already. With a backbone, which
/// numbers the room itself, nothing is reserved: what is read is the floor
/// the backbone's numbering never goes below, read again whenever the room
/// was let go (see `RoomState::forget_floor`).
pub(super) async fn ensure_loaded(
    common: &Common,
    room: &Room,
    tail: usize,
) -> Result<(), StoreError> {
    let Some(store) = &common.store else {
        return Ok(());
    };
    if room.lock().loaded {
        return Ok(());
    }
    let _one_at_a_time = room.loading.lock().await;
    if room.lock().loaded {
        return Ok(());
    }
    let block = match common.link {
        Link::Local => RESERVE_BLOCK,
        Link::Remote(_) => 0,
    };
    loop {
        let generation = room.lock().floor_generation;
        let snapshot = store.load(room.name.as_str(), tail, block).await?;
        let mut state = room.lock();
        // The backbone reconnected while this was read: what the store
        // holds may have moved on; read it again (a backbone reserves
        // nothing, so a load is only a read).
        if state.floor_generation == generation {
            state.install(snapshot, common);
            return Ok(());
        }
    }
}

/// Whether `state`'s floor may be handed to the backbone: read from the
/// store since the backbone's connection opened, or there is no store.
pub(super) fn floor_read(common: &Common, state: &RoomState) -> bool {
    state.loaded || common.store.is_none()
}

/// Closes a member that could not be welcomed, with `reason` (1013: it
/// retries; 4009: the name is taken).
fn close_unwelcomed(room: &Room, (key, generation): (usize, u64), reason: CloseReason) {
    if let Some(slot) = room.lock().members.get(key)
        && slot.generation == generation
    {
        slot.outbox.close(reason);
    }
}

/// Completes a join that needs the store: loads the room if it is not
/// loaded, reads the messages a resume wants that the ring no longer holds,
/// then queues the welcome. On failure the connection is closed with 1013.
/// The room stays in the hub until this is done (`reading`).
pub(super) async fn welcome_from_store(
    common: Arc<Common>,
    (room, reading): (Arc<Room>, Reading),
    requested: RoomName,
    w: Waiting,
) {
    let read = async {
        ensure_loaded(&common, &room, common.config.history.max(1)).await?;
        let before = {
            let state = room.lock();
            match state.resume_from(w.after) {
                Some(after) if state.needs_store(Some(after)) => Some((after, state.ring_start())),
                _ => None,
            }
        };
        let Some((after, before)) = before else {
            return Ok::<_, StoreError>((Vec::new(), false, None));
        };
        let Some(store) = &common.store else {
            return Ok((Vec::new(), false, None));
        };
        let query = PageQuery {
            after,
            before: Some(before),
            limit: RESUME_FROM_STORE,
        };
        let (older, more) = store.page(room.name.as_str(), query).await?;
        Ok((older, more, Some(before)))
    };
    match read.await {
        Ok((older, more, before)) => {
            let mut state = room.lock();
            // Posts during the read may have pushed messages from `before`
            // on out of the ring: between the page and the ring there is
            // then a hole, which the welcome reports as a gap (the client
            // pages for it).
            let hole = before.is_some_and(|b| state.ring_start() > b);
            state.welcome_waiting(&requested, &w, (&older, more || hole), &common);
        }
        Err(e) => {
            tracing::warn!(room = %room.name, "join failed: {e}");
            close_unwelcomed(&room, (w.key, w.generation), CloseReason::UNAVAILABLE);
        }
    }
    drop(reading); // after the room's lock is let go: it takes it
}

/// The `seq` of a message in its JSON form.
fn seq_of(json: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_str::<Seq>(json).ok().map(|s| s.seq)
}

/// Completes a backbone's welcome from the store, when the store holds
/// messages the welcome wants that the backbone no longer does (a resume
/// past its ring, or a backbone that restarted empty). The store's
/// messages go before the backbone's, within the same byte budget.
async fn fill_from_store(
    common: &Common,
    room: &RoomName,
    after: Option<u64>,
    w: &mut RemoteWelcome,
) -> Result<(), StoreError> {
    let Some(store) = &common.store else {
        return Ok(());
    };
    let first = w
        .history
        .first()
        .and_then(|m| seq_of(m))
        .unwrap_or(w.last_seq.saturating_add(1));
    let (from, limit) = match after {
        Some(a) if w.gap && a < w.last_seq => (a, RESUME_FROM_STORE),
        None if w.history.len() < common.config.welcome_history => {
            (0, common.config.welcome_history - w.history.len())
        }
        _ => return Ok(()),
    };
    if first <= from.saturating_add(1) {
        return Ok(());
    }
    let query = PageQuery {
        after: from,
        before: Some(first),
        limit,
    };
    let (rows, more) = store.page(room.as_str(), query).await?;
    let budget = common.config.welcome_history_bytes;
    let mut used: usize = w.history.iter().map(|m| m.len() + 1).sum();
    let mut older = Vec::new();
    let mut cut = false;
    for m in rows.iter().rev() {
        let json = serde_json::to_string(&MessageView::of("message", m, None)).unwrap_or_default();
        if used.saturating_add(json.len() + 1) > budget {
            cut = true;
            continue;
        }
        used += json.len() + 1;
        older.push(json);
    }
    older.reverse();
    older.append(&mut w.history);
    w.history = older;
    // A resume's gap stays as the backbone said: the database may not hold
    // yet what other instances posted (their writes lag), and the
    // backbone's own history may have skipped one too large for the
    // budget; neither shows here. Filled, the welcome holds more, and the
    // client pages for the rest.
    if after.is_some() {
        w.gap |= more || cut;
    }
    Ok(())
}

/// Completes a join through the backbone: waits until the room's events are
/// received, registers the connection and reads the room's state (with a
/// store: the room's stored seq first, which the backbone's numbering never
/// goes below), then queues `welcome` and whatever arrived meanwhile. On
/// failure the connection is closed with 1013 so the client retries.
pub(super) async fn welcome_from_backbone(
    backbone: Arc<dyn Backbone>,
    common: Arc<Common>,
    (room, requested): (Arc<Room>, RoomName),
    (key, generation): (usize, u64),
    (user, identity, claim): (UserName, Identity, Option<String>),
    after: Option<u64>,
) {
    let read = async {
        ensure_loaded(&common, &room, 0)
            .await
            .map_err(|e| Refusal::new(ErrorCode::Unavailable, format!("the history store: {e}")))?;
        backbone.watching(&room.name).await?;
        // The welcome is queued under the room's lock, with the floor read
        // under it; if the backbone reconnected since the floor was read,
        // it is read again first. A reconnect forgets the floor before or
        // after, never in between (the link takes requests only after).
        let answer = loop {
            let queued = {
                let mut state = room.lock();
                if !state.has(key, generation) {
                    return Ok::<_, Refusal>(None); // it left before its welcome
                }
                floor_read(&common, &state).then(|| {
                    state.announce(key, generation);
                    let connections = state.connections_of(&user);
                    backbone.welcome(
                        &room.name,
                        (&user, &identity),
                        connections,
                        after,
                        state.last_seq(),
                    )
                })
            };
            match queued {
                Some(answer) => break answer,
                None => ensure_loaded(&common, &room, 0).await.map_err(|e| {
                    Refusal::new(ErrorCode::Unavailable, format!("the history store: {e}"))
                })?,
            }
        };
        let mut w = answer.await?;
        if let Err(e) = fill_from_store(&common, &room.name, after, &mut w).await {
            // The backbone's part is still right; the older part is missing.
            tracing::warn!(room = %room.name, "welcome without stored history: {e}");
        }
        Ok(Some(w))
    };
    match read.await {
        Ok(Some(w)) => {
            let history = w.history.join(",");
            let online = w.online.as_deref().unwrap_or("[]");
            let claim = claim
                .map(|c| {
                    format!(
                        r#","claim":{}"#,
                        serde_json::to_string(&c).unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            // `online` and `history` are JSON from the backbone: spliced,
            // not parsed and re-encoded.
            let json = format!(
                r#"{{"type":"welcome","room":{},"user":{},"online":{online},"online_count":{},"history":[{history}],"gap":{},"last_seq":{},"limits":{}{claim}}}"#,
                serde_json::to_string(requested.shown()).unwrap_or_default(),
                serde_json::to_string(user.as_str()).unwrap_or_default(),
                w.online_count,
                w.gap,
                w.last_seq,
                serde_json::to_string(&common.config.limits).unwrap_or_default(),
            );
            room.lock()
                .activate(key, generation, frame::text(&json), w.ev);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(room = %room.name, %user, "join failed: {e}");
            let reason = match e.code {
                ErrorCode::NameTaken => CloseReason::NAME_TAKEN,
                _ => CloseReason::UNAVAILABLE,
            };
            close_unwelcomed(&room, (key, generation), reason);
        }
    }
}
