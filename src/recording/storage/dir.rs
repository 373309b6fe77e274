//! Recordings as files in one local directory: flat, `<root>/<recording-id>.cgrec`. Also the
//! spool of the S3 backend. Recording ids are checked to be `[A-Za-z0-9_-]{1,128}`, so an id
//! typed by a user can never name a path outside the root.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{EXTENSION, StorageError};
use crate::ids::RecordingId;

/// Recordings as files in one directory.
#[derive(Clone, Debug)]
pub struct DirStorage {
    root: PathBuf,
}

/// The id as a file stem, or why it cannot be one.
pub(super) fn checked_id(id: &RecordingId) -> Result<&str, StorageError> {
    let s = id.as_str();
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s)
    } else {
        Err(StorageError::InvalidId(s.to_owned()))
    }
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
        let s = checked_id(id)?;
        Ok(self.root.join(format!("{s}.{EXTENSION}")))
    }

    fn io_error(path: &Path, source: io::Error) -> StorageError {
        StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A missing file is `NotFound` (naming the recording), anything else an IO error.
    fn read_error(id: &RecordingId, path: &Path, source: io::Error) -> StorageError {
        match source.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound {
                id: id.clone(),
                location: path.display().to_string(),
            },
            _ => Self::io_error(path, source),
        }
    }

    /// Creates the file for a new recording (never overwrites; parents created; mode 0600).
    pub fn create(&self, id: &RecordingId) -> Result<File, StorageError> {
        let path = self.path_for(id)?;
        fs::create_dir_all(&self.root).map_err(|e| Self::io_error(&self.root, e))?;
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
                location: path.display().to_string(),
            },
            _ => Self::io_error(&path, source),
        })
    }

    /// Opens an existing recording for reading.
    pub fn open_read(&self, id: &RecordingId) -> Result<File, StorageError> {
        let path = self.path_for(id)?;
        File::open(&path).map_err(|e| Self::read_error(id, &path, e))
    }

    /// Reads a whole recording into memory.
    pub fn read_all(&self, id: &RecordingId) -> Result<Vec<u8>, StorageError> {
        let path = self.path_for(id)?;
        fs::read(&path).map_err(|e| Self::read_error(id, &path, e))
    }

    /// Whether the recording's file exists (an unreadable directory counts as an error).
    pub fn exists(&self, id: &RecordingId) -> Result<bool, StorageError> {
        let path = self.path_for(id)?;
        path.try_exists().map_err(|e| Self::io_error(&path, e))
    }

    /// Removes a recording's file; already gone is fine.
    pub fn remove(&self, id: &RecordingId) -> Result<(), StorageError> {
        let path = self.path_for(id)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Self::io_error(&path, source)),
        }
    }

    /// The recordings present, by file name (other files are ignored). A missing directory is
    /// an empty one.
    pub fn list(&self) -> Result<Vec<RecordingId>, StorageError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io_error(&self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Self::io_error(&self.root, e))?;
            let name = entry.file_name();
            let Some(stem) = name
                .to_str()
                .and_then(|n| n.strip_suffix(EXTENSION))
                .and_then(|n| n.strip_suffix('.'))
            else {
                continue;
            };
            let id = RecordingId::from_string(stem);
            if checked_id(&id).is_ok() {
                out.push(id);
            }
        }
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn create_then_read_list_remove_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let d = DirStorage::new(dir.path().join("recordings/sub"));
        assert!(d.list().unwrap().is_empty(), "a missing directory is empty");
        let id = RecordingId::new_random();
        d.create(&id).unwrap().write_all(b"abc").unwrap();
        let mut got = String::new();
        d.open_read(&id).unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "abc");
        assert_eq!(d.read_all(&id).unwrap(), b"abc");
        assert!(matches!(
            d.create(&id),
            Err(StorageError::AlreadyExists { .. })
        ));
        assert_eq!(
            d.path_for(&id).unwrap(),
            dir.path().join(format!("recordings/sub/{id}.cgrec"))
        );
        std::fs::write(d.root().join("notes.txt"), b"x").unwrap();
        std::fs::write(d.root().join("bad id.cgrec"), b"x").unwrap();
        assert_eq!(d.list().unwrap(), vec![id.clone()]);
        assert!(d.exists(&id).unwrap());
        d.remove(&id).unwrap();
        d.remove(&id).unwrap();
        assert!(!d.exists(&id).unwrap());
        assert!(matches!(
            d.open_read(&RecordingId::new_random()),
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
