//! The tamper-evident audit log: append-only, hash-chained.
//!
//! Every action on a recording or a key (tag, hold, release, sweep deletion, erasure, subject
//! access, restriction, decrypt, key operations) appends one [`Entry`]. Each entry's hash
//! commits to the previous entry's hash, so editing, deleting or reordering any stored entry
//! breaks the chain from that entry on; [`verify_chain`] recomputes it and names the first bad
//! entry.
//!
//! This module is sans-IO: the encoding, the hash and the verifier. The table, the chain-head
//! lock and appends live in [`crate::store`] (`audit_log`, `audit_head`).
//!
//! # Entry hash (`callgate-audit-v1`)
//!
//! ```text
//! hash = SHA-256( "callgate-audit-v1" 0x00
//!                 prev_hash                      32 raw bytes (all zero before entry 1)
//!                 seq                            8 bytes, big-endian two's complement
//!                 at_ms                          8 bytes, big-endian two's complement
//!                 str(actor) str(role) str(action) str(targets) opt(reason) str(details) )
//! str(s)  = u32 big-endian byte length ‖ UTF-8 bytes
//! opt(s)  = 0xFFFFFFFF when absent, else str(s)
//! ```
//!
//! `targets` is the stored text: a JSON array of ids (recording ids, call ids, case references,
//! key ids). `details` is the stored text of a JSON object with action-specific fields. Both are
//! hashed exactly as stored, so a verifier needs no JSON canonicalisation. Hashes are stored as
//! lowercase hex. `seq` starts at 1 and has no gaps.
//!
//! The chain protects against edits of rows inside the log. Someone able to rewrite the whole
//! table *and* the head could forge a new chain; anchor the head elsewhere (the line
//! `callgate audit verify` prints, copied to a separate system) to detect that too.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Domain-separation prefix of the entry hash.
pub const HASH_VERSION: &[u8] = b"callgate-audit-v1\0";

/// The hash before the first entry (hex of 32 zero bytes).
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Action names (the `action` column). Stable: scripts and auditors filter on them.
pub mod action {
    pub const TAG_ADD: &str = "tag.add";
    pub const TAG_REMOVE: &str = "tag.remove";
    pub const HOLD_CREATE: &str = "hold.create";
    pub const HOLD_RELEASE: &str = "hold.release";
    /// The sweeper crypto-shredded a recording whose retention expired.
    pub const SWEEP_DELETE: &str = "recording.sweep-delete";
    /// A recording was erased on request (UK GDPR art. 17).
    pub const ERASE: &str = "recording.erase";
    /// The sweeper removed the numbers of call rows that have no audio, after the default
    /// retention period (targets: the call ids).
    pub const CALL_REDACT: &str = "call.redact";
    /// A call without a recording was erased on request: its numbers are redacted.
    pub const CALL_ERASE: &str = "call.erase";
    pub const RESTRICT: &str = "recording.restrict";
    pub const UNRESTRICT: &str = "recording.unrestrict";
    /// Audio was decrypted (played, downloaded, rendered to WAV).
    pub const DECRYPT: &str = "recording.decrypt";
    /// A subject access request was answered.
    pub const SAR: &str = "sar.export";
    /// An investigation bundle was written (targets: the case, then the recordings; details:
    /// the manifest's SHA-256). See `crate::export`.
    pub const EXPORT: &str = "export.create";
    pub const KEY_INIT: &str = "key.init";
    pub const KEY_ROTATE: &str = "key.rotate";
    pub const KEY_RETIRE: &str = "key.retire";
    /// A portal user was created (`callgate user add`; target: the user name).
    pub const USER_ADD: &str = "user.add";
    /// A portal user was disabled (`callgate user disable`).
    pub const USER_DISABLE: &str = "user.disable";
    /// A portal user's password was set (`callgate user passwd`).
    pub const USER_PASSWORD: &str = "user.password";
    /// Portal sign-in (actor: the user) and a refused attempt (actor: the name typed, if it is
    /// a known user; otherwise `(unknown)`: a password typed into the name box is never kept).
    pub const LOGIN: &str = "portal.login";
    pub const LOGIN_FAILED: &str = "portal.login-failed";
    pub const LOGOUT: &str = "portal.logout";
}

/// Who may do what (DESIGN.md, "Roles"). Admins do not listen to calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Supervisor,
    Investigator,
    Dpo,
    Admin,
    /// The gateway itself (the in-`serve` sweeper). Never accepted from the command line.
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Investigator => "investigator",
            Role::Dpo => "dpo",
            Role::Admin => "admin",
            Role::System => "system",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    /// The four human roles; `system` is not accepted from input.
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "supervisor" => Ok(Role::Supervisor),
            "investigator" => Ok(Role::Investigator),
            "dpo" => Ok(Role::Dpo),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role `{s}` (supervisor, investigator, dpo, admin)"
            )),
        }
    }
}

/// Who acts: a name (a person, or `sweeper@NODE`) and the role they act in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: Role,
}

impl Actor {
    pub fn new(name: impl Into<String>, role: Role) -> Actor {
        Actor {
            name: name.into(),
            role,
        }
    }
}

/// An entry to append; the store assigns `seq`, `prev_hash` and `hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// Wall clock, Unix milliseconds (taken by the shell).
    pub at_ms: i64,
    pub actor: String,
    pub role: Role,
    /// One of [`action`].
    pub action: &'static str,
    /// Ids acted on.
    pub targets: Vec<String>,
    pub reason: Option<String>,
    /// Action-specific fields (never key material, never a full phone number).
    pub details: serde_json::Value,
}

impl NewEntry {
    pub fn new(at_ms: i64, actor: &Actor, action: &'static str) -> NewEntry {
        NewEntry {
            at_ms,
            actor: actor.name.clone(),
            role: actor.role,
            action,
            targets: Vec::new(),
            reason: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }
    pub fn target(mut self, t: impl Into<String>) -> NewEntry {
        self.targets.push(t.into());
        self
    }
    pub fn targets<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ts: I) -> NewEntry {
        self.targets.extend(ts.into_iter().map(Into::into));
        self
    }
    pub fn reason(mut self, r: Option<&str>) -> NewEntry {
        self.reason = r.map(str::to_owned);
        self
    }
    pub fn details(mut self, d: serde_json::Value) -> NewEntry {
        self.details = d;
        self
    }

    /// The stored text of `targets` (a JSON array of strings).
    pub fn targets_text(&self) -> String {
        // Invariant: a Vec<String> always serialises.
        serde_json::to_string(&self.targets).expect("strings serialise")
    }
    /// The stored text of `details`.
    pub fn details_text(&self) -> String {
        self.details.to_string()
    }
}

/// One stored entry, exactly as in the table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub role: String,
    pub action: String,
    /// JSON array text.
    pub targets: String,
    pub reason: Option<String>,
    /// JSON object text.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

impl Entry {
    /// Recomputes this entry's hash from its fields and the given previous hash (hex).
    pub fn compute_hash(&self, prev_hash: &str) -> Option<String> {
        let prev = decode_hex32(prev_hash)?;
        Some(hex(&entry_hash(
            &prev,
            self.seq,
            self.at_ms,
            &self.actor,
            &self.role,
            &self.action,
            &self.targets,
            self.reason.as_deref(),
            &self.details,
        )))
    }
}

/// The `callgate-audit-v1` hash of one entry (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    prev: &[u8; 32],
    seq: i64,
    at_ms: i64,
    actor: &str,
    role: &str,
    action: &str,
    targets: &str,
    reason: Option<&str>,
    details: &str,
) -> [u8; 32] {
    fn field(h: &mut Sha256, s: &str) {
        // Fields are far below 4 GiB (the database would refuse them first); saturate anyway
        // rather than wrap.
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX - 1);
        h.update(len.to_be_bytes());
        h.update(s.as_bytes());
    }
    let mut h = Sha256::new();
    h.update(HASH_VERSION);
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    field(&mut h, actor);
    field(&mut h, role);
    field(&mut h, action);
    field(&mut h, targets);
    match reason {
        None => h.update(u32::MAX.to_be_bytes()),
        Some(r) => field(&mut h, r),
    }
    field(&mut h, details);
    h.finalize().into()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex digits to 32 bytes.
pub fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Why the chain does not verify, at which entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("audit entry {seq}: {problem}")]
    BadEntry { seq: i64, problem: String },
    #[error("audit chain head says {head_seq} entries ending in {head_hash}, but {problem}")]
    Head {
        head_seq: i64,
        head_hash: String,
        problem: String,
    },
}

impl ChainError {
    /// The entry named, if the problem is at one.
    pub fn seq(&self) -> Option<i64> {
        match self {
            ChainError::BadEntry { seq, .. } => Some(*seq),
            ChainError::Head { .. } => None,
        }
    }
}

/// Incremental verifier: feed entries in `seq` order, then [`ChainVerifier::finish`] with the
/// stored head.
#[derive(Debug)]
pub struct ChainVerifier {
    expect_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            expect_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
        }
    }
}

impl ChainVerifier {
    /// Checks one entry: its position, its link to the previous entry and its own hash.
    pub fn push(&mut self, e: &Entry) -> Result<(), ChainError> {
        let bad = |problem: String| ChainError::BadEntry {
            seq: e.seq,
            problem,
        };
        if e.seq != self.expect_seq {
            // A gap: the named entry is the first one present after the missing ones.
            return Err(ChainError::BadEntry {
                seq: e.seq,
                problem: format!(
                    "expected entry {} here (entries missing or renumbered)",
                    self.expect_seq
                ),
            });
        }
        if e.prev_hash != self.prev_hash {
            return Err(bad(format!(
                "previous-hash link {} does not match the hash of entry {} ({}): an earlier entry was changed or removed",
                e.prev_hash,
                e.seq - 1,
                self.prev_hash
            )));
        }
        let Some(computed) = e.compute_hash(&self.prev_hash) else {
            return Err(bad("malformed previous hash".into()));
        };
        if computed != e.hash {
            return Err(bad(format!(
                "contents do not match its hash (stored {}, recomputed {computed}): this entry was modified",
                e.hash
            )));
        }
        self.expect_seq += 1;
        self.prev_hash = e.hash.clone();
        Ok(())
    }

    /// How many entries verified so far.
    pub fn count(&self) -> i64 {
        self.expect_seq - 1
    }

    /// The hash of the last verified entry.
    pub fn last_hash(&self) -> &str {
        &self.prev_hash
    }

    /// Checks the stored head against the entries seen (detects removal of the newest entries).
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<(), ChainError> {
        if head_seq != self.count() || head_hash != self.prev_hash {
            return Err(ChainError::Head {
                head_seq,
                head_hash: head_hash.to_string(),
                problem: format!(
                    "the log holds {} entries ending in {} (the newest entries were removed, or the head was altered)",
                    self.count(),
                    self.prev_hash
                ),
            });
        }
        Ok(())
    }
}

/// Verifies a whole chain against its head.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    head_seq: i64,
    head_hash: &str,
) -> Result<i64, ChainError> {
    let mut v = ChainVerifier::default();
    for e in entries {
        v.push(e)?;
    }
    v.finish(head_seq, head_hash)?;
    Ok(v.count())
}

/// Builds the stored form of `new` as entry `seq` after `prev_hash` (used by the store).
pub fn seal(new: &NewEntry, seq: i64, prev_hash: &str) -> Entry {
    let mut e = Entry {
        seq,
        at_ms: new.at_ms,
        actor: new.actor.clone(),
        role: new.role.as_str().to_string(),
        action: new.action.to_string(),
        targets: new.targets_text(),
        reason: new.reason.clone(),
        details: new.details_text(),
        prev_hash: prev_hash.to_string(),
        hash: String::new(),
    };
    // The store only ever passes hashes it produced (hex of 32 bytes) or GENESIS_HASH; a
    // corrupted head is caught here rather than chained onto.
    e.hash = e
        .compute_hash(prev_hash)
        .unwrap_or_else(|| hex(&[0xff; 32]));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<Entry> {
        let actor = Actor::new("alice", Role::Investigator);
        let mut prev = GENESIS_HASH.to_string();
        let mut out = Vec::new();
        for i in 0..n {
            let ne = NewEntry::new(1_000 + i as i64, &actor, action::TAG_ADD)
                .target(format!("rec-{i}"))
                .reason(if i % 2 == 0 { Some("why") } else { None })
                .details(serde_json::json!({"tag": "training"}));
            let e = seal(&ne, i as i64 + 1, &prev);
            prev = e.hash.clone();
            out.push(e);
        }
        out
    }

    #[test]
    fn a_sealed_chain_verifies() {
        let c = chain(5);
        let last = c.last().unwrap().hash.clone();
        assert_eq!(verify_chain(&c, 5, &last), Ok(5));
        assert_eq!(verify_chain(&[], 0, GENESIS_HASH), Ok(0));
    }

    #[test]
    fn every_field_is_covered() {
        let c = chain(4);
        let last = c.last().unwrap().hash.clone();
        type Edit = fn(&mut Entry);
        let edits: [(&str, Edit); 8] = [
            ("at_ms", |e| e.at_ms += 1),
            ("actor", |e| e.actor.push('x')),
            ("role", |e| e.role = "dpo".into()),
            ("action", |e| e.action = "tag.remove".into()),
            ("targets", |e| e.targets = "[\"rec-x\"]".into()),
            ("reason", |e| e.reason = None),
            ("details", |e| e.details = "{}".into()),
            ("hash", |e| e.hash = hex(&[1; 32])),
        ];
        for (name, edit) in edits {
            let mut c2 = c.clone();
            edit(&mut c2[2]);
            let err = verify_chain(&c2, 4, &last).unwrap_err();
            assert_eq!(err.seq(), Some(3), "{name}: {err}");
        }
        // Reason absent vs empty differ.
        let mut c2 = c.clone();
        c2[1].reason = Some(String::new());
        assert_eq!(verify_chain(&c2, 4, &last).unwrap_err().seq(), Some(2));
    }

    #[test]
    fn removal_reorder_and_rehash_are_caught() {
        let c = chain(4);
        let last = c.last().unwrap().hash.clone();
        // Middle entry removed.
        let mut c2 = c.clone();
        c2.remove(1);
        assert_eq!(verify_chain(&c2, 4, &last).unwrap_err().seq(), Some(3));
        // Newest entry removed: only the head notices.
        let c2 = &c[..3];
        assert!(matches!(
            verify_chain(c2, 4, &last),
            Err(ChainError::Head { .. })
        ));
        // An edited entry whose own hash is recomputed breaks the next link.
        let mut c2 = c.clone();
        c2[1].actor = "mallory".into();
        let prev = c2[0].hash.clone();
        c2[1].hash = c2[1].compute_hash(&prev).unwrap();
        assert_eq!(verify_chain(&c2, 4, &last).unwrap_err().seq(), Some(3));
    }

    #[test]
    fn hash_is_stable() {
        // A fixed vector so an independent implementation can check itself against this one.
        let h = entry_hash(
            &[0; 32],
            1,
            1_700_000_000_000,
            "alice",
            "dpo",
            "recording.erase",
            "[\"rec-0011223344556677\"]",
            Some("subject request 42"),
            "{}",
        );
        assert_eq!(hex(&h).len(), 64);
        let again = entry_hash(
            &[0; 32],
            1,
            1_700_000_000_000,
            "alice",
            "dpo",
            "recording.erase",
            "[\"rec-0011223344556677\"]",
            Some("subject request 42"),
            "{}",
        );
        assert_eq!(h, again);
    }

    #[test]
    fn roles_parse() {
        for r in ["supervisor", "investigator", "dpo", "admin"] {
            assert_eq!(r.parse::<Role>().unwrap().as_str(), r);
        }
        assert!("system".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
    }
}
