//! The shared PostgreSQL at 127.0.0.1:5432 (trust auth, database `test`):
//! a schema per test, dropped when its guard goes, and a server
//! configuration that stores history there.

use roomcast::store::StoreKind;

use super::{Server, config, unique};

pub const SHARED: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs `sql` on the shared server (setup and cleanup only), on a thread
/// of its own (the caller may be inside a runtime).
pub fn admin(sql: &str) {
    let sql = sql.to_owned();
    std::thread::spawn(move || admin_here(&sql))
        .join()
        .expect("the admin statement failed");
}

fn admin_here(sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(SHARED, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is not reachable at {SHARED} ({e}); these tests need it")
            });
        tokio::spawn(conn);
        client.batch_execute(sql).await.expect(sql);
    });
}

/// A schema of the test's own in the shared database, dropped at the end.
pub struct Schema(pub String);

impl Schema {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        admin(&format!("CREATE SCHEMA {name}"));
        Self(name)
    }

    pub fn url(&self) -> String {
        format!("{SHARED}?options=-csearch_path%3D{}", self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ =
            std::thread::spawn(move || admin_here(&format!("DROP SCHEMA {name} CASCADE"))).join();
    }
}

pub fn on(url: &str) -> roomcast::Config {
    config()
        .store(StoreKind::Postgres(url.to_owned()))
        .rate(0u32)
}

/// The contents of the messages of the history page at `path`, oldest
/// first.
pub async fn contents(server: &Server, path: &str) -> Vec<String> {
    let page = server.get(path).await.json();
    page["messages"]
        .as_array()
        .expect("a page of messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content").to_owned())
        .collect()
}
