//! API tokens: shown once when created, stored only as SHA-256.
//!
//! The tokens file (`[portal] api_tokens_file`, default `data/api-tokens`, mode 0600) has one
//! line per token: `NAME SHA256-HEX`. A token is `cgt_` followed by 64 hex characters of OS
//! randomness, so a hash is as good as a password hash here (no dictionary to attack).

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("API tokens file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("API tokens file {path}, line {line}: expected `NAME SHA256-HEX`")]
    Parse { path: PathBuf, line: usize },
    #[error("token name must be 1-64 characters of letters, digits, '-', '_' or '.'")]
    BadName,
    #[error("a token named `{0}` exists already")]
    Exists(String),
}

/// The accepted tokens (hashes only).
#[derive(Debug, Default, Clone)]
pub struct TokenSet {
    entries: Vec<(String, [u8; 32])>,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl TokenSet {
    /// Loads the file; a missing file is an empty set (the API then refuses every request).
    pub fn load(path: &Path) -> Result<TokenSet, TokenError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokenSet::default()),
            Err(source) => return Err(TokenError::Io { path: path.into(), source }),
        };
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(name), Some(h), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(TokenError::Parse { path: path.into(), line: i + 1 });
            };
            let h = unhex(h).ok_or(TokenError::Parse { path: path.into(), line: i + 1 })?;
            entries.push((name.to_string(), h));
        }
        Ok(TokenSet { entries })
    }

    /// The token's name when it is valid. Compares every entry in full (no early exit on the
    /// first differing byte), so timing says nothing about how close a guess was.
    pub fn check(&self, token: &str) -> Option<&str> {
        let h = hash(token);
        let mut found = None;
        for (name, want) in &self.entries {
            let diff = want.iter().zip(h.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(name.as_str());
            }
        }
        found
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }
}

/// Creates a token named `name`, appends its hash to `path` (created 0600), returns the token.
pub fn create(path: &Path, name: &str) -> Result<String, TokenError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid {
        return Err(TokenError::BadName);
    }
    let existing = TokenSet::load(path)?;
    if existing.names().any(|n| n == name) {
        return Err(TokenError::Exists(name.into()));
    }
    let token = format!("cgt_{}", crate::ids::random_hex(32));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| TokenError::Io { path: path.into(), source })?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|source| TokenError::Io { path: path.into(), source })?;
    writeln!(f, "{name} {}", hex(&hash(&token))).map_err(|source| TokenError::Io { path: path.into(), source })?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_tokens_check_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api-tokens");
        let t = create(&path, "payments").unwrap();
        assert!(t.starts_with("cgt_") && t.len() == 68);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t[4..]), "the token itself must not be stored");
        let set = TokenSet::load(&path).unwrap();
        assert_eq!(set.check(&t), Some("payments"));
        assert_eq!(set.check("cgt_0000"), None);
        assert_eq!(set.check(""), None);
        assert!(matches!(create(&path, "payments"), Err(TokenError::Exists(_))));
        assert!(matches!(create(&path, "bad name"), Err(TokenError::BadName)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn missing_file_is_empty_and_bad_lines_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(TokenSet::load(&dir.path().join("none")).unwrap().names().count(), 0);
        let p = dir.path().join("t");
        std::fs::write(&p, "# comment\nok 00\n").unwrap();
        let e = TokenSet::load(&p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
