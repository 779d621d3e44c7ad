//! One async function per endpoint. Each decodes its input into core types, calls the
//! orchestrator, and encodes the answer; none holds a rule or a query.

pub mod consultations;
pub mod docs;
pub mod system;
pub mod webhooks;
pub mod workflows;
