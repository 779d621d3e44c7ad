#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `storage`: diesel storage, SQLite and PostgreSQL, with migrations; the only module that
//!   imports diesel. It is all there is without the `http` feature (on by default): a service
//!   that embeds the core gets the durable repositories alone.
//! - `config`: settings from flags and environment.
//! - `http`: the hyper API: `serve`, the route table, handlers, the error mapping.
//! - `hub`: the Agent Hub's JSON, its reqwest client, and (feature `stand-in-hub`) a stand-in.
//! - `principals`: principals mode's file of hashed tokens (read, re-read, minted into).
//! - `metrics`, `telemetry`: Prometheus metrics and the tracing subscriber.
//! - `dns` (private): the bounded name lookups of the webhooks' and the hub's HTTP clients.
#![warn(clippy::unwrap_used)]

#[cfg(feature = "http")]
pub mod config;
#[cfg(feature = "http")]
mod dns;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod hub;
#[cfg(feature = "http")]
pub mod metrics;
#[cfg(feature = "http")]
pub mod principals;
pub mod storage;
#[cfg(feature = "http")]
pub mod telemetry;

#[cfg(feature = "http")]
mod service;

#[cfg(feature = "http")]
pub use config::{Config, LogFormat};
#[cfg(feature = "http")]
pub use dns::NAME_LOOKUPS_AT_ONCE;
#[cfg(feature = "http")]
pub use http::{App, serve};
#[cfg(feature = "http")]
pub use service::{StartupError, bind, build_app, claim_database};

/// The service's version, reported by `/health` and `/`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The causes of `error`, each after `: ` (one that repeats the one before it left out): what
/// a driver's own words ("error connecting to server") leave to its causes ("Connection
/// refused").
pub(crate) fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut last = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !last.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        last = said;
        cause = next.source();
    }
    text
}

/// The message a panic was raised with (a `&str` or a `String`), for the log.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The workspace README's examples, compiled and run as doctests (here, where both the core
/// and the storage are in reach).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct WorkspaceReadme;
