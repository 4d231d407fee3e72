//! The hub's unit tests: rooms, joins, the memory budget, the ring and
//! its retries, late previews, held names, numbering after a room left
//! memory, and the hub over a store held by hand.

use super::*;

fn drain(m: &Member) -> Vec<serde_json::Value> {
    let mut batch = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    if m.outbox().is_empty() {
        return Vec::new();
    }
    rt.block_on(m.outbox().next_batch(&mut batch));
    batch
        .iter()
        .map(|f| {
            let start = if f[1] & 0x7f == 126 {
                4
            } else if f[1] & 0x7f == 127 {
                10
            } else {
                2
            };
            serde_json::from_slice(&f[start..]).unwrap()
        })
        .collect()
}

fn names(room: &str, user: &str) -> (RoomName, UserName) {
    (
        RoomName::parse(room).unwrap(),
        UserName::parse(user).unwrap(),
    )
}

/// A message as the store would answer it.
fn stored(seq: u64) -> StoredMessage {
    StoredMessage {
        id: format!("s{seq}").as_str().into(),
        seq,
        user: UserName::parse("ann").unwrap(),
        identity: Identity::named("ann"),
        content: format!("m{seq}"),
        timestamp: "2026-12-07T10:00:00.000Z".into(),
        reactions: Reactions::default(),
        attachment: None,
        edited_at: None,
        client_id: None,
    }
}

/// Posts at once (nothing to wait for without a store): its seq.
fn post_now(m: &Member, content: &str, attachment: Option<Attachment>) -> u64 {
    let posted = m.post(content.into(), attachment, None);
    futures_util::FutureExt::now_or_never(posted)
        .unwrap()
        .unwrap()
        .unwrap()
}

/// An image to attach, and the preview made of it later.
fn image_and_preview() -> (Attachment, AttachmentPreview) {
    let image = Attachment {
        url: "/uploads/a.png".into(),
        name: "a.png".into(),
        size: 10,
        content_type: "image/png".into(),
        preview: None,
    };
    let preview = AttachmentPreview {
        url: "/uploads/a.png.preview.jpg".into(),
        width: 320,
        height: 200,
    };
    (image, preview)
}

#[test]
fn the_older_of_two_posts_with_one_key_leaving_keeps_the_newer_as_the_answer() {
    let ann = Identity::named("ann");
    // A retry that came after the first post left the ring posted
    // again; a room loaded from the store holds both.
    let with_key = |seq| StoredMessage {
        client_id: Some("c1".into()),
        ..stored(seq)
    };
    let (first, again) = (with_key(1), with_key(7));
    let mut retries = retries::Retries::of([&first, &again].into_iter());
    assert_eq!(retries.seq_of(&ann, "c1"), Some(7));
    retries.left_ring(&first);
    assert_eq!(retries.seq_of(&ann, "c1"), Some(7), "the newer is kept");
    retries.left_ring(&again);
    assert_eq!(retries.seq_of(&ann, "c1"), None);
}

/// Runs the runtime's tasks until `until` holds.
fn run_until(rt: &tokio::runtime::Runtime, until: impl Fn() -> bool) {
    rt.block_on(async {
        while !until() {
            tokio::task::yield_now().await;
        }
    });
}

/// A runtime for the tests that drive the hub's tasks by hand.
fn by_hand() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A hub (`config`) whose store answers what `held` holds only when
/// the test chooses, and the store and its writer's thread (which
/// answers how many changes it took). Call it inside the runtime.
fn on_held_store(
    config: HubConfig,
    held: store::Held,
) -> (Hub, Store, std::thread::JoinHandle<usize>) {
    let (store, inbox) = store_channel(1024);
    let writer = store::stalled_writer(inbox, held);
    let hub = Hub::from_parts(HubParts {
        config,
        metrics: Arc::new(Metrics::default()),
        store: Some(store.clone()),
    });
    (hub, store, writer)
}

#[test]
fn a_room_stays_in_the_hub_while_its_history_is_read_and_leaves_with_all_it_weighed() {
    let rt = by_hand();
    let _in_runtime = rt.enter();
    // Each load is answered when the test chooses.
    let (loads_tx, loads) = std::sync::mpsc::channel();
    let held = store::Held {
        loads: Some(loads_tx),
        ..store::Held::default()
    };
    let config = HubConfig {
        empty_room_ttl: Duration::ZERO,
        max_rooms: 1,
        name_hold_grace: Duration::ZERO,
        ..HubConfig::default()
    };
    let (hub, store, writer) = on_held_store(config, held);
    let (slow, ann) = names("slow", "ann");
    let ann = hub.join(slow, ann, None).unwrap();
    let room = hub.rooms().get("slow").cloned().unwrap();
    let load = rt.block_on(async {
        loop {
            if let Ok(load) = loads.try_recv() {
                return load;
            }
            tokio::task::yield_now().await;
        }
    });
    // Its only member leaves before its welcome: the room is empty,
    // and is neither swept nor evicted for another room.
    drop(ann);
    assert_eq!(hub.sweep(), 0, "its load is still awaited");
    let (other, bob) = names("other", "bob");
    assert!(matches!(
        hub.join(other, bob, None),
        Err(JoinError::RoomsFull(_))
    ));
    let _ = load.send(Ok(Snapshot {
        tail: (1..=3).map(stored).collect(),
        last_seq: 3,
        reserved: 3 + RESERVE_BLOCK,
        older: false,
    }));
    // The welcome's task ends (it held the room twice).
    run_until(&rt, || Arc::strong_count(&room) == 2);
    assert!(hub.history_bytes() > 0, "the load was installed");
    // Now it goes, and so does all it weighed, its seqs settled.
    assert_eq!(hub.sweep(), 1);
    assert_eq!(hub.history_bytes(), 0);

    drop((room, hub));
    rt.block_on(store.stop());
    assert_eq!(writer.join().unwrap(), 1, "the room's settle");
}

#[test]
fn a_resume_read_from_the_store_while_posts_push_the_ring_on_reports_the_hole_as_a_gap() {
    let rt = by_hand();
    let _in_runtime = rt.enter();
    // Each page read is answered when the test chooses.
    let (pages_tx, pages) = std::sync::mpsc::channel();
    let held = store::Held {
        pages: Some(pages_tx),
        ..store::Held::default()
    };
    let config = HubConfig {
        history: 5,
        ..HubConfig::default()
    };
    let (hub, store, writer) = on_held_store(config, held);
    let (room, ann) = names("holes", "ann");
    let mut ann = hub.join(room.clone(), ann, None).unwrap();
    rt.block_on(ann.welcomed());
    let post = |n: u64| ann.post_now(format!("m{n}"), None).unwrap().unwrap();
    for n in 1..=10 {
        post(n);
    }
    // The ring holds 6..=10: a resume after 2 reads 3..=5 from the store.
    let (_, bob) = names("holes", "bob");
    let mut bob = hub.join(room, bob, Some(2)).unwrap();
    let (query, reply) = rt.block_on(async {
        loop {
            if let Ok(page) = pages.try_recv() {
                return page;
            }
            tokio::task::yield_now().await;
        }
    });
    assert_eq!((query.after, query.before), (2, Some(6)));
    // Meanwhile 6..=8 leave the ring.
    for n in 11..=13 {
        post(n);
    }
    let _ = reply.send(Ok(((3..=5).map(stored).collect(), false)));
    rt.block_on(bob.welcomed());
    let welcome = drain(&bob).remove(0);
    let seqs: Vec<u64> = welcome["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5, 9, 10, 11, 12, 13]);
    assert_eq!(
        welcome["gap"], true,
        "6..=8 are missing: the client must page"
    );

    drop((ann, bob, hub));
    rt.block_on(store.stop());
    writer.join().unwrap();
}

#[test]
fn a_deleted_posts_retry_key_is_kept_only_while_the_ring_would_hold_it() {
    let hub = Hub::new(HubConfig {
        history: 4,
        ..HubConfig::default()
    });
    let (r, ann) = names("r", "ann");
    let ann = hub.join(r, ann, None).unwrap();
    fn now<F: std::future::Future>(f: F) -> F::Output {
        futures_util::FutureExt::now_or_never(f).expect("answered at once")
    }
    let kept = || hub.rooms().get("r").unwrap().lock().retries_kept();
    // Posted with client ids, then deleted, in no particular order.
    for k in 0..4 {
        now(ann.post(format!("m{k}"), None, Some(&format!("c{k}")))).unwrap();
    }
    let ids: Vec<String> = hub.history("r").iter().map(|m| m.id.to_string()).collect();
    for i in [2, 0, 3, 1] {
        now(ann.delete(&ids[i])).unwrap();
    }
    assert_eq!(kept(), (4, 4), "a retry of any of them is refused");
    let again = now(ann.post("m0".into(), None, Some("c0")));
    assert_eq!(again.unwrap_err().code, ErrorCode::UnknownMessage);
    // Four more posts (no client id): the deleted ones are no longer
    // among the last four seqs, and their keys go in the order of the
    // deletes (seqs 3, 1, 4, 2): after three posts, 3 and 1 have gone,
    // 4 has not, and 2 waits behind it.
    for k in 0..3 {
        now(ann.post(format!("n{k}"), None, None)).unwrap();
    }
    assert_eq!(kept(), (2, 2));
    now(ann.post("n3".into(), None, None)).unwrap();
    assert_eq!(kept(), (0, 0));
    assert!(
        now(ann.post("m0".into(), None, Some("c0"))).is_ok(),
        "posted anew"
    );
}

#[test]
fn a_later_preview_updates_the_message_once_and_reaches_the_room() {
    let hub = Hub::new(HubConfig::default());
    let (r, ann) = names("r", "ann");
    let (_, bob) = names("r", "bob");
    let ann = hub.join(r.clone(), ann, None).unwrap();
    let bob = hub.join(r.clone(), bob, None).unwrap();
    let (image, preview) = image_and_preview();
    let seq = post_now(&ann, "", Some(image));
    drain(&ann);
    drain(&bob);
    let later = ann.later_preview(seq);
    drop(ann);
    assert!(
        !later.set("/uploads/other.png", preview.clone()),
        "not its upload"
    );
    assert!(later.set("/uploads/a.png", preview.clone()));
    assert!(!later.set("/uploads/a.png", preview.clone()), "once");
    let events = drain(&bob);
    let updated = events
        .iter()
        .find(|e| e["type"] == "message_updated")
        .expect("message_updated");
    assert_eq!(updated["seq"], seq);
    assert_eq!(updated["attachment"]["preview"]["url"], preview.url);
    assert_eq!(updated["attachment"]["preview"]["width"], 320);
    assert!(updated.get("edited_at").is_none(), "not an edit");
    let stored = hub.history("r");
    let kept = stored[0].attachment.as_ref().unwrap();
    assert_eq!(kept.preview.as_ref(), Some(&preview));
}

#[test]
fn a_later_preview_for_a_room_gone_from_memory_changes_nothing() {
    let hub = Hub::new(HubConfig {
        empty_room_ttl: Duration::ZERO,
        name_hold_grace: Duration::ZERO,
        ..HubConfig::default()
    });
    let (r, ann) = names("r", "ann");
    let ann = hub.join(r, ann, None).unwrap();
    let (image, preview) = image_and_preview();
    let seq = post_now(&ann, "", Some(image));
    let later = ann.later_preview(seq);
    drop(ann);
    assert_eq!(hub.sweep(), 1);
    assert_eq!(hub.history_bytes(), 0, "the room left with all it weighed");
    // The room's message left memory with it: nothing to update, and
    // nothing counted again into the hub's total for good.
    assert!(!later.set("/uploads/a.png", preview));
    assert_eq!(hub.history_bytes(), 0);
}

#[test]
fn a_room_made_again_in_memory_numbers_on_and_a_resume_from_before_sees_what_it_missed() {
    let hub = Hub::new(HubConfig {
        empty_room_ttl: Duration::ZERO,
        name_hold_grace: Duration::ZERO,
        ..HubConfig::default()
    });
    let (r, ann) = names("r", "ann");
    let (_, bob) = names("r", "bob");
    let first = hub.join(r.clone(), ann.clone(), None).unwrap();
    for text in ["1", "2", "3"] {
        post_now(&first, text, None);
    }
    drop(first);
    assert_eq!(hub.sweep(), 1, "the room left memory with its history");
    let bob = hub.join(r.clone(), bob, None).unwrap();
    let seqs: Vec<u64> = ["4", "5"].iter().map(|t| post_now(&bob, t, None)).collect();
    assert_eq!(seqs, [4, 5], "numbered on, not from 1 again");
    // Ann had everything up to 3: she is given 4 and 5, no gap.
    let ann_back = hub.join(r.clone(), ann.clone(), Some(3)).unwrap();
    let welcome = drain(&ann_back).remove(0);
    let got: Vec<u64> = welcome["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        (got, &welcome["gap"]),
        (vec![4, 5], &serde_json::Value::Bool(false))
    );
    // Someone who had only 1 is told 2 and 3 are gone.
    let (_, cy) = names("r", "cy");
    let behind = hub.join(r, cy, Some(1)).unwrap();
    assert_eq!(drain(&behind).remove(0)["gap"], true);
}

#[test]
fn ring_keeps_the_last_n_and_resume_reports_a_gap() {
    let hub = Hub::new(HubConfig {
        history: 3,
        ..HubConfig::default()
    });
    let (r, u) = names("r", "ann");
    let ann = hub.join(r.clone(), u.clone(), None).unwrap();
    for i in 0..5 {
        let posted = futures_util::FutureExt::now_or_never(ann.post(format!("m{i}"), None, None));
        assert_eq!(posted, Some(Ok(Some(i + 1))), "one instance posts at once");
    }
    let kept: Vec<u64> = hub.history("r").iter().map(|m| m.seq).collect();
    assert_eq!(kept, vec![3, 4, 5]);

    let late = hub.join(r.clone(), u.clone(), Some(1)).unwrap();
    let welcome = &drain(&late)[0];
    assert_eq!(welcome["gap"], true);
    assert_eq!(welcome["history"].as_array().unwrap().len(), 3);

    let fresh = hub.join(r, u, Some(4)).unwrap();
    let welcome = &drain(&fresh)[0];
    assert_eq!(welcome["gap"], false);
    assert_eq!(welcome["history"][0]["seq"], 5);
}

#[test]
fn stale_slab_key_cannot_remove_the_successor() {
    let hub = Hub::new(HubConfig::default());
    let (r, _) = names("r", "x");
    let a = hub
        .join(r.clone(), UserName::parse("a").unwrap(), None)
        .unwrap();
    let (key, old_generation) = (a.key, a.generation);
    drop(a);
    let b = hub.join(r, UserName::parse("b").unwrap(), None).unwrap();
    assert_eq!(b.key, key, "slab reuses the key");
    b.room.lock().leave(key, old_generation, &b.common);
    assert_eq!(
        b.room.lock().members.len(),
        1,
        "the stale leave changed nothing"
    );
}

#[test]
fn a_name_held_in_an_empty_room_keeps_the_room_until_the_hold_lapses() {
    let hub = Hub::new(HubConfig {
        empty_room_ttl: Duration::ZERO,
        max_rooms: 1,
        ..HubConfig::default()
    });
    let as_who = |room: &str, user: &str, who: &str| {
        let (room, user) = names(room, user);
        hub.join_with(Joining {
            room,
            user,
            identity: Identity::from_key(who),
            moderator: false,
            after: None,
            claim: None,
        })
    };
    let alice = as_who("a", "alice", "alice's key").unwrap();
    drop(alice);
    assert!(matches!(
        as_who("a", "alice", "mallory's key"),
        Err(JoinError::NameTaken(_))
    ));
    // The room holding her name is neither taken out for another room
    // nor swept: her hold would go with it, and the name be free.
    assert!(matches!(
        as_who("b", "bob", "bob's key"),
        Err(JoinError::RoomsFull(_))
    ));
    assert_eq!(hub.sweep(), 0);
    assert!(matches!(
        as_who("a", "alice", "mallory's key"),
        Err(JoinError::NameTaken(_))
    ));
    assert!(as_who("a", "alice", "alice's key").is_ok(), "hers again");
}

#[test]
fn empty_rooms_are_swept_and_the_room_limit_evicts_empty_ones() {
    let hub = Hub::new(HubConfig {
        empty_room_ttl: Duration::ZERO,
        max_rooms: 1,
        name_hold_grace: Duration::ZERO,
        ..HubConfig::default()
    });
    let (r1, u) = names("one", "u");
    let m = hub.join(r1, u.clone(), None).unwrap();
    let (r2, _) = names("two", "u");
    assert!(
        hub.join(r2.clone(), u.clone(), None).is_err(),
        "room one has a member"
    );
    drop(m);
    let _m2 = hub.join(r2, u, None).unwrap();
    assert_eq!(hub.room_count(), 1);
    assert_eq!(hub.sweep(), 0, "room two has a member");
}
