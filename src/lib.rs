//! callgate: a SIP call-recording and consent gateway.
//!
//! A B2BUA between the trunk and the agents. Protocol and policy cores (call state machine,
//! recording framing, reorder buffer, announcement pacing) are sans-IO: plain structs fed
//! `(now, input)` that return actions; thin tokio shells do the IO. See `docs/architecture.md`.
// `unsafe` only in `sys` (recvmmsg, syncfs), which allows it for itself.
#![deny(unsafe_code)]

pub mod audit;
pub mod call;
pub mod cli;
pub mod config;
pub mod export;
pub mod ids;
pub mod media;
pub mod pci;
pub mod pii;
pub mod portal;
pub mod recording;
pub mod retention;
pub mod serve;
pub mod sip;
pub mod store;
pub mod sys;
pub mod time;
