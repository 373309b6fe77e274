//! Where recording files live. Today a local directory; an S3 backend can join [`Storage`].
//!
//! Layout of [`DirStorage`]: flat, `<root>/<recording-id>.cgrec`. Recording ids are checked to
//! be `[A-Za-z0-9_-]{1,128}`, so an id typed by a user can never name a path outside the root.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::ids::RecordingId;

/// File extension of recording containers.
pub const EXTENSION: &str = "cgrec";

/// Storage errors; each names the recording or path.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("recording id {0:?} is not a valid file name (allowed: A-Z a-z 0-9 _ -)")]
    InvalidId(String),
    #[error("recording {id} already exists at {path}")]
    AlreadyExists { id: RecordingId, path: PathBuf },
    #[error("recording {id} not found at {path}")]
    NotFound { id: RecordingId, path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Recordings as files in one directory.
#[derive(Clone, Debug)]
pub struct DirStorage {
    root: PathBuf,
}

impl DirStorage {
    pub fn new(root: impl Into<PathBuf>) -> DirStorage {
        DirStorage { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<id>.cgrec`, after checking the id is a safe file name.
    pub fn path_for(&self, id: &RecordingId) -> Result<PathBuf, StorageError> {
        let s = id.as_str();
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(StorageError::InvalidId(s.to_owned()));
        }
        Ok(self.root.join(format!("{s}.{EXTENSION}")))
    }

    /// Creates the file for a new recording (never overwrites; parents created; mode 0600).
    pub fn create(&self, id: &RecordingId) -> Result<File, StorageError> {
        let path = self.path_for(id)?;
        fs::create_dir_all(&self.root).map_err(|source| StorageError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut o = fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        o.open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => StorageError::AlreadyExists {
                id: id.clone(),
                path: path.clone(),
            },
            _ => StorageError::Io {
                path: path.clone(),
                source,
            },
        })
    }

    /// Opens an existing recording for reading.
    pub fn open_read(&self, id: &RecordingId) -> Result<File, StorageError> {
        let path = self.path_for(id)?;
        File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound {
                id: id.clone(),
                path: path.clone(),
            },
            _ => StorageError::Io {
                path: path.clone(),
                source,
            },
        })
    }

    /// Reads a whole recording into memory.
    pub fn read_all(&self, id: &RecordingId) -> Result<Vec<u8>, StorageError> {
        let mut f = self.open_read(id)?;
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut f, &mut buf).map_err(|source| StorageError::Io {
            path: self.root.join(format!("{id}.{EXTENSION}")),
            source,
        })?;
        Ok(buf)
    }
}

/// A storage backend. Only a directory today; `S3` comes later.
#[derive(Clone, Debug)]
pub enum Storage {
    Dir(DirStorage),
}

impl Storage {
    pub fn create(&self, id: &RecordingId) -> Result<File, StorageError> {
        match self {
            Storage::Dir(d) => d.create(id),
        }
    }
    pub fn open_read(&self, id: &RecordingId) -> Result<File, StorageError> {
        match self {
            Storage::Dir(d) => d.open_read(id),
        }
    }
    pub fn read_all(&self, id: &RecordingId) -> Result<Vec<u8>, StorageError> {
        match self {
            Storage::Dir(d) => d.read_all(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn create_then_read_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::Dir(DirStorage::new(dir.path().join("recordings/sub")));
        let id = RecordingId::new_random();
        s.create(&id).unwrap().write_all(b"abc").unwrap();
        let mut got = String::new();
        s.open_read(&id).unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "abc");
        assert_eq!(s.read_all(&id).unwrap(), b"abc");
        assert!(matches!(
            s.create(&id),
            Err(StorageError::AlreadyExists { .. })
        ));
        let Storage::Dir(d) = &s;
        assert_eq!(
            d.path_for(&id).unwrap(),
            dir.path().join(format!("recordings/sub/{id}.cgrec"))
        );
        assert!(matches!(
            s.open_read(&RecordingId::new_random()),
            Err(StorageError::NotFound { .. })
        ));
    }

    #[test]
    fn path_traversal_ids_rejected() {
        let d = DirStorage::new("/tmp/x");
        for bad in ["../etc/passwd", "a/b", "", ".", "..", "a b", "x\0y", "é"] {
            assert!(
                matches!(
                    d.path_for(&RecordingId::from_string(bad)),
                    Err(StorageError::InvalidId(_))
                ),
                "{bad:?}"
            );
        }
    }
}
