//! The link's third task: the heartbeat. Every third of the presence TTL
//! (or when woken) it refreshes this instance's presence entry, which also
//! removes instances whose entry expired (their members leave); after a
//! reconnect, or a presence change that was not carried out, it announces
//! this instance's members again (a resync); and it asks for a marker in
//! each room subscribed again after a reconnect (events may have been
//! missed meanwhile).
//!
//! It owns no connection: it queues scripts on the command task like any
//! caller, and gives up a beat (the next tick tries again) rather than wait
//! on a queue that is full or a link that is down.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::resp::Value;
use super::{CALL_TIMEOUT, Inner, Link, LinkRef, Script, lock, ms};

pub(super) async fn heartbeat_task(inner: Arc<Inner>) {
    let every = (inner.settings.presence_ttl / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let link = LinkRef(&inner);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = inner.wake_heartbeat.notified() => {}
        }
        if !lock(&inner.status).cmd_up {
            continue;
        }
        let ttl = ms(inner.settings.presence_ttl);
        let cap = inner.settings.online_list_cap.to_string();
        let room_ttl = ms(inner.settings.empty_room_ttl);
        let queued = link.call(
            Script::Heartbeat,
            &[
                inner.instance.as_bytes(),
                ttl.as_bytes(),
                cap.as_bytes(),
                room_ttl.as_bytes(),
            ],
        );
        // A full queue is load, not a dead link (a link that stopped
        // answering is replaced by the command task itself): the heartbeat
        // tries again at the next tick.
        let beat = match queued {
            Ok(rx) => Link::reply(rx).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.0),
        };
        match &beat {
            Ok(v) if v.as_int() == Some(1) => {
                tracing::warn!(
                    "this instance's presence had expired in Redis; announcing its members again"
                );
                inner.resync.store(true, Ordering::Release);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
        // The resync registers the instance as the heartbeat does: after a
        // failed heartbeat it waits for the next. Markers are asked for
        // either way (they only read and publish).
        if beat.is_ok() && inner.resync.swap(false, Ordering::AcqRel) {
            let mut queued = None;
            inner.inbound.local_presence(&mut |members| {
                let mut args: Vec<&[u8]> = vec![
                    inner.instance.as_bytes(),
                    ttl.as_bytes(),
                    cap.as_bytes(),
                    room_ttl.as_bytes(),
                ];
                let counts: Vec<String> =
                    members.iter().map(|m| m.connections.to_string()).collect();
                for (m, n) in members.iter().zip(&counts) {
                    args.extend([
                        m.room.as_bytes(),
                        m.user.as_bytes(),
                        n.as_bytes(),
                        m.identity.as_bytes(),
                    ]);
                }
                queued = Some(link.call(Script::Resync, &args));
            });
            let answer = match queued {
                Some(Ok(rx)) => Link::reply(rx).await.ok(),
                _ => None,
            };
            // Names another identity took while this instance was taken
            // for dead: their members here go (4009).
            // Each `[room, user, identity]`: the identity's connections go.
            for taken in answer.iter().flat_map(Value::items) {
                let [room, user, identity] = taken.items() else {
                    continue;
                };
                let (Some(room), Some(user), Some(identity)) =
                    (utf8(room), utf8(user), utf8(identity))
                else {
                    continue;
                };
                tracing::warn!(
                    "{user:?} in room {room:?} was taken by someone else while this instance \
                     was taken for dead; closing the other's connections here"
                );
                inner.inbound.name_lost(room, user, identity);
            }
            let done = answer.is_some();
            if !done {
                inner.resync.store(true, Ordering::Release);
            }
        }
        ask_for_marks(&inner).await;
    }
}

/// Asks Redis to publish a marker for every room in `marks_due`; a room
/// stays there until its request is answered (the command connection may
/// be down, or go down before it answers).
async fn ask_for_marks(inner: &Inner) {
    let mut due: Vec<String> = lock(&inner.marks_due).drain().collect();
    // A room left since needs no marker (and is not retried forever).
    due.retain(|r| lock(&inner.subs).want.contains(r));
    if due.is_empty() {
        return;
    }
    let link = LinkRef(inner);
    let mut again = Vec::new();
    let mut waiting = Vec::new();
    for room in due {
        match link.call(Script::Mark, &[room.as_bytes()]) {
            Ok(rx) => waiting.push((room, rx)),
            Err(_) => again.push(room),
        }
    }
    // One deadline for them all: the heartbeat waits here, and a link gone
    // silent must not hold it for a call timeout per room.
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    for (room, rx) in waiting {
        let answered = tokio::time::timeout_at(deadline, rx).await;
        if answered.map_or(true, |answer| Link::settle(answer).is_err()) {
            again.push(room);
        }
    }
    lock(&inner.marks_due).extend(again);
}

/// The text of a bulk or status reply, if it is UTF-8.
fn utf8(value: &Value) -> Option<&str> {
    std::str::from_utf8(value.as_bytes()?).ok()
}
