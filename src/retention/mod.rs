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
use crate::ids::{CallId, RecordingId};
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
    #[error("no call {0}")]
    UnknownCall(CallId),
    #[error("call {0} has already been erased (its numbers are redacted)")]
    CallErased(CallId),
    #[error(
        "call {call_id} has recording {recording_id}: erase the recording, which redacts the call"
    )]
    CallHasRecording {
        call_id: CallId,
        recording_id: RecordingId,
    },
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
    /// The customer declined training use at the consent prompt: the recording may never be
    /// tagged `training` ([`service::TRAINING_TAG`]).
    #[error(
        "recording {recording_id} (call {call_id}): the customer did not consent to training use ({}); the training tag cannot be added",
        consent_summary(.prompt_sha256.as_deref(), .choice_source.as_deref(), *.at_ms)
    )]
    TrainingDeclined {
        recording_id: RecordingId,
        call_id: CallId,
        /// Hex SHA-256 of the consent prompt played.
        prompt_sha256: Option<String>,
        /// How the choice was made: `keypad` or `default`.
        choice_source: Option<String>,
        /// When the choice was made (Unix ms).
        at_ms: Option<i64>,
    },
}

/// `consent prompt sha256 abcd1234…, choice by keypad at 2026-11-22T10:00:00Z`, from what the
/// call record holds (one line whatever the columns contain).
fn consent_summary(
    prompt_sha256: Option<&str>,
    source: Option<&str>,
    at_ms: Option<i64>,
) -> String {
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).collect() };
    let prompt = match prompt_sha256.map(clean) {
        Some(h) if h.chars().count() > 8 => {
            let short: String = h.chars().take(8).collect();
            format!("consent prompt sha256 {short}…")
        }
        Some(h) => format!("consent prompt sha256 {h}"),
        None => "no consent prompt hash recorded".to_string(),
    };
    let mut choice = match source {
        Some(s) => format!("choice by {}", clean(s)),
        None => "choice".to_string(),
    };
    if let Some(ms) = at_ms {
        choice.push_str(&format!(" at {}", rfc3339_utc(ms)));
    }
    format!("{prompt}, {choice}")
}

use crate::time::rfc3339_utc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_declined_message_names_the_consent() {
        let e = RetentionError::TrainingDeclined {
            recording_id: RecordingId::from_string("rec-1"),
            call_id: CallId::from_string("call-1"),
            prompt_sha256: Some("abcd1234ef".repeat(6)),
            choice_source: Some("default".into()),
            at_ms: Some(1_795_341_600_000),
        };
        assert_eq!(
            e.to_string(),
            "recording rec-1 (call call-1): the customer did not consent to training use \
             (consent prompt sha256 abcd1234…, choice by default at 2026-11-22T10:00:00Z); \
             the training tag cannot be added"
        );
        let e = RetentionError::TrainingDeclined {
            recording_id: RecordingId::from_string("rec-1"),
            call_id: CallId::from_string("call-1"),
            prompt_sha256: None,
            choice_source: Some("key\npad".into()),
            at_ms: None,
        };
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.contains("(no consent prompt hash recorded, choice by keypad)"),
            "{msg}"
        );
    }
}
