//! Investigation bundles (`callgate export`) and their verifier (`callgate export verify`).
//!
//! A bundle is one ZIP file (entries stored, not compressed: audio does not deflate) that a third
//! party can check without access to the gateway:
//!
//! ```text
//! README.txt                 what this is and how to check it (human text)
//! recordings/<rec>.wav       stereo PCM16 8 kHz: left = customer, right = agent
//! recordings/<rec>.cgrec     the encrypted container exactly as stored (docs/recording-format.md)
//! manifest.json              case, who exported, each recording's facts and data key, every
//!                            file above with its size and SHA-256
//! audit.json                 the audit entries about these recordings and calls, and the
//!                            `export.create` entry that names manifest.json's SHA-256
//! ```
//!
//! What a verifier establishes, with nothing but the bundle:
//! 1. every file is the one the manifest names (size, SHA-256), none missing, none added;
//! 2. each container authenticates chunk by chunk under the data key in the manifest (AES-GCM
//!    tags, the header as associated data), its header names the recording, it ends as the
//!    manifest says (complete, or truncated after N chunks), and its SHA-256 is the one the
//!    gateway stored at hangup;
//! 3. each WAV is exactly what that container renders to: the audio is the audio recorded;
//! 4. every audit entry's hash recomputes (`callgate-audit-v1`), consecutive entries link, and
//!    the `export.create` entry names this case, these recordings and this manifest's SHA-256.
//!
//! With the gateway's database (`export verify --log`) it also establishes that every entry in
//! `audit.json` is, field for field, the entry at that position of the gateway's intact chain:
//! a bundle rebuilt by someone else, even with consistent hashes, fails there. Without the
//! database, compare the export entry's hash with the one printed at export time.
//!
//! Including each recording's data key discloses nothing the bundle's WAV does not already
//! hold: a data key opens only its own recording. It is what lets a third party check point 3.
//!
//! This module is the sans-IO part: the manifest's shape and the checks on facts the IO layer
//! ([`bundle`]) extracts.

pub mod bundle;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::audit::{Entry, GENESIS_HASH, action};

/// The bundle format; `manifest.json` and `audit.json` both carry it.
pub const FORMAT: &str = "callgate-export-v1";
pub const MANIFEST: &str = "manifest.json";
pub const AUDIT: &str = "audit.json";
pub const README: &str = "README.txt";

/// Largest `manifest.json` / `audit.json` a verifier reads (a bundle is untrusted input).
pub const MAX_JSON_BYTES: u64 = 64 << 20;
/// Most files in a bundle.
pub const MAX_FILES: usize = 20_000;
/// Most recordings in one export.
pub const MAX_RECORDINGS: usize = 5_000;

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The case reference given with `--case`.
    pub case: String,
    pub created_at_ms: i64,
    pub created_utc: String,
    pub exported_by: Exporter,
    /// `callgate <version>`.
    pub generator: String,
    pub recordings: Vec<RecordingFacts>,
    /// Every file of the bundle except `manifest.json` and `audit.json`.
    pub files: Vec<FileFacts>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exporter {
    pub actor: String,
    pub role: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFacts {
    pub name: String,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// How a recording ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ending {
    Complete,
    /// The gateway stopped mid-call: every chunk present authenticates, the end is missing.
    Truncated,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ending::Complete => "complete",
            Ending::Truncated => "truncated",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordingFacts {
    pub recording_id: String,
    pub call_id: String,
    pub ending: Ending,
    /// Chunks that authenticate.
    pub chunks: u32,
    pub audio_seconds: f64,
    /// Bundle file names.
    pub container: String,
    pub wav: String,
    /// The container's SHA-256 the gateway stored when the call ended (absent when it never
    /// ended cleanly).
    pub sha256_at_hangup: Option<String>,
    /// The recording's AES-256 data key, hex (see the module docs).
    pub data_key: String,
    /// Whether the recording is under a legal hold for this case at export time.
    pub held_for_case: bool,
    /// Tags in force at export time (names and times; staff notes are not exported).
    pub tags: Vec<TagFact>,
    /// The call: parties, times, announcement, keypad-protection pauses (counts and times
    /// only). Carried, not checked.
    pub call: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagFact {
    pub tag: String,
    pub added_utc: String,
}

/// `audit.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditExcerpt {
    pub format: String,
    /// Oldest first; the last one is the export entry.
    pub entries: Vec<Entry>,
}

/// File names inside a bundle.
pub fn container_name(rec: &str) -> String {
    format!("recordings/{rec}.cgrec")
}
pub fn wav_name(rec: &str) -> String {
    format!("recordings/{rec}.wav")
}

/// Ids as the gateway makes them (`rec-…`, `call-…`): a verifier builds names from them.
fn plausible_id(s: &str, prefix: &str) -> bool {
    s.len() <= 64
        && s.strip_prefix(prefix).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Everything a verifier can find wrong. `Display` is one line for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not a ZIP, or `manifest.json` / `audit.json` missing, too large or not parseable.
    Unreadable(String),
    /// `format` is not [`FORMAT`].
    Format {
        file: &'static str,
        found: String,
    },
    /// A manifest field is malformed.
    Manifest(String),
    UnsafeName(String),
    DuplicateName(String),
    MissingFile(String),
    /// A file in the ZIP that the manifest does not list.
    ExtraFile(String),
    FileChanged {
        name: String,
        what: &'static str,
    },
    Recording {
        id: String,
        problem: String,
    },
    AuditEntry {
        seq: i64,
        problem: &'static str,
    },
    Export(String),
    /// Against the gateway's own audit log (`--log`).
    Log(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable(s) => write!(f, "unreadable: {s}"),
            Problem::Format { file, found } => {
                write!(f, "{file}: format {found:?}, expected {FORMAT:?}")
            }
            Problem::Manifest(s) => write!(f, "manifest: {s}"),
            Problem::UnsafeName(n) => write!(f, "file name {n:?} is not a plain relative path"),
            Problem::DuplicateName(n) => write!(f, "file {n} appears twice"),
            Problem::MissingFile(n) => write!(f, "file {n} is listed in the manifest but missing"),
            Problem::ExtraFile(n) => write!(f, "file {n} is not listed in the manifest"),
            Problem::FileChanged { name, what } => write!(f, "file {name}: {what}"),
            Problem::Recording { id, problem } => write!(f, "recording {id}: {problem}"),
            Problem::AuditEntry { seq, problem } => write!(f, "audit entry #{seq}: {problem}"),
            Problem::Export(s) => write!(f, "export entry: {s}"),
            Problem::Log(s) => write!(f, "audit log: {s}"),
        }
    }
}

/// Checks the manifest's own consistency: format, names, ids, keys, and that every recording's
/// files are listed. Returns the problems (empty: consistent).
pub fn check_manifest(m: &Manifest) -> Vec<Problem> {
    let mut p = Vec::new();
    if m.format != FORMAT {
        p.push(Problem::Format {
            file: MANIFEST,
            found: m.format.clone(),
        });
    }
    if !crate::retention::service::valid_case_ref(&m.case) {
        p.push(Problem::Manifest(format!(
            "case {:?} is not a case reference",
            m.case
        )));
    }
    if m.recordings.is_empty() || m.recordings.len() > MAX_RECORDINGS {
        p.push(Problem::Manifest(format!(
            "{} recordings (1 to {MAX_RECORDINGS} expected)",
            m.recordings.len()
        )));
    }
    if m.files.len() > MAX_FILES {
        p.push(Problem::Manifest(format!("{} files listed", m.files.len())));
    }
    let mut names = BTreeSet::new();
    for f in &m.files {
        if !safe_name(&f.name) || f.name == MANIFEST || f.name == AUDIT {
            p.push(Problem::UnsafeName(f.name.clone()));
        }
        if !names.insert(f.name.as_str()) {
            p.push(Problem::DuplicateName(f.name.clone()));
        }
        if !is_hex(&f.sha256, 64) {
            p.push(Problem::Manifest(format!(
                "file {}: sha256 is not 64 hex digits",
                f.name
            )));
        }
    }
    let mut ids = BTreeSet::new();
    for r in &m.recordings {
        let bad = |problem: &str| Problem::Recording {
            id: r.recording_id.clone(),
            problem: problem.to_owned(),
        };
        if !plausible_id(&r.recording_id, "rec-") {
            p.push(bad("not a recording id"));
            continue;
        }
        if !ids.insert(r.recording_id.as_str()) {
            p.push(bad("listed twice"));
        }
        if !plausible_id(&r.call_id, "call-") {
            p.push(bad("call_id is not a call id"));
        }
        if r.container != container_name(&r.recording_id) || r.wav != wav_name(&r.recording_id) {
            p.push(bad("file names do not follow the recording id"));
        }
        for n in [&r.container, &r.wav] {
            if !names.contains(n.as_str()) {
                p.push(bad(&format!("{n} is not among the manifest's files")));
            }
        }
        if !is_hex(&r.data_key, 64) {
            p.push(bad("data_key is not 64 hex digits"));
        }
        if r.sha256_at_hangup
            .as_deref()
            .is_some_and(|h| !is_hex(h, 64))
        {
            p.push(bad("sha256_at_hangup is not 64 hex digits"));
        }
    }
    p
}

/// A relative path of `[A-Za-z0-9._-]` segments, no `.`/`..`, no leading dot segment.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// What the export entry says, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportEntryFacts {
    pub seq: i64,
    pub hash: String,
    pub at_ms: i64,
    pub actor: String,
    pub role: String,
}

/// Checks `audit.json` against the manifest: each entry's hash, the links between consecutive
/// entries, and the export entry (the last one, `export.create`) naming this case, every
/// recording, and `manifest_sha256`.
pub fn check_audit(
    m: &Manifest,
    manifest_sha256: &str,
    excerpt: &AuditExcerpt,
) -> (Option<ExportEntryFacts>, Vec<Problem>) {
    let mut p = Vec::new();
    if excerpt.format != FORMAT {
        p.push(Problem::Format {
            file: AUDIT,
            found: excerpt.format.clone(),
        });
    }
    let mut by_seq: BTreeMap<i64, &Entry> = BTreeMap::new();
    let mut last_seq = 0i64;
    for e in &excerpt.entries {
        if e.seq <= last_seq {
            p.push(Problem::AuditEntry {
                seq: e.seq,
                problem: "out of order or repeated",
            });
        }
        last_seq = last_seq.max(e.seq);
        if e.seq == 1 && e.prev_hash != GENESIS_HASH {
            p.push(Problem::AuditEntry {
                seq: e.seq,
                problem: "first entry of the log does not start from the genesis hash",
            });
        }
        match e.compute_hash(&e.prev_hash) {
            Some(h) if h == e.hash => {}
            Some(_) => p.push(Problem::AuditEntry {
                seq: e.seq,
                problem: "its hash does not match its contents (edited)",
            }),
            None => p.push(Problem::AuditEntry {
                seq: e.seq,
                problem: "prev_hash is not 64 hex digits",
            }),
        }
        if let Some(prev) = by_seq.get(&(e.seq - 1))
            && prev.hash != e.prev_hash
        {
            p.push(Problem::AuditEntry {
                seq: e.seq,
                problem: "does not follow the entry before it (chain broken)",
            });
        }
        by_seq.insert(e.seq, e);
    }

    let Some(last) = excerpt.entries.last() else {
        p.push(Problem::Export("audit.json has no entries".into()));
        return (None, p);
    };
    if last.action != action::EXPORT {
        p.push(Problem::Export(format!(
            "the last entry is {:?}, not {:?}",
            last.action,
            action::EXPORT
        )));
        return (None, p);
    }
    let details: serde_json::Value = serde_json::from_str(&last.details).unwrap_or_default();
    if details.get("manifest_sha256").and_then(|v| v.as_str()) != Some(manifest_sha256) {
        p.push(Problem::Export(
            "names another manifest: manifest.json was changed after the export".into(),
        ));
    }
    if details.get("case").and_then(|v| v.as_str()) != Some(m.case.as_str()) {
        p.push(Problem::Export(format!("is not for case {}", m.case)));
    }
    let targets: Vec<String> = serde_json::from_str(&last.targets).unwrap_or_default();
    let targets: BTreeSet<&str> = targets.iter().map(String::as_str).collect();
    let listed: BTreeSet<&str> = m
        .recordings
        .iter()
        .map(|r| r.recording_id.as_str())
        .chain([m.case.as_str()])
        .collect();
    if targets != listed {
        p.push(Problem::Export(
            "its targets are not exactly this case and these recordings".into(),
        ));
    }
    if last.actor != m.exported_by.actor || last.role != m.exported_by.role {
        p.push(Problem::Export(
            "the manifest names someone else as exporter".into(),
        ));
    }
    let facts = ExportEntryFacts {
        seq: last.seq,
        hash: last.hash.clone(),
        at_ms: last.at_ms,
        actor: last.actor.clone(),
        role: last.role.clone(),
    };
    (Some(facts), p)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    crate::audit::hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests;
