//! Typed client for the orchestrator's HTTP API (built in the next issue).
