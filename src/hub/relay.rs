//! The relay: how a room follows a numbered stream of events from a
//! backbone (`backbone.rs`) and hands each local member exactly the events
//! its `welcome` did not already show.
//!
//! A member joins *pending*: it receives nothing until its welcome, read
//! from the backbone, is ready. Events that arrive meanwhile are held (with
//! their number). The welcome says which room event it reflects; the member
//! then gets the held events after that one and every later one as it
//! comes. Each member's coverage is tracked (`has`: it has every event up
//! to this number), so a skipped number, or a marker saying events were
//! published that the stream never carried, closes exactly the members who
//! missed something (1013: resume with `?after=`), and a numbering that goes
//! back (the backbone lost its data) sends everyone to a fresh welcome.
//!
//! Everything here runs under the room's lock and never awaits. Nothing
//! here knows which backbone carries the stream.

use std::sync::Arc;

use super::frame::Frame;
use super::names::UserName;
use super::outbox::{CloseReason, Outbox, Pushed};
use super::room::{RoomState, Slot};
use super::{Common, Identity};

impl RoomState {
    /// Marks a pending member as registered with the backbone (its welcome
    /// is being asked for, under this lock).
    pub fn announce(&mut self, key: usize, generation: u64) {
        if let Some(slot) = self
            .members
            .get_mut(key)
            .filter(|s| s.generation == generation)
        {
            slot.announced = true;
        }
    }

    /// This instance's registered connections per name and identity, for
    /// a backbone that re-announces them. One name has one identity here
    /// but for a name whose hold lapsed while this instance was taken for
    /// dead: another identity may have joined with it meanwhile.
    pub fn announced_online(&self) -> std::collections::BTreeMap<(&UserName, &Identity), u32> {
        let mut counts = std::collections::BTreeMap::new();
        for (_, slot) in &self.members {
            if slot.announced && slot.counted {
                *counts.entry((&slot.user, &slot.identity)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The backbone says another identity holds `user` now (this instance
    /// was taken for dead and the name was taken meanwhile): the
    /// connections `identity` has with it here are closed with 4009; the
    /// holder's stay.
    pub fn name_lost(&mut self, user: &str, identity: &str) {
        for (_, slot) in &self.members {
            if slot.user.as_str() == user && slot.identity.as_str() == identity {
                slot.outbox.close(CloseReason::NAME_TAKEN);
            }
        }
    }

    /// Connections this name has in the room on this instance.
    pub fn connections_of(&self, user: &UserName) -> u32 {
        self.online.get(user).copied().unwrap_or(0)
    }

    /// Adds a connection that receives nothing until [`RoomState::activate`],
    /// which then tells `welcomed`. Returns its key, generation and whether
    /// it is the room's first here.
    pub fn join_pending(
        &mut self,
        (user, identity): (UserName, Identity),
        outbox: Arc<Outbox>,
        welcomed: tokio::sync::oneshot::Sender<()>,
    ) -> (usize, u64, bool) {
        let generation = self.next_gen;
        self.next_gen += 1;
        self.empty_since = None;
        *self.online.entry(user.clone()).or_insert(0) += 1;
        let key = self.members.insert(Slot {
            generation,
            user,
            identity,
            outbox,
            counted: true,
            announced: false,
            holds: false,
            pending: Some(Vec::new()),
            has: 0,
            welcomed: Some(welcomed),
        });
        (key, generation, self.members.len() == 1)
    }

    /// Sends the pending member its `welcome` (which reflects every room
    /// event up to `ev`), then the events held since that came after it.
    pub fn activate(&mut self, key: usize, generation: u64, welcome: Frame, ev: u64) {
        let Some(slot) = self
            .members
            .get_mut(key)
            .filter(|s| s.generation == generation)
        else {
            return;
        };
        let held = slot.pending.take().unwrap_or_default();
        slot.has = ev;
        slot.outbox.push(welcome);
        for (e, frame) in held {
            if e <= slot.has {
                continue; // already in the welcome
            }
            if e > slot.has.saturating_add(1) {
                // The stream skipped events while this member waited.
                slot.outbox.close(CloseReason::MISSED_EVENTS);
                break;
            }
            slot.has = e;
            if let Some(frame) = frame {
                slot.outbox.push(frame);
            }
        }
        if let Some(welcomed) = slot.welcomed.take() {
            let _ = welcomed.send(());
        }
        // Every event the stream carried before this join is in the
        // welcome, and every one after it was held, so the stream cannot
        // be ahead of this member: if it is, events were lost (a marker
        // came while it waited; the members already here were closed by
        // that marker) or the room's numbering started again (the next
        // event closes everyone). This member resumes from history.
        if self.stream_ev.is_some_and(|s| s > slot.has) {
            slot.outbox.close(CloseReason::MISSED_EVENTS);
        }
    }

    /// Removes a connection without telling anyone here (the backbone
    /// announces `leave`). Returns the name and its remaining connections,
    /// and whether the room is now empty here.
    pub fn leave_quiet(&mut self, key: usize, generation: u64) -> Option<(UserName, u32, bool)> {
        let (user, left) = self.remove(key, generation)?;
        let empty = self.members.is_empty();
        if empty {
            self.stream_ev = None;
        }
        Some((user, left, empty))
    }

    /// Fans out one event from the backbone: `ev` is its number in the
    /// room (0: unnumbered, like typing), `skip` a user not to send it to.
    /// A member for whom the stream skipped a number is closed to resume.
    pub fn deliver(&mut self, ev: u64, skip: Option<&str>, frame: &Frame, common: &Common) {
        if self.members.is_empty() {
            // Still subscribed for a moment after the last member left:
            // nothing to send, and nothing to remember (the room's
            // numbering may start again before anyone joins here).
            return;
        }
        if ev != 0 {
            if self.stream_ev.is_some_and(|s| ev <= s) {
                self.start_over();
            }
            self.stream_ev = Some(ev);
        }
        let cap = common.config.outbox_frames;
        for (_, slot) in &mut self.members {
            let skipped = skip == Some(slot.user.as_str());
            match &mut slot.pending {
                Some(held) if ev != 0 => {
                    if held.len() < cap {
                        held.push((ev, (!skipped).then(|| frame.clone())));
                    } else {
                        slot.outbox.close(CloseReason::SLOW_CONSUMER);
                    }
                    continue;
                }
                Some(_) => continue, // typing before the welcome: dropped
                None if ev == 0 => {}
                None if ev <= slot.has => continue, // in its welcome
                None if ev > slot.has.saturating_add(1) => {
                    slot.outbox.close(CloseReason::MISSED_EVENTS);
                    continue;
                }
                None => slot.has = ev,
            }
            if !skipped && slot.outbox.push(frame.clone()) == Pushed::Overflowed {
                common.metrics.slow_consumers_dropped.inc();
            }
        }
    }

    /// Every room event up to `ev` has been published (the marker comes
    /// through the stream, after those events): a member with fewer missed
    /// some while the stream was cut, and resumes from history. A marker
    /// below what the stream already carried means the backbone's numbering went
    /// back: its data was lost.
    pub fn mark(&mut self, ev: u64) {
        if self.members.is_empty() {
            return;
        }
        if self.stream_ev.is_some_and(|s| ev < s) {
            self.start_over();
            return;
        }
        self.stream_ev = Some(ev);
        for (_, slot) in &self.members {
            if slot.pending.is_none() && slot.has < ev {
                slot.outbox.close(CloseReason::MISSED_EVENTS);
            }
        }
    }

    /// The backbone lost its data: the room's numbering starts again. Every
    /// member here starts over from a fresh `welcome`.
    pub fn start_over(&mut self) {
        for (_, slot) in &self.members {
            slot.outbox.close(CloseReason::MISSED_EVENTS);
        }
        self.stream_ev = None;
        self.forget_floor();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::room::Room;
    use super::super::{Hub, HubConfig, RoomName, frames};
    use super::*;

    #[test]
    fn backbone_members_get_welcome_first_then_exactly_the_later_events() {
        let hub = Hub::new(HubConfig::default());
        let common = &hub.shared.common;
        let room = Room::new(RoomName::parse("r").unwrap(), true, Duration::ZERO);
        let f = frames::text;
        let drain = |o: &Outbox| {
            let mut batch = Vec::new();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let close = rt.block_on(o.next_batch(&mut batch));
            (batch, close)
        };
        let ann = Arc::new(Outbox::new(16, 1 << 20));
        let bob = Arc::new(Outbox::new(16, 1 << 20));
        let mut st = room.lock();
        let (ann_tx, mut ann_welcomed) = tokio::sync::oneshot::channel();
        let (a, a_gen, first) = st.join_pending(user("ann"), Arc::clone(&ann), ann_tx);
        assert!(first);
        // Events before the welcome is read are held, typing is dropped.
        st.deliver(5, None, &f("e5"), common);
        st.deliver(6, None, &f("e6"), common);
        st.deliver(0, None, &f("typing"), common);
        assert!(ann.is_empty());
        assert!(ann_welcomed.try_recv().is_err(), "not welcomed yet");
        // The welcome reflects events up to 5: ann gets it, then e6 only.
        st.activate(a, a_gen, f("welcome-a"), 5);
        assert!(
            ann_welcomed.try_recv().is_ok(),
            "told once the welcome is queued"
        );
        let (tx, _) = tokio::sync::oneshot::channel();
        let (b, b_gen, _) = st.join_pending(user("bob"), Arc::clone(&bob), tx);
        st.activate(b, b_gen, f("welcome-b"), 8); // bob's welcome already has 7 and 8
        st.deliver(7, None, &f("e7"), common);
        st.deliver(8, Some("ann"), &f("e8"), common);
        st.deliver(9, None, &f("e9"), common);
        assert_eq!(
            drain(&ann),
            (vec![f("welcome-a"), f("e6"), f("e7"), f("e9")], None)
        );
        assert_eq!(drain(&bob), (vec![f("welcome-b"), f("e9")], None));
        // A skipped event number: whoever missed it resumes from history.
        st.deliver(11, None, &f("e11"), common);
        assert_eq!(drain(&ann).1, Some(CloseReason::MISSED_EVENTS));
        assert_eq!(drain(&bob).1, Some(CloseReason::MISSED_EVENTS));
    }

    /// A hub (for its config and metrics) and one room to drive by hand,
    /// as the backbone does.
    fn backbone_room(config: HubConfig) -> (Hub, Room) {
        (
            Hub::new(config),
            Room::new(RoomName::parse("r").unwrap(), true, Duration::ZERO),
        )
    }

    /// `name` and the identity of its name.
    fn user(name: &str) -> (UserName, Identity) {
        (UserName::parse(name).unwrap(), Identity::named(name))
    }

    /// A member waiting for its welcome in a backbone room.
    fn pending(st: &mut RoomState, name: &str) -> (usize, u64, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(16, 1 << 20));
        let (tx, _) = tokio::sync::oneshot::channel();
        let (key, generation, _) = st.join_pending(user(name), Arc::clone(&outbox), tx);
        (key, generation, outbox)
    }

    /// A member whose welcome reflected room events up to `ev`.
    fn welcomed(st: &mut RoomState, name: &str, ev: u64) -> (usize, u64, Arc<Outbox>) {
        let (key, generation, outbox) = pending(st, name);
        st.activate(key, generation, frames::text("welcome"), ev);
        (key, generation, outbox)
    }

    #[test]
    fn backbone_closes_exactly_the_members_who_missed_events() {
        let (hub, room) = backbone_room(HubConfig::default());
        let (common, f, mut st) = (&hub.shared.common, frames::text, room.lock());
        let (_, _, ann) = welcomed(&mut st, "ann", 10);
        // Bob's welcome was read ahead of the stream: it has 11 and 12.
        let (_, _, bob) = welcomed(&mut st, "bob", 12);
        st.deliver(11, None, &f("e11"), common);
        assert_eq!(ann.len(), 2);
        assert_eq!(bob.len(), 1, "11 is in bob's welcome");
        // The stream was cut before it carried 12: the marker tells. Ann
        // missed it; bob did not.
        st.mark(12);
        assert!(ann.is_closing());
        assert!(
            !bob.is_closing(),
            "a welcome ahead of the stream is no loss"
        );
        // Then 13 never comes through: bob missed it.
        st.deliver(14, None, &f("e14"), common);
        assert!(bob.is_closing());
        // A later welcome read ahead of the stream hides nothing from
        // the members already here (the order of two welcomes does not
        // matter either: each member is checked against its own).
        let (c, c_gen, carl) = pending(&mut st, "carl");
        let (_, _, dan) = welcomed(&mut st, "dan", 20);
        st.activate(c, c_gen, f("welcome-c"), 18);
        st.mark(20); // 15..20 were published, the stream carried none
        assert!(carl.is_closing(), "carl missed 19 and 20");
        assert!(!dan.is_closing());
    }

    #[test]
    fn backbone_a_marker_while_a_member_waits_is_checked_at_its_welcome() {
        let (hub, room) = backbone_room(HubConfig::default());
        let (common, f, mut st) = (&hub.shared.common, frames::text, room.lock());
        let (_, _, ann) = welcomed(&mut st, "ann", 5);
        st.deliver(6, None, &f("e6"), common);
        // Bob waits for a welcome that will say 6; meanwhile the stream is
        // cut and comes back with a marker: 7 and 8 were published.
        let (b, b_gen, bob) = pending(&mut st, "bob");
        st.mark(8);
        assert!(ann.is_closing());
        assert!(!bob.is_closing(), "bob's welcome is not read yet");
        st.activate(b, b_gen, f("welcome-b"), 6);
        assert!(bob.is_closing(), "bob would never get 7 and 8");
    }

    #[test]
    fn backbone_a_member_whose_wait_overflowed_closes_alone() {
        let (hub, room) = backbone_room(HubConfig {
            outbox_frames: 2,
            ..HubConfig::default()
        });
        let (common, f, mut st) = (&hub.shared.common, frames::text, room.lock());
        let (_, _, ann) = welcomed(&mut st, "ann", 0);
        let (b, b_gen, bob) = pending(&mut st, "bob");
        for ev in 1..=3 {
            st.deliver(ev, None, &f("e"), common);
        }
        assert!(bob.is_closing(), "held more than its queue holds");
        st.activate(b, b_gen, f("welcome-b"), 0);
        assert!(!ann.is_closing(), "nobody else missed anything");
    }

    #[test]
    fn backbone_a_room_rejoined_here_starts_from_its_welcome() {
        let (hub, room) = backbone_room(HubConfig::default());
        let (common, f, mut st) = (&hub.shared.common, frames::text, room.lock());
        let (a, a_gen, _) = welcomed(&mut st, "ann", 40);
        st.deliver(41, None, &f("e41"), common);
        st.leave_quiet(a, a_gen);
        // A leave the stream carries after the room emptied here is not
        // remembered: the room's keys may expire and its numbering start
        // again before the next member joins here.
        st.deliver(42, None, &f("leave"), common);
        let (b, b_gen, bob) = welcomed(&mut st, "bob", 1);
        st.deliver(2, None, &f("e2"), common);
        assert!(!bob.is_closing(), "a new numbering");
        st.leave_quiet(b, b_gen);
        // Rejoined while the stream still carries the old subscription's
        // last event, and events published between the unsubscribe and the
        // subscribe never come: the welcome has them.
        let (c, c_gen, carl) = pending(&mut st, "carl");
        st.deliver(51, None, &f("e51"), common);
        st.activate(c, c_gen, f("welcome-c"), 57);
        st.deliver(56, None, &f("e56"), common);
        st.deliver(57, None, &f("e57"), common);
        st.deliver(58, None, &f("e58"), common);
        assert!(!carl.is_closing());
        assert_eq!(carl.len(), 2, "the welcome, then e58");
    }

    #[test]
    fn backbone_a_numbering_that_goes_back_sends_everyone_to_a_fresh_welcome() {
        let (hub, room) = backbone_room(HubConfig::default());
        let (common, f, mut st) = (&hub.shared.common, frames::text, room.lock());
        // A marker below what the stream carried.
        let (a, a_gen, ann) = welcomed(&mut st, "ann", 20);
        st.deliver(21, None, &f("e21"), common);
        st.mark(19);
        assert!(ann.is_closing());
        st.leave_quiet(a, a_gen);
        // An event numbered from 1 again.
        let (b, b_gen, bob) = welcomed(&mut st, "bob", 30);
        st.deliver(31, None, &f("e31"), common);
        assert!(!bob.is_closing());
        st.deliver(1, None, &f("e1"), common);
        assert!(bob.is_closing());
        st.leave_quiet(b, b_gen);
        // The epoch told of lost data.
        let (_, _, carl) = welcomed(&mut st, "carl", 5);
        st.start_over();
        assert!(carl.is_closing());
    }

    #[test]
    fn a_re_announcement_counts_only_members_registered_with_the_backbone() {
        let (_hub, room) = backbone_room(HubConfig::default());
        let mut st = room.lock();
        let (a, a_gen, _) = pending(&mut st, "ann");
        // Ann waits for her welcome but was not registered yet: a resync
        // now must not announce her (her own registration would then carry
        // no `join`, and she would never see it).
        assert!(st.announced_online().is_empty());
        assert_eq!(st.connections_of(&UserName::parse("ann").unwrap()), 1);
        st.announce(a, a_gen);
        let counts: Vec<(String, String, u32)> = st
            .announced_online()
            .into_iter()
            .map(|((u, who), n)| (u.to_string(), who.as_str().to_owned(), n))
            .collect();
        let ann = Identity::named("ann").as_str().to_owned();
        assert_eq!(counts, vec![("ann".to_owned(), ann, 1)]);
    }

    /// A name two identities hold here (the first's hold lapsed while this
    /// instance was taken for dead, and the second joined with it): each is
    /// re-announced on its own, and losing the name closes only the
    /// connections of the identity that lost it.
    #[test]
    fn a_name_lost_closes_only_the_identity_that_lost_it() {
        let (_hub, room) = backbone_room(HubConfig::default());
        let mut st = room.lock();
        let (stale, holder) = (Identity::named("ann"), Identity::named("a stranger"));
        let mut join = |identity: &Identity| {
            let outbox = Arc::new(Outbox::new(16, 1 << 20));
            let (tx, _) = tokio::sync::oneshot::channel();
            let name = UserName::parse("ann").unwrap();
            let (key, generation, _) =
                st.join_pending((name, identity.clone()), Arc::clone(&outbox), tx);
            st.announce(key, generation);
            outbox
        };
        let (stale_box, holder_box) = (join(&stale), join(&holder));
        let announced: Vec<(String, u32)> = st
            .announced_online()
            .into_iter()
            .map(|((_, who), n)| (who.as_str().to_owned(), n))
            .collect();
        assert_eq!(announced.len(), 2, "{announced:?}");
        st.name_lost("ann", stale.as_str());
        assert!(stale_box.is_closing());
        assert!(!holder_box.is_closing(), "the holder's connection stays");
    }
}
