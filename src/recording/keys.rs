//! Envelope keys: per-recording data keys (DEK) wrapped by key-encryption keys (KEK).
//!
//! * A [`Dek`] is 32 random bytes, fresh for every recording; it is the AES-256-GCM key of the
//!   recording's STREAM (see [`super::container`]).
//! * A [`Kek`] wraps a DEK with AES Key Wrap (RFC 3394, AES-256), giving a 40-byte
//!   [`WrappedDek`] that is stored in the metadata database, never beside the audio. Deleting that
//!   row crypto-shreds every copy of the recording.
//! * A [`Keyring`] is the contents of the KEK file: the active KEK (used to wrap new DEKs) and
//!   older ones (still able to unwrap). Rotation appends a new active KEK; old recordings are
//!   re-wrapped by rewrapping DEKs only, never by re-encrypting audio.
//!
//! # KEK file format
//!
//! UTF-8 text, one KEK per line, `#` starts a comment line, blank lines ignored:
//!
//! ```text
//! # callgate key-encryption keys. The last key line is the active key.
//! callgate-kek-v1 kek-0123456789abcdef 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
//! ```
//!
//! Fields are separated by ASCII whitespace: a version tag, the key id (`[A-Za-z0-9_-]`, 1 to 64
//! characters), and the key as 64 hex digits. The file is created with mode 0600 inside
//! directories created with mode 0700. A file readable by group or others still loads (a key file
//! restored from backup should not stop calls), but [`Keyring::permissions_too_open`] reports it
//! so the shell can log a warning and raise an operator metric.
//!
//! Errors name the file and line, never the content of a key line.
//!
//! This module reads and writes the key file; wrapping and unwrapping are pure.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use aes_kw::{KeyInit, KwAes256};

use crate::ids::KeyId;

/// Length of a DEK and of a KEK in bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// Length of a wrapped DEK: RFC 3394 adds one 64-bit block.
pub const WRAPPED_DEK_LEN: usize = KEY_LEN + 8;
/// Version tag at the start of each key line.
pub const KEK_LINE_TAG: &str = "callgate-kek-v1";

/// Errors from key handling. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("key file {path} already exists; refusing to overwrite it")]
    AlreadyExists { path: PathBuf },
    #[error("key file {path}, line {line}: {problem}")]
    Parse {
        path: PathBuf,
        line: usize,
        problem: &'static str,
    },
    #[error("key file {path} contains no key")]
    Empty { path: PathBuf },
    #[error("key file {path}, line {line}: key id {id} appears twice")]
    DuplicateId {
        path: PathBuf,
        line: usize,
        id: KeyId,
    },
    #[error("no key-encryption key with id {0} in the keyring")]
    UnknownKey(KeyId),
    #[error("wrapped data key has length {0}, expected {WRAPPED_DEK_LEN}")]
    WrappedLength(usize),
    #[error("wrapped data key failed its integrity check (wrong KEK, or damaged)")]
    UnwrapFailed,
    #[error("operating system random number generator failed: {0}")]
    Random(getrandom::Error),
}

fn random_key() -> Result<[u8; KEY_LEN], KeyError> {
    let mut k = [0u8; KEY_LEN];
    getrandom::fill(&mut k).map_err(KeyError::Random)?;
    Ok(k)
}

/// Best-effort wipe of key bytes on drop (no `unsafe` here, so no volatile write; `black_box`
/// keeps the compiler from eliding the store).
fn wipe(bytes: &mut [u8; KEY_LEN]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// A recording's data-encryption key: 32 random bytes, the AES-256-GCM key of one recording.
/// `Debug` never prints the bytes.
pub struct Dek([u8; KEY_LEN]);

impl Dek {
    /// A fresh random DEK from the OS RNG.
    pub fn generate() -> Result<Dek, KeyError> {
        Ok(Dek(random_key()?))
    }
    /// Wraps raw key bytes (e.g. from a test vector or an external unwrap).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Dek {
        Dek(bytes)
    }
    /// The raw key, for the container cipher only.
    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for Dek {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

/// A DEK wrapped under a KEK with AES-KW (RFC 3394): 40 bytes. Safe to store and log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WrappedDek(pub Vec<u8>);

impl WrappedDek {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Lowercase hex, e.g. for a database text column or the decrypt script.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

/// A key-encryption key with its id. `Debug` prints the id only.
pub struct Kek {
    id: KeyId,
    key: [u8; KEY_LEN],
}

impl Kek {
    /// A fresh random KEK with a fresh random id.
    pub fn generate() -> Result<Kek, KeyError> {
        Ok(Kek {
            id: KeyId::new_random(),
            key: random_key()?,
        })
    }
    /// A KEK from known bytes (tests, imports).
    pub fn from_bytes(id: KeyId, key: [u8; KEY_LEN]) -> Kek {
        Kek { id, key }
    }
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    fn cipher(&self) -> KwAes256 {
        KwAes256::new(&self.key.into())
    }

    /// Wraps a DEK (AES-KW, RFC 3394, default IV `A6A6A6A6A6A6A6A6`).
    pub fn wrap(&self, dek: &Dek) -> WrappedDek {
        let mut buf = [0u8; WRAPPED_DEK_LEN];
        let out = self
            .cipher()
            .wrap_key(dek.as_bytes(), &mut buf)
            // Invariant: the input is 32 bytes (a multiple of 8, non-zero) and the buffer is
            // exactly 40 bytes, the only two conditions under which wrap_key fails.
            .expect("AES-KW of a 32-byte key into a 40-byte buffer cannot fail");
        WrappedDek(out.to_vec())
    }

    /// Unwraps a DEK; fails if the wrapped key was made under another KEK or was altered.
    pub fn unwrap(&self, wrapped: &WrappedDek) -> Result<Dek, KeyError> {
        if wrapped.0.len() != WRAPPED_DEK_LEN {
            return Err(KeyError::WrappedLength(wrapped.0.len()));
        }
        let mut buf = [0u8; KEY_LEN];
        let res = self
            .cipher()
            .unwrap_key(&wrapped.0, &mut buf)
            .map(|k| k.len());
        match res {
            Ok(KEY_LEN) => {
                let dek = Dek(buf);
                wipe(&mut buf);
                Ok(dek)
            }
            _ => {
                wipe(&mut buf);
                Err(KeyError::UnwrapFailed)
            }
        }
    }

    fn line(&self) -> String {
        format!("{KEK_LINE_TAG} {} {}\n", self.id, hex(&self.key))
    }
}

impl Drop for Kek {
    fn drop(&mut self) {
        wipe(&mut self.key);
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// All KEKs from one key file: the active one (last line) and older ones.
#[derive(Debug)]
pub struct Keyring {
    /// Oldest first; the last one is active. Never empty.
    keys: Vec<Kek>,
    permissions_too_open: bool,
}

impl Keyring {
    /// Loads a key file. See the module docs for the format.
    pub fn load(path: &Path) -> Result<Keyring, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = fs::read_to_string(path).map_err(io_err)?;
        let meta = fs::metadata(path).map_err(io_err)?;
        let keys = parse_keys(path, &text)?;
        Ok(Keyring {
            keys,
            permissions_too_open: mode_too_open(&meta),
        })
    }

    /// Creates a new key file holding one fresh KEK. Fails if the file exists. The file gets mode
    /// 0600; missing parent directories are created with mode 0700.
    pub fn create(path: &Path) -> Result<Keyring, KeyError> {
        let kek = Kek::generate()?;
        let mut text = String::from(
            "# callgate key-encryption keys (AES-256). The last key line is the active key.\n\
             # Losing this file makes every recording unreadable. Back it up separately from the audio.\n",
        );
        text.push_str(&kek.line());
        create_private_file(path, text.as_bytes()).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeyError::AlreadyExists {
                path: path.to_path_buf(),
            },
            _ => KeyError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        Ok(Keyring {
            keys: vec![kek],
            permissions_too_open: false,
        })
    }

    /// Development convenience: loads the key file, or creates it if it does not exist.
    /// Returns `true` when it was created.
    pub fn load_or_create_dev(path: &Path) -> Result<(Keyring, bool), KeyError> {
        match Keyring::create(path) {
            Ok(k) => Ok((k, true)),
            Err(KeyError::AlreadyExists { .. }) => Ok((Keyring::load(path)?, false)),
            Err(e) => Err(e),
        }
    }

    /// Appends a fresh KEK to the key file and makes it active. Older keys stay in the file so
    /// existing wrapped DEKs can still be unwrapped (and re-wrapped under the new key).
    /// The file is rewritten atomically (temporary file with mode 0600, fsync, rename).
    pub fn rotate(path: &Path) -> Result<Keyring, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut text = fs::read_to_string(path).map_err(io_err)?;
        let mut keys = parse_keys(path, &text)?;
        let kek = Kek::generate()?;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&kek.line());

        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", crate::ids::random_hex(4)));
        let tmp = PathBuf::from(tmp);
        let res = create_private_file(&tmp, text.as_bytes()).and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename durable; failure here is not worth failing the rotation for.
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        keys.push(kek);
        Ok(Keyring {
            keys,
            permissions_too_open: false,
        })
    }

    /// The active KEK: wraps every new DEK.
    pub fn active(&self) -> &Kek {
        // Invariant: a Keyring is only built from a non-empty key list (parse_keys rejects an
        // empty file; create/rotate push a key).
        self.keys.last().expect("keyring is never empty")
    }

    /// The KEK with this id, active or older.
    pub fn get(&self, id: &KeyId) -> Option<&Kek> {
        self.keys.iter().find(|k| &k.id == id)
    }

    /// Unwraps a DEK with the KEK named `id`.
    pub fn unwrap_dek(&self, id: &KeyId, wrapped: &WrappedDek) -> Result<Dek, KeyError> {
        self.get(id)
            .ok_or_else(|| KeyError::UnknownKey(id.clone()))?
            .unwrap(wrapped)
    }

    /// Key ids, oldest first (the last is active).
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|k| &k.id)
    }

    /// True if the loaded file was readable or writable by group or others. The shell should
    /// warn; loading does not fail, so a restored backup with loose permissions does not stop
    /// recording.
    pub fn permissions_too_open(&self) -> bool {
        self.permissions_too_open
    }
}

#[cfg(unix)]
fn mode_too_open(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 != 0
}

#[cfg(not(unix))]
fn mode_too_open(_meta: &fs::Metadata) -> bool {
    false
}

/// Creates `path` exclusively with mode 0600 (parents 0700), writes `data`, fsyncs.
fn create_private_file(path: &Path, data: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir)?;
    }
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn valid_key_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_keys(path: &Path, text: &str) -> Result<Vec<Kek>, KeyError> {
    let parse = |line: usize, problem: &'static str| KeyError::Parse {
        path: path.to_path_buf(),
        line,
        problem,
    };
    let mut keys: Vec<Kek> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(tag), Some(id), Some(key_hex), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(parse(
                line_no,
                "expected three fields: callgate-kek-v1 <key-id> <64 hex digits>",
            ));
        };
        if tag != KEK_LINE_TAG {
            return Err(parse(
                line_no,
                "unknown key line version (expected callgate-kek-v1)",
            ));
        }
        if !valid_key_id(id) {
            return Err(parse(
                line_no,
                "key id must be 1-64 characters of [A-Za-z0-9_-]",
            ));
        }
        let key =
            parse_hex32(key_hex).ok_or_else(|| parse(line_no, "key must be 64 hex digits"))?;
        let id = KeyId::from_string(id);
        if keys.iter().any(|k| k.id == id) {
            return Err(KeyError::DuplicateId {
                path: path.to_path_buf(),
                line: line_no,
                id,
            });
        }
        keys.push(Kek { id, key });
    }
    if keys.is_empty() {
        return Err(KeyError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(keys)
}

fn parse_hex32(s: &str) -> Option<[u8; KEY_LEN]> {
    let b = s.as_bytes();
    if b.len() != 2 * KEY_LEN {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        // Both digits are < 16, so the value fits a byte.
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_round_trip() {
        let kek = Kek::generate().unwrap();
        let dek = Dek::generate().unwrap();
        let w = kek.wrap(&dek);
        assert_eq!(w.0.len(), WRAPPED_DEK_LEN);
        assert_ne!(
            &w.0[8..],
            dek.as_bytes(),
            "wrapped key must not contain the key"
        );
        let back = kek.unwrap(&w).unwrap();
        assert_eq!(back.as_bytes(), dek.as_bytes());
    }

    #[test]
    fn rfc3394_vector_256_bit_kek_256_bit_data() {
        // RFC 3394 section 4.6.
        let kek = Kek::from_bytes(
            KeyId::from_string("kek-test"),
            parse_hex32("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
                .unwrap(),
        );
        let dek = Dek::from_bytes(
            parse_hex32("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
                .unwrap(),
        );
        assert_eq!(
            kek.wrap(&dek).to_hex(),
            "28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21"
        );
    }

    #[test]
    fn unwrap_with_wrong_kek_fails() {
        let a = Kek::generate().unwrap();
        let b = Kek::generate().unwrap();
        let w = a.wrap(&Dek::generate().unwrap());
        assert!(matches!(b.unwrap(&w), Err(KeyError::UnwrapFailed)));
        let mut bad = w.clone();
        bad.0[20] ^= 1;
        assert!(matches!(a.unwrap(&bad), Err(KeyError::UnwrapFailed)));
        assert!(matches!(
            a.unwrap(&WrappedDek(vec![0; 24])),
            Err(KeyError::WrappedLength(24))
        ));
    }

    #[test]
    fn debug_does_not_print_key_bytes() {
        let dek = Dek::from_bytes([0xab; 32]);
        let kek = Kek::from_bytes(KeyId::from_string("kek-x"), [0xcd; 32]);
        let s = format!("{dek:?} {kek:?}");
        assert!(!s.contains("ab") && !s.contains("171"), "{s}");
        assert!(!s.contains("cd") && !s.contains("205"), "{s}");
        assert!(s.contains("kek-x"));
    }

    #[cfg(unix)]
    #[test]
    fn create_sets_0600_and_refuses_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/kek.key");
        let ring = Keyring::create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            Keyring::create(&path),
            Err(KeyError::AlreadyExists { .. })
        ));
        let loaded = Keyring::load(&path).unwrap();
        assert_eq!(loaded.active().id(), ring.active().id());
        assert!(!loaded.permissions_too_open());
        // A DEK wrapped by the created ring unwraps with the loaded one.
        let dek = Dek::generate().unwrap();
        let w = ring.active().wrap(&dek);
        let back = loaded.unwrap_dek(ring.active().id(), &w).unwrap();
        assert_eq!(back.as_bytes(), dek.as_bytes());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Keyring::load(&path).unwrap().permissions_too_open());
    }

    #[test]
    fn rotate_appends_active_key_and_keeps_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek.key");
        let (first, created) = Keyring::load_or_create_dev(&path).unwrap();
        assert!(created);
        let (_, created) = Keyring::load_or_create_dev(&path).unwrap();
        assert!(!created);
        let dek = Dek::generate().unwrap();
        let w = first.active().wrap(&dek);

        let rotated = Keyring::rotate(&path).unwrap();
        assert_ne!(rotated.active().id(), first.active().id());
        let loaded = Keyring::load(&path).unwrap();
        assert_eq!(loaded.active().id(), rotated.active().id());
        assert_eq!(loaded.ids().count(), 2);
        // Re-wrap only: old key unwraps, new key wraps.
        let d = loaded.unwrap_dek(first.active().id(), &w).unwrap();
        let w2 = loaded.active().wrap(&d);
        let d2 = loaded.unwrap_dek(rotated.active().id(), &w2).unwrap();
        assert_eq!(d2.as_bytes(), dek.as_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let unknown = KeyId::from_string("kek-nope");
        assert!(matches!(
            loaded.unwrap_dek(&unknown, &w),
            Err(KeyError::UnknownKey(_))
        ));
    }

    #[test]
    fn parse_errors_name_line_not_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek.key");
        let secretish = "callgate-kek-v1 kek-a 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeZZ";
        fs::write(&path, format!("# comment\n\n{secretish}\n")).unwrap();
        let err = Keyring::load(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, KeyError::Parse { line: 3, .. }), "{msg}");
        assert!(
            msg.contains("kek.key") && !msg.contains("00112233"),
            "{msg}"
        );

        fs::write(&path, "# only comments\n").unwrap();
        assert!(matches!(Keyring::load(&path), Err(KeyError::Empty { .. })));

        let k = "00".repeat(32);
        fs::write(
            &path,
            format!("callgate-kek-v1 kek-a {k}\ncallgate-kek-v1 kek-a {k}\n"),
        )
        .unwrap();
        assert!(matches!(
            Keyring::load(&path),
            Err(KeyError::DuplicateId { line: 2, .. })
        ));

        fs::write(
            &path,
            format!(
                "callgate-kek-v1 kek-a {k}\n  callgate-kek-v1 kek-b {}  \n",
                "11".repeat(32)
            ),
        )
        .unwrap();
        let ring = Keyring::load(&path).unwrap();
        assert_eq!(ring.active().id().as_str(), "kek-b");
        assert!(ring.get(&KeyId::from_string("kek-a")).is_some());
    }
}
