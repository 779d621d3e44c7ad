//! The Agent Hub, seen from the server: its JSON (`wire`), the reqwest implementation of the
//! core `AgentHub` trait (`HttpAgentHub`), and, with the `stand-in-hub` feature, a stand-in hub
//! for local runs and tests.

mod client;
#[cfg(feature = "stand-in-hub")]
pub mod stand_in;
pub mod wire;

pub use client::{AGENT_ID, HttpAgentHub};
