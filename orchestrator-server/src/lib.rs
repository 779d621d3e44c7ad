//! The orchestrator's HTTP service (built in the next issue).
