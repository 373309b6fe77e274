//! Retention operations as plain async functions: what the CLI calls today and the portal's
//! REST API will call. Each takes the store, the acting [`Actor`] and `now_ms` (wall clock,
//! Unix ms, from the caller), checks the role (DESIGN.md "Roles"), and commits the change
//! with its audit entry in one [`AuditTx`](crate::store::AuditTx).
//!
//! Role rules (who may):
//!
//! | operation | roles |
//! |---|---|
//! | play / decrypt an unrestricted recording | supervisor, investigator, dpo |
//! | play / decrypt a restricted recording | dpo |
//! | tag `training`, `complaint` (add/remove) | supervisor, investigator, dpo |
//! | any other tag (`evidence`, `abusive`, custom) | investigator, dpo |
//! | create / release a legal hold | investigator, dpo |
//! | export an investigation bundle | investigator, dpo (restricted recordings: dpo) |
//! | subject access, erasure, restriction | dpo |
//! | read the audit log | investigator, dpo, admin |
//! | run the sweeper by hand | admin, dpo (and the gateway itself) |
//!
//! Whatever the role, `training` is refused on a recording whose customer declined training
//! use at the consent prompt ([`RetentionError::TrainingDeclined`]).

use serde_json::json;

use super::RetentionError;
use super::policy::{Decision, Policy};
use crate::audit::{Actor, NewEntry, Role, action};
use crate::config::{BUILTIN_TAGS, RetentionConfig};
use crate::ids::{CallId, RecordingId};
use crate::recording::storage::Storage;
use crate::store::{AuditTx, HoldRow, RetentionRow, Store, TagRow, Tombstone, deletion_state};

/// Tags any role that plays recordings may add or remove.
pub const ROUTINE_TAGS: [&str; 2] = [TRAINING_TAG, "complaint"];

/// The tag a customer may refuse at the consent prompt (see [`tag_add`]).
pub const TRAINING_TAG: &str = "training";

/// Longest note, reason or case reference accepted (characters).
pub const MAX_TEXT: usize = 2000;

/// What a role may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Play,
    PlayRestricted,
    TagRoutine,
    TagSensitive,
    Hold,
    /// Write an investigation bundle (`callgate export`).
    Export,
    DataSubject,
    ReadAudit,
    Sweep,
}

impl Permission {
    fn what(self) -> &'static str {
        match self {
            Permission::Play => "play or decrypt recordings",
            Permission::PlayRestricted => "play or export a restricted recording",
            Permission::TagRoutine => "tag recordings",
            Permission::TagSensitive => "add or remove this tag",
            Permission::Hold => "create or release legal holds",
            Permission::Export => "export investigation bundles",
            Permission::DataSubject => {
                "run subject access, erasure or restriction (data protection officer only)"
            }
            Permission::ReadAudit => "read the audit log",
            Permission::Sweep => "run the retention sweeper",
        }
    }
}

/// Whether `role` has `perm` (the table in the module docs).
pub fn allowed(role: Role, perm: Permission) -> bool {
    use Permission::*;
    use Role::*;
    match perm {
        Play | TagRoutine => matches!(role, Supervisor | Investigator | Dpo),
        TagSensitive | Hold | Export => matches!(role, Investigator | Dpo),
        PlayRestricted | DataSubject => role == Dpo,
        ReadAudit => matches!(role, Investigator | Dpo | Admin),
        Sweep => matches!(role, Admin | Dpo | System),
    }
}

/// `Ok` if allowed, else [`RetentionError::Forbidden`].
pub fn require(actor: &Actor, perm: Permission) -> Result<(), RetentionError> {
    if allowed(actor.role, perm) {
        Ok(())
    } else {
        Err(RetentionError::Forbidden {
            role: actor.role,
            what: perm.what(),
        })
    }
}

pub fn check_text(field: &'static str, s: &str, required: bool) -> Result<(), RetentionError> {
    if required && s.trim().is_empty() {
        return Err(RetentionError::BadText {
            field,
            problem: "must not be empty",
        });
    }
    if s.chars().count() > MAX_TEXT {
        return Err(RetentionError::BadText {
            field,
            problem: "too long (at most 2000 characters)",
        });
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(RetentionError::BadText {
            field,
            problem: "contains control characters",
        });
    }
    Ok(())
}

/// Case references: 1-64 characters of `A-Z a-z 0-9 . _ / -`.
pub fn valid_case_ref(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
}

/// [`valid_case_ref`], as the error a user sees.
pub fn check_case_ref(case_ref: &str) -> Result<(), RetentionError> {
    if valid_case_ref(case_ref) {
        return Ok(());
    }
    Err(RetentionError::BadHold {
        case_ref: case_ref.to_string(),
        problem: "a case reference is 1-64 characters of A-Z a-z 0-9 . _ / -".into(),
    })
}

fn is_gone(row: &RetentionRow) -> bool {
    row.state == deletion_state::DELETING || row.state == deletion_state::DELETED
}

/// Recomputes and stores a recording's expiry under the lock; returns the decision.
async fn recompute(
    tx: &mut AuditTx,
    policy: &Policy,
    rec: &RecordingId,
) -> Result<Decision, RetentionError> {
    let (_, inputs) = tx
        .retention_inputs(rec)
        .await?
        .ok_or_else(|| RetentionError::UnknownRecording(rec.clone()))?;
    let d = policy.decide(&inputs);
    tx.set_retention(
        rec,
        d.expires_at_ms,
        &d.rule.to_string(),
        &policy.fingerprint(),
        d.held_by.is_some(),
    )
    .await?;
    Ok(d)
}

/// The row of a live recording, read under the lock.
async fn live_row(tx: &mut AuditTx, rec: &RecordingId) -> Result<RetentionRow, RetentionError> {
    let row = tx
        .retention(rec)
        .await?
        .ok_or_else(|| RetentionError::UnknownRecording(rec.clone()))?;
    if is_gone(&row) {
        return Err(RetentionError::Deleted(rec.clone()));
    }
    Ok(row)
}

fn decision_json(d: &Decision) -> serde_json::Value {
    json!({ "expires_at_ms": d.expires_at_ms, "rule": d.rule.to_string() })
}

/// The permission a tag needs.
pub fn tag_permission(tag: &str) -> Permission {
    if ROUTINE_TAGS.contains(&tag) {
        Permission::TagRoutine
    } else {
        Permission::TagSensitive
    }
}

fn check_tag(cfg: &RetentionConfig, tag: &str) -> Result<(), RetentionError> {
    if cfg.is_known_tag(tag) {
        return Ok(());
    }
    let mut allowed: Vec<&str> = BUILTIN_TAGS.to_vec();
    allowed.extend(cfg.custom_tags.iter().map(String::as_str));
    Err(RetentionError::UnknownTag {
        tag: tag.to_string(),
        allowed: allowed.join(", "),
    })
}

/// Refuses the `training` tag on a recording whose call's customer declined training use at
/// the consent prompt (`consent_training = false`). Allowed when they agreed, and when no
/// choice is stored (`None`: the route offered no training choice; its published notice
/// covers training use). Read under the lock, so it applies to every path that adds tags.
async fn check_training_consent(
    tx: &mut AuditTx,
    rec: &RecordingId,
    tag: &str,
) -> Result<(), RetentionError> {
    if tag != TRAINING_TAG {
        return Ok(());
    }
    match tx.consent_of_recording(rec).await? {
        Some(c) if c.training == Some(false) => Err(RetentionError::TrainingDeclined {
            recording_id: rec.clone(),
            call_id: c.call_id,
            prompt_sha256: c.prompt_sha256,
            choice_source: c.source,
            at_ms: c.at_ms,
        }),
        _ => Ok(()),
    }
}

/// Result of [`tag_add`].
#[derive(Clone, Debug)]
pub enum TagAdded {
    Added(Decision),
    /// Already on the recording; nothing changed (no audit entry).
    AlreadyTagged(TagRow),
}

/// Puts `tag` on a recording (with an optional note) and recomputes its expiry. `training` is
/// refused with [`RetentionError::TrainingDeclined`] if the customer declined training use
/// (like every refusal, not audited: nothing changed).
pub async fn tag_add(
    store: &Store,
    cfg: &RetentionConfig,
    actor: &Actor,
    rec: &RecordingId,
    tag: &str,
    note: Option<&str>,
    now_ms: i64,
) -> Result<TagAdded, RetentionError> {
    check_tag(cfg, tag)?;
    require(actor, tag_permission(tag))?;
    if let Some(n) = note {
        check_text("note", n, false)?;
    }
    let policy = Policy::from_config(cfg);
    let mut tx = store.begin_audited(now_ms).await?;
    let row = live_row(&mut tx, rec).await?;
    if let Err(e) = check_training_consent(&mut tx, rec, tag).await {
        tx.rollback().await?;
        return Err(e);
    }
    if let Some(t) = tx
        .tags_of(rec)
        .await?
        .into_iter()
        .find(|t| t.tag == tag && t.removed_at_ms.is_none())
    {
        tx.rollback().await?;
        return Ok(TagAdded::AlreadyTagged(t));
    }
    tx.put_tag(rec, tag, &actor.name, now_ms, note).await?;
    let d = recompute(&mut tx, &policy, rec).await?;
    tx.append(
        &NewEntry::new(now_ms, actor, action::TAG_ADD)
            .target(rec.as_str())
            .target(row.call_id.as_str())
            .details(json!({
                "tag": tag,
                "note": note.is_some(),
                "retention": decision_json(&d),
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(TagAdded::Added(d))
}

/// Removes `tag` from a recording and recomputes its expiry (an until-released tag starts its
/// grace period now).
pub async fn tag_remove(
    store: &Store,
    cfg: &RetentionConfig,
    actor: &Actor,
    rec: &RecordingId,
    tag: &str,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<Decision, RetentionError> {
    require(actor, tag_permission(tag))?;
    if let Some(r) = reason {
        check_text("reason", r, false)?;
    }
    let policy = Policy::from_config(cfg);
    let mut tx = store.begin_audited(now_ms).await?;
    let row = live_row(&mut tx, rec).await?;
    if !tx.remove_tag(rec, tag, &actor.name, now_ms).await? {
        tx.rollback().await?;
        return Err(RetentionError::NotTagged {
            recording_id: rec.clone(),
            tag: tag.to_string(),
        });
    }
    let d = recompute(&mut tx, &policy, rec).await?;
    tx.append(
        &NewEntry::new(now_ms, actor, action::TAG_REMOVE)
            .target(rec.as_str())
            .target(row.call_id.as_str())
            .reason(reason)
            .details(json!({ "tag": tag, "retention": decision_json(&d) })),
    )
    .await?;
    tx.commit().await?;
    Ok(d)
}

/// Result of [`hold_create`].
#[derive(Clone, Debug)]
pub struct HoldCreated {
    /// False when the case already existed (open) and recordings were added to it.
    pub new_case: bool,
    /// Recordings newly attached (already attached ones are not repeated).
    pub attached: Vec<RecordingId>,
}

/// Creates legal hold `case_ref` (or adds recordings to it while open). All or nothing: an
/// unknown or deleted recording fails the whole command.
pub async fn hold_create(
    store: &Store,
    cfg: &RetentionConfig,
    actor: &Actor,
    case_ref: &str,
    reason: &str,
    recs: &[RecordingId],
    now_ms: i64,
) -> Result<HoldCreated, RetentionError> {
    require(actor, Permission::Hold)?;
    check_case_ref(case_ref)?;
    check_text("reason", reason, true)?;
    let policy = Policy::from_config(cfg);
    let mut tx = store.begin_audited(now_ms).await?;
    let new_case = match tx.get_hold(case_ref).await? {
        Some(h) if h.released_at_ms.is_some() => {
            tx.rollback().await?;
            return Err(RetentionError::HoldReleased(case_ref.to_string()));
        }
        Some(_) => false,
        None => {
            tx.create_hold(case_ref, reason, &actor.name, now_ms)
                .await?;
            true
        }
    };
    let mut attached = Vec::new();
    let mut targets = vec![case_ref.to_string()];
    for rec in recs {
        // An error returns early: dropping `tx` rolls everything back.
        live_row(&mut tx, rec).await?;
        if tx.add_hold_item(case_ref, rec, &actor.name, now_ms).await? {
            recompute(&mut tx, &policy, rec).await?;
            attached.push(rec.clone());
            targets.push(rec.to_string());
        }
    }
    tx.append(
        &NewEntry::new(now_ms, actor, action::HOLD_CREATE)
            .targets(targets)
            .reason(Some(reason))
            .details(json!({ "new_case": new_case, "attached": attached.len() })),
    )
    .await?;
    tx.commit().await?;
    Ok(HoldCreated { new_case, attached })
}

/// Releases legal hold `case_ref`; its recordings return to their other rules (a released
/// hold keeps them for `grace` more). Returns each recording's new decision.
pub async fn hold_release(
    store: &Store,
    cfg: &RetentionConfig,
    actor: &Actor,
    case_ref: &str,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<Vec<(RecordingId, Decision)>, RetentionError> {
    require(actor, Permission::Hold)?;
    if let Some(r) = reason {
        check_text("reason", r, false)?;
    }
    let policy = Policy::from_config(cfg);
    let mut tx = store.begin_audited(now_ms).await?;
    match tx.get_hold(case_ref).await? {
        None => {
            tx.rollback().await?;
            return Err(RetentionError::UnknownHold(case_ref.to_string()));
        }
        Some(h) if h.released_at_ms.is_some() => {
            tx.rollback().await?;
            return Err(RetentionError::HoldReleased(case_ref.to_string()));
        }
        Some(_) => {}
    }
    tx.release_hold(case_ref, &actor.name, now_ms, reason)
        .await?;
    let mut out = Vec::new();
    for rec in tx.hold_items(case_ref).await? {
        match tx.retention(&rec).await? {
            Some(row) if !is_gone(&row) => {
                let d = recompute(&mut tx, &policy, &rec).await?;
                out.push((rec, d));
            }
            _ => {}
        }
    }
    let mut targets = vec![case_ref.to_string()];
    targets.extend(out.iter().map(|(r, _)| r.to_string()));
    tx.append(
        &NewEntry::new(now_ms, actor, action::HOLD_RELEASE)
            .targets(targets)
            .reason(reason)
            .details(json!({ "recordings": out.len() })),
    )
    .await?;
    tx.commit().await?;
    Ok(out)
}

/// Sets (`reason` given) or clears the restriction flag of a recording (dpo only).
pub async fn set_restricted(
    store: &Store,
    actor: &Actor,
    rec: &RecordingId,
    restrict: bool,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<(), RetentionError> {
    require(actor, Permission::DataSubject)?;
    if restrict {
        check_text("reason", reason.unwrap_or(""), true)?;
    } else if let Some(r) = reason {
        check_text("reason", r, false)?;
    }
    let mut tx = store.begin_audited(now_ms).await?;
    let row = live_row(&mut tx, rec).await?;
    if !restrict && row.restricted_at_ms.is_none() {
        tx.rollback().await?;
        return Err(RetentionError::NotRestricted(rec.clone()));
    }
    let value = if restrict {
        Some((actor.name.as_str(), now_ms, reason.unwrap_or("")))
    } else {
        None
    };
    tx.set_restriction(rec, value).await?;
    let act = if restrict {
        action::RESTRICT
    } else {
        action::UNRESTRICT
    };
    tx.append(
        &NewEntry::new(now_ms, actor, act)
            .target(rec.as_str())
            .target(row.call_id.as_str())
            .reason(reason),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Checks that `actor` may play (decrypt, export) a recording: role, then restriction.
pub async fn authorize_playback(
    store: &Store,
    actor: &Actor,
    rec: &RecordingId,
) -> Result<Option<RetentionRow>, RetentionError> {
    require(actor, Permission::Play)?;
    let row = store.get_retention(rec).await?;
    if let Some(r) = &row
        && r.restricted_at_ms.is_some()
        && !allowed(actor.role, Permission::PlayRestricted)
    {
        return Err(RetentionError::Restricted(rec.clone()));
    }
    Ok(row)
}

/// Appends the audit entry of a playback/decrypt (before any audio is produced).
pub async fn record_playback(
    store: &Store,
    actor: &Actor,
    rec: &RecordingId,
    details: serde_json::Value,
    now_ms: i64,
) -> Result<(), RetentionError> {
    store
        .audit_append(
            now_ms,
            &[NewEntry::new(now_ms, actor, action::DECRYPT)
                .target(rec.as_str())
                .details(details)],
        )
        .await?;
    Ok(())
}

/// Erases a recording on request (dpo only): crypto-shred, remove the file, tombstone. A
/// recording under an open legal hold is refused, naming the case.
pub async fn erase(
    store: &Store,
    storage: &Storage,
    cfg: &RetentionConfig,
    actor: &Actor,
    rec: &RecordingId,
    reason: &str,
    now_ms: i64,
) -> Result<Tombstone, RetentionError> {
    require(actor, Permission::DataSubject)?;
    check_text("reason", reason, true)?;
    let policy = Policy::from_config(cfg);
    super::sweeper::erase_one(store, storage, &policy, actor, rec, reason, now_ms).await
}

/// Erasure of a call that has no recording (declined, unanswered, failed): its numbers and
/// Call-ID are redacted at once, not after the default period. A call with a recording left
/// is refused: erasing the recording redacts the call with it.
pub async fn erase_call(
    store: &Store,
    actor: &Actor,
    call: &CallId,
    reason: &str,
    now_ms: i64,
) -> Result<(), RetentionError> {
    require(actor, Permission::DataSubject)?;
    check_text("reason", reason, true)?;
    let mut tx = store.begin_audited(now_ms).await?;
    if !tx.redact_call_without_audio(call).await? {
        tx.rollback().await?;
        let row = store.get_call(call).await?;
        return Err(match row {
            None => RetentionError::UnknownCall(call.clone()),
            Some(c) if c.from_number.expose() == crate::store::REDACTED => {
                RetentionError::CallErased(call.clone())
            }
            // Not redacted, so the update found a recording of the call still kept (by the
            // row's recording id, or one not linked to the row yet).
            Some(c) => {
                let kept = match c.recording_id {
                    Some(r) => Some(r),
                    None => store
                        .recording_for_call(call)
                        .await?
                        .map(|r| r.recording_id),
                };
                match kept {
                    Some(recording_id) => RetentionError::CallHasRecording {
                        call_id: call.clone(),
                        recording_id,
                    },
                    // Redacted by someone else between the update and this read.
                    None => RetentionError::CallErased(call.clone()),
                }
            }
        });
    }
    tx.append(
        &NewEntry::new(now_ms, actor, action::CALL_ERASE)
            .target(call.as_str())
            .reason(Some(reason)),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Everything retention knows about one recording.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    pub recording: RetentionRow,
    pub tags: Vec<TagRow>,
    pub holds: Vec<HoldRow>,
    /// Recomputed now from the current configuration (may differ from the stored expiry until
    /// the next sweep if the configuration changed).
    pub expires_at_ms: Option<i64>,
    pub rule: String,
    pub expired: bool,
    pub tombstone: Option<Tombstone>,
}

/// The retention status of a recording at `now_ms`.
pub async fn status(
    store: &Store,
    cfg: &RetentionConfig,
    rec: &RecordingId,
    now_ms: i64,
) -> Result<Status, RetentionError> {
    let (row, inputs) = store
        .retention_inputs(rec)
        .await?
        .ok_or_else(|| RetentionError::UnknownRecording(rec.clone()))?;
    let d = Policy::from_config(cfg).decide(&inputs);
    let gone = is_gone(&row);
    Ok(Status {
        tags: store.tags_of(rec).await?,
        holds: store.holds_of(rec).await?,
        expires_at_ms: if gone { None } else { d.expires_at_ms },
        rule: d.rule.to_string(),
        expired: !gone && d.is_expired(now_ms),
        tombstone: store.get_tombstone(rec).await?,
        recording: row,
    })
}

/// The spellings of a phone number a subject access search matches (at most
/// [`crate::store::MAX_NUMBER_VARIANTS`]): as typed without spaces and punctuation, and for
/// UK numbers both `+44…`, `44…`, `0044…` and national `0…` forms; for other international
/// numbers `+CC…`, `CC…` and `00CC…`. `None` if it has no digits.
pub fn number_variants(input: &str) -> Option<Vec<String>> {
    let cleaned: String = input
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '\u{a0}'))
        .collect();
    let digits: String = cleaned.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 3 || cleaned.chars().any(|c| !(c.is_ascii_digit() || c == '+')) {
        return None;
    }
    let mut v = vec![cleaned.clone()];
    let mut push = |s: String| {
        if !v.contains(&s) {
            v.push(s);
        }
    };
    // International digits without prefix, if we can tell.
    let intl = if let Some(rest) = cleaned.strip_prefix('+') {
        Some(rest.to_string())
    } else if let Some(rest) = cleaned.strip_prefix("00") {
        Some(rest.to_string())
    } else {
        cleaned.strip_prefix('0').map(|rest| format!("44{rest}"))
    };
    if let Some(i) = intl {
        push(format!("+{i}"));
        push(i.clone());
        push(format!("00{i}"));
        if let Some(national) = i.strip_prefix("44") {
            push(format!("0{national}"));
        }
    }
    v.truncate(crate::store::MAX_NUMBER_VARIANTS);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uk_spellings_match_each_other() {
        let want = [
            "+447700900123",
            "447700900123",
            "00447700900123",
            "07700900123",
        ];
        for input in [
            "+44 7700 900123",
            "07700 900123",
            "0044-7700-900123",
            "(07700) 900.123",
        ] {
            let v = number_variants(input).unwrap();
            for w in want {
                assert!(v.iter().any(|x| x == w), "{input}: {w} not in {v:?}");
            }
            assert!(v.len() <= crate::store::MAX_NUMBER_VARIANTS);
        }
        let v = number_variants("+1 202 555 0100").unwrap();
        assert!(
            v.contains(&"+12025550100".to_string()) && v.contains(&"0012025550100".to_string())
        );
        assert!(!v.iter().any(|x| x.starts_with("0") && !x.starts_with("00")));
        // An extension or short code stays as typed.
        assert_eq!(number_variants("2001").unwrap(), vec!["2001".to_string()]);
        assert!(number_variants("abc").is_none());
        assert!(number_variants("12").is_none());
        assert!(number_variants("0770'; DROP").is_none());
    }

    #[test]
    fn roles_table() {
        use Permission::*;
        use Role::*;
        let table = [
            (Play, [true, true, true, false]),
            (PlayRestricted, [false, false, true, false]),
            (TagRoutine, [true, true, true, false]),
            (TagSensitive, [false, true, true, false]),
            (Hold, [false, true, true, false]),
            (DataSubject, [false, false, true, false]),
            (ReadAudit, [false, true, true, true]),
            (Sweep, [false, false, true, true]),
        ];
        for (perm, want) in table {
            for (role, w) in [Supervisor, Investigator, Dpo, Admin].into_iter().zip(want) {
                assert_eq!(allowed(role, perm), w, "{role} {perm:?}");
            }
        }
        assert_eq!(tag_permission("training"), TagRoutine);
        assert_eq!(tag_permission("abusive"), TagSensitive);
        assert_eq!(tag_permission("threatening"), TagSensitive);
    }
}
