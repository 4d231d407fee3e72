//! Embedding the hub alone: no sockets, no HTTP. Two members join a room,
//! one posts and reacts, and we print the frames each member's writer would
//! send. Run: `cargo run --example embed_hub`.

use roomcast::hub::{Emoji, Hub, HubConfig, Member, ReactionAction, RoomName, UserName};

/// Drains a member's queue and prints each frame's JSON payload.
async fn show(who: &str, member: &Member) {
    let mut batch = Vec::new();
    if member.outbox().is_empty() {
        return;
    }
    member.outbox().next_batch(&mut batch).await;
    for frame in batch {
        // Server frames: 2-byte header for payloads under 126 bytes, 4 up to 64 KiB.
        let start = match frame[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        println!("{who} <- {}", String::from_utf8_lossy(&frame[start..]));
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hub = Hub::new(HubConfig::default());
    let room = RoomName::parse("lobby")?;
    let ann = hub.join(room.clone(), UserName::parse("ann")?, None)?;
    let bob = hub.join(room, UserName::parse("bob")?, None)?;
    show("ann", &ann).await;
    show("bob", &bob).await;

    ann.post("hello, bob".into(), None, Some("c-1")).await?;
    let id = hub.history("lobby")[0].id.clone();
    bob.react(&id, Emoji::parse("👋")?, ReactionAction::Toggle)
        .await?;
    show("ann", &ann).await;
    show("bob", &bob).await;

    drop(bob); // leaving sends `leave` to the rest
    show("ann", &ann).await;
    Ok(())
}
