//! Integration tests of the HTTP API: the real server in-process on port 0, each test with
//! its own SQLite file, driven through the typed client (and raw HTTP for malformed input).

mod binary;
mod board;
mod browser;
mod cli;
mod consultations;
mod contract;
mod deadlines;
mod docs;
mod durability;
mod events;
mod faults;
mod helpers;
mod idempotency;
mod load;
mod postgres;
mod principals;
mod raw;
mod replicas;
mod slow_asks;
mod webhooks;
mod workflows;
