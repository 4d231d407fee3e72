//! Embedding the whole server in another program: bind your own listener,
//! pick a Config, decide when to stop. Run:
//! `cargo run --example embed_server` and open the printed address.

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let config = roomcast::Config::default()
        .uploads_dir(std::env::temp_dir().join("roomcast-embed-uploads"))
        .history(200usize)
        .shutdown_grace(Duration::from_secs(2));
    // Stop after a minute, or on Enter: any future will do.
    let stop = async {
        let stdin = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        });
        tokio::select! {
            _ = stdin => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    };
    roomcast::serve(listener, config, stop).await?;
    Ok(())
}
