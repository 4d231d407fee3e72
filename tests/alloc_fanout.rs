//! Serialize once, share the bytes: delivering one broadcast to 1000 members
//! allocates no more than delivering it to 10. A counting global allocator
//! (per thread, so tests running in parallel cannot disturb each other)
//! counts every allocation from `post` until every member's queue has been
//! drained the way its writer drains it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use futures_util::FutureExt;
use roomcast::hub::{Frame, Hub, HubConfig, Member, RoomName, UserName, frames};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialized thread-local that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CONTENT: &str = "hello everyone, the build is green again; merging in five minutes";

/// Takes everything queued for `member`, as its writer would.
fn drain(member: &Member, batch: &mut Vec<Frame>) {
    if !member.outbox().is_empty() {
        member.outbox().next_batch(batch).now_or_never();
        batch.clear();
    }
}

/// Posts on a single-instance hub, where `post` finishes without waiting.
fn post(member: &Member, content: String) {
    member
        .post(content, None, None)
        .now_or_never()
        .expect("a hub without a backbone posts at once")
        .expect("the post is accepted");
}

/// A room of `n` members (100 names at most, several connections each),
/// warmed up so every queue and the history ring have their working size.
fn warm_room(n: usize) -> (Hub, Vec<Member>, Vec<Frame>) {
    let hub = Hub::new(HubConfig {
        history: 4,
        ..HubConfig::default()
    });
    let room = RoomName::parse("alloc").unwrap();
    let members: Vec<Member> = (0..n)
        .map(|i| {
            let user = UserName::parse(&format!("u{}", i % 100)).unwrap();
            hub.join(room.clone(), user, None).unwrap()
        })
        .collect();
    let mut batch = Vec::with_capacity(64);
    for _ in 0..8 {
        post(&members[0], CONTENT.to_owned());
        members.iter().for_each(|m| drain(m, &mut batch));
    }
    (hub, members, batch)
}

/// Allocations made while one message is posted and delivered to every
/// member's writer.
fn allocations_for_one_broadcast(n: usize) -> u64 {
    let (_hub, members, mut batch) = warm_room(n);
    let content = CONTENT.to_owned();
    let before = allocations();
    post(&members[0], content);
    members.iter().for_each(|m| drain(m, &mut batch));
    allocations() - before
}

#[test]
fn one_broadcast_allocates_no_more_for_1000_members_than_for_10() {
    let ten = allocations_for_one_broadcast(10);
    let thousand = allocations_for_one_broadcast(1000);
    eprintln!("allocations for one broadcast: {ten} (10 members), {thousand} (1000 members)");
    assert!(
        thousand <= ten,
        "1000 members: {thousand} allocations, 10 members: {ten}; something allocates per member"
    );
    // The message and the frame's shared handle (the frame's buffer is the
    // one the last frame gave back to the thread's pool; the id, the
    // timestamp and the name allocate nothing): two, whatever the room
    // size, and one more the first time a thread writes a timestamp in a
    // new minute.
    assert!(ten <= 3, "{ten} allocations for one broadcast");
}

#[test]
fn the_counter_sees_per_member_allocations() {
    // The naive way (a frame built per recipient) must show up as at least
    // one allocation per member, or the test above would prove nothing.
    let (_hub, members, mut batch) = warm_room(1000);
    let before = allocations();
    for m in &members {
        m.send(frames::text(CONTENT));
    }
    members.iter().for_each(|m| drain(m, &mut batch));
    assert!(allocations() - before >= 1000);
}
