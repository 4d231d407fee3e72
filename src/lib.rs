//! roomcast: a real-time chat server.
//!
//! Rooms over WebSocket at `/ws/{room}/{username}`, uploads, and a browser
//! UI, on hand-routed hyper and tokio-tungstenite. The [`hub`] keeps each
//! room's members in a slab and serializes every broadcast once into a
//! shared WebSocket frame.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! let config = roomcast::Config::default().history(1000usize);
//! roomcast::serve(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod app;
pub mod auth;
pub mod config;
pub mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod media;
pub mod metrics;
#[cfg(feature = "redis")]
mod redis;
mod router;
mod runtime;
mod server;
pub mod store;
pub mod ws;

pub use config::{Config, RedisUrl};
pub use error::ServeError;
pub use hub::Hub;
pub use server::{serve, serve_when_ready};
