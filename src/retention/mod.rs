//! Retention: tags, legal holds, restriction, erasure, and the sweeper.
//!
//! * [`policy`] — the sans-IO decision: created time, tags and holds (with their times) and the
//!   configured rules in; expiry and the deciding rule out. No clock inside.
//! * [`service`] — plain async functions over a [`Store`](crate::store::Store) and an
//!   [`Actor`](crate::audit::Actor), used by the CLI and (later) the portal's REST API. Each
//!   change takes the audit chain lock, re-reads what it depends on, recomputes the stored
//!   expiry, appends its audit entries and commits them together.
//! * [`sweeper`] — deletes expired recordings: crypto-shred (the wrapped key row) first, then
//!   the file, then a tombstone. One pass ([`sweeper::sweep_once`], `callgate sweep`) or a loop
//!   for `serve` ([`sweeper::run_sweeper`]) that sleeps until the next expiry.
//!
//! Clocks: every function takes `now_ms` (Unix milliseconds) from its caller. The CLI takes the
//! wall clock, except that `callgate sweep` (and `retention show`) honour `CALLGATE_NOW_MS`,
//! a testing hook that moves the policy clock only (audit, tag and hold times stay real).
//! See `docs/retention.md`.

pub mod policy;
pub mod service;
pub mod sweeper;

use crate::audit::Role;
use crate::ids::RecordingId;
use crate::recording::storage::StorageError;
use crate::store::StoreError;

/// Errors of retention operations. `Display` is the one-line message a user sees.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("role {role} may not {what}")]
    Forbidden { role: Role, what: &'static str },
    #[error("no recording {0}")]
    UnknownRecording(RecordingId),
    #[error("unknown tag `{tag}` (allowed: {allowed})")]
    UnknownTag { tag: String, allowed: String },
    #[error("recording {recording_id} has no tag `{tag}`")]
    NotTagged {
        recording_id: RecordingId,
        tag: String,
    },
    #[error("recording {0} has been deleted")]
    Deleted(RecordingId),
    #[error("recording {recording_id} is under legal hold {case_ref}; refused")]
    Held {
        recording_id: RecordingId,
        case_ref: String,
    },
    #[error("legal hold {0} does not exist")]
    UnknownHold(String),
    #[error("legal hold {0} was released; holds are not reopened (use a new case reference)")]
    HoldReleased(String),
    #[error("legal hold {case_ref}: {problem}")]
    BadHold { case_ref: String, problem: String },
    #[error(
        "recording {0} is restricted (processing restricted on request); only the dpo role may play or export it"
    )]
    Restricted(RecordingId),
    #[error("recording {0} is not restricted")]
    NotRestricted(RecordingId),
    #[error("{field}: {problem}")]
    BadText {
        field: &'static str,
        problem: &'static str,
    },
}
