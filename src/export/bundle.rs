//! The ZIP side of bundles: [`BundleWriter`] (a private temporary file, published without
//! replacing anything) and [`verify`] (streams every file through SHA-256, re-authenticates and
//! re-renders every recording).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use super::{
    AUDIT, AuditExcerpt, Ending, ExportEntryFacts, FileFacts, MANIFEST, MAX_FILES, MAX_JSON_BYTES,
    Manifest, Problem, check_audit, check_manifest, safe_name, sha256_hex,
};
use crate::audit::{decode_hex32, hex};
use crate::recording::keys::Dek;
use crate::recording::reader::{ReadStatus, read};
use crate::recording::wav::render_stereo_wav;

/// IO failures (the bundle's content problems are [`Problem`]s, not errors).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: already exists; an evidence bundle is never overwritten, choose a new name", .0.display())]
    Exists(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: writing the ZIP: {source}", path.display())]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `path` exclusively with mode 0600 (bundles hold call audio: personal data).
pub fn create_private(path: &Path) -> io::Result<File> {
    let mut o = fs::OpenOptions::new();
    o.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// A private (0600) temporary file, removed when dropped.
pub struct PrivateTemp(PathBuf);

impl PrivateTemp {
    pub fn create(path: PathBuf) -> io::Result<PrivateTemp> {
        create_private(&path)?;
        Ok(PrivateTemp(path))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateTemp {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A private file beside `near` (same filesystem, so it can be linked into place).
pub fn temp_beside(near: &Path, what: &str) -> PathBuf {
    let name = near
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    near.with_file_name(format!(".{name}.{what}-{}", crate::ids::random_hex(4)))
}

/// Copies `r` into `w`, returning (bytes, SHA-256).
fn copy_hashing(r: &mut impl Read, w: &mut impl Write) -> io::Result<(u64, [u8; 32])> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
    Ok((n, h.finalize().into()))
}

/// Writes a bundle into a temporary file beside `out`; [`BundleWriter::publish`] links it to
/// `out` (failing if `out` appeared meanwhile). Dropped unpublished, the temporary file is
/// removed: a failed export leaves nothing behind.
pub struct BundleWriter {
    out: PathBuf,
    tmp: PathBuf,
    zip: Option<zip::ZipWriter<File>>,
    files: Vec<FileFacts>,
}

impl BundleWriter {
    pub fn create(out: &Path) -> Result<BundleWriter, BundleError> {
        if out.exists() {
            return Err(BundleError::Exists(out.to_path_buf()));
        }
        let tmp = temp_beside(out, "partial");
        let f = create_private(&tmp).map_err(io_err(out))?;
        Ok(BundleWriter {
            out: out.to_path_buf(),
            tmp,
            zip: Some(zip::ZipWriter::new(f)),
            files: Vec::new(),
        })
    }

    fn options() -> SimpleFileOptions {
        SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o600)
            // Recordings of many hours exceed 4 GiB only rarely, but a WAV over the limit
            // without ZIP64 would fail late; the extra field costs 20 bytes.
            .large_file(true)
    }

    fn zip(&mut self) -> &mut zip::ZipWriter<File> {
        // Invariant: `zip` is only taken by `publish`, which consumes self.
        self.zip.as_mut().expect("bundle writer already finished")
    }

    fn start(&mut self, name: &str) -> Result<(), BundleError> {
        let out = self.out.clone();
        self.zip()
            .start_file(name, Self::options())
            .map_err(|source| BundleError::Zip { path: out, source })
    }

    /// Adds a file listed in the manifest, from memory.
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), BundleError> {
        self.start(name)?;
        let out = self.out.clone();
        self.zip().write_all(bytes).map_err(io_err(&out))?;
        self.files.push(FileFacts {
            name: name.to_owned(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        });
        Ok(())
    }

    /// Adds a file listed in the manifest, streamed from `src`.
    pub fn add_file(&mut self, name: &str, src: &Path) -> Result<(), BundleError> {
        let mut f = File::open(src).map_err(io_err(src))?;
        self.start(name)?;
        let out = self.out.clone();
        let (bytes, h) = copy_hashing(&mut f, self.zip()).map_err(io_err(&out))?;
        self.files.push(FileFacts {
            name: name.to_owned(),
            bytes,
            sha256: hex(&h),
        });
        Ok(())
    }

    /// Adds `manifest.json` or `audit.json` (not listed in the manifest's files).
    pub fn add_unlisted(&mut self, name: &str, bytes: &[u8]) -> Result<(), BundleError> {
        self.start(name)?;
        let out = self.out.clone();
        self.zip().write_all(bytes).map_err(io_err(&out))
    }

    /// The files added so far, for the manifest.
    pub fn files(&self) -> &[FileFacts] {
        &self.files
    }

    /// Finishes the ZIP, syncs it, and links it to `out` without replacing anything.
    pub fn publish(mut self) -> Result<u64, BundleError> {
        let out = self.out.clone();
        let zip = self.zip.take().expect("bundle writer already finished");
        let f = zip.finish().map_err(|source| BundleError::Zip {
            path: out.clone(),
            source,
        })?;
        f.sync_all().map_err(io_err(&out))?;
        let size = f.metadata().map_err(io_err(&out))?.len();
        drop(f);
        fs::hard_link(&self.tmp, &out).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                BundleError::Exists(out.clone())
            } else {
                BundleError::Io {
                    path: out.clone(),
                    source: e,
                }
            }
        })?;
        let _ = fs::remove_file(&self.tmp);
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            // The new name survives a crash only once its directory is synced.
            let _ = d.sync_all();
        }
        Ok(size)
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// What [`verify`] found. `problems` empty: the bundle is intact.
#[derive(Debug)]
pub struct Verified {
    pub manifest: Option<Manifest>,
    pub excerpt: Option<AuditExcerpt>,
    pub export: Option<ExportEntryFacts>,
    pub problems: Vec<Problem>,
    /// Files whose size and SHA-256 matched.
    pub files_ok: usize,
    /// Recordings that authenticated and re-rendered to their WAV.
    pub recordings_ok: usize,
}

impl Verified {
    fn unreadable(s: impl Into<String>) -> Verified {
        Verified {
            manifest: None,
            excerpt: None,
            export: None,
            problems: vec![Problem::Unreadable(s.into())],
            files_ok: 0,
            recordings_ok: 0,
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned, R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    index: Option<usize>,
    name: &str,
) -> Result<(Vec<u8>, T), String> {
    let i = index.ok_or_else(|| format!("{name} is missing: not a callgate bundle"))?;
    let f = zip.by_index(i).map_err(|e| format!("{name}: {e}"))?;
    if f.size() > MAX_JSON_BYTES {
        return Err(format!("{name} is {} bytes, above the limit", f.size()));
    }
    let mut bytes = Vec::new();
    f.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    let v = serde_json::from_slice(&bytes).map_err(|e| format!("{name}: {e}"))?;
    Ok((bytes, v))
}

/// Checks a bundle (see the module docs of [`super`]). `Err` only when the file cannot be
/// opened at all; everything about its content is in [`Verified::problems`].
pub fn verify(path: &Path) -> Result<Verified, BundleError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut zip = match zip::ZipArchive::new(file) {
        Ok(z) => z,
        Err(e) => return Ok(Verified::unreadable(format!("not a ZIP file ({e})"))),
    };
    if zip.len() > MAX_FILES + 2 {
        return Ok(Verified::unreadable(format!(
            "{} files in the ZIP",
            zip.len()
        )));
    }
    let mut problems = Vec::new();
    // Name → index, from the ZIP's own directory (names checked before anything is used).
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..zip.len() {
        let name = match zip.by_index_raw(i) {
            Ok(f) => match f.name() {
                Ok(n) => n.to_string(),
                Err(e) => {
                    problems.push(Problem::Unreadable(format!("entry {i}: {e}")));
                    continue;
                }
            },
            Err(e) => {
                problems.push(Problem::Unreadable(format!("entry {i}: {e}")));
                continue;
            }
        };
        if !safe_name(&name) {
            problems.push(Problem::UnsafeName(name));
        } else if index.insert(name.clone(), i).is_some() {
            problems.push(Problem::DuplicateName(name));
        }
    }
    let (manifest_bytes, manifest) =
        match read_json::<Manifest, _>(&mut zip, index.get(MANIFEST).copied(), MANIFEST) {
            Ok(v) => v,
            Err(s) => {
                let mut v = Verified::unreadable(s);
                v.problems.extend(problems);
                return Ok(v);
            }
        };
    problems.extend(check_manifest(&manifest));
    let manifest_sha = sha256_hex(&manifest_bytes);
    let (excerpt, export) =
        match read_json::<AuditExcerpt, _>(&mut zip, index.get(AUDIT).copied(), AUDIT) {
            Ok((_, ex)) => {
                let (facts, p) = check_audit(&manifest, &manifest_sha, &ex);
                problems.extend(p);
                (Some(ex), facts)
            }
            Err(s) => {
                problems.push(Problem::Unreadable(s));
                (None, None)
            }
        };

    // Every file: listed, present, same size and hash.
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    for name in index.keys() {
        if name != MANIFEST && name != AUDIT && !listed.contains(name.as_str()) {
            problems.push(Problem::ExtraFile(name.clone()));
        }
    }
    let mut files_ok = 0;
    let mut good_files = BTreeSet::new();
    for f in &manifest.files {
        let Some(&i) = index.get(&f.name) else {
            problems.push(Problem::MissingFile(f.name.clone()));
            continue;
        };
        let mut entry = match zip.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                problems.push(Problem::Unreadable(format!("{}: {e}", f.name)));
                continue;
            }
        };
        match copy_hashing(&mut entry, &mut io::sink()) {
            Ok((n, _)) if n != f.bytes => problems.push(Problem::FileChanged {
                name: f.name.clone(),
                what: "size differs from the manifest",
            }),
            Ok((_, h)) if hex(&h) != f.sha256 => problems.push(Problem::FileChanged {
                name: f.name.clone(),
                what: "SHA-256 differs from the manifest (content changed)",
            }),
            Ok(_) => {
                files_ok += 1;
                good_files.insert(f.name.as_str());
            }
            Err(e) => problems.push(Problem::Unreadable(format!("{}: {e}", f.name))),
        }
    }

    // Every recording: authenticate the container, then re-render and compare the WAV.
    let mut recordings_ok = 0;
    for r in &manifest.recordings {
        if !good_files.contains(r.container.as_str()) || !good_files.contains(r.wav.as_str()) {
            continue; // already reported
        }
        let bad = |problem: String| Problem::Recording {
            id: r.recording_id.clone(),
            problem,
        };
        let Some(key) = decode_hex32(&r.data_key) else {
            continue; // reported by check_manifest
        };
        let mut bytes = Vec::new();
        if let Err(e) = zip
            .by_index(index[&r.container])
            .map_err(io::Error::other)
            .and_then(|mut e| e.read_to_end(&mut bytes))
        {
            problems.push(Problem::Unreadable(format!("{}: {e}", r.container)));
            continue;
        }
        if let Some(h) = &r.sha256_at_hangup
            && *h != sha256_hex(&bytes)
        {
            problems.push(bad(
                "the container is not the file the gateway sealed at hangup (SHA-256 differs)"
                    .into(),
            ));
            continue;
        }
        let outcome = read(&bytes, &Dek::from_bytes(key));
        drop(bytes);
        match (&outcome.status, r.ending) {
            (ReadStatus::Complete, Ending::Complete) => {}
            (ReadStatus::Truncated { chunks_ok }, Ending::Truncated) if *chunks_ok == r.chunks => {}
            (status, ending) => {
                problems.push(bad(format!(
                    "the container is {status}, the manifest says {ending}"
                )));
                continue;
            }
        }
        if outcome.chunks_ok != r.chunks {
            problems.push(bad(format!(
                "{} chunks authenticate, the manifest says {}",
                outcome.chunks_ok, r.chunks
            )));
            continue;
        }
        if outcome.header.as_ref().map(|h| h.recording_id.as_str()) != Some(&r.recording_id) {
            problems.push(bad("the container's header names another recording".into()));
            continue;
        }
        match rendered_sha256(&outcome) {
            Ok(h) => {
                let want = manifest.files.iter().find(|f| f.name == r.wav);
                if want.is_some_and(|f| f.sha256 == h) {
                    recordings_ok += 1;
                } else {
                    problems.push(bad(
                        "the WAV is not what the container renders to (audio changed)".into(),
                    ));
                }
            }
            Err(e) => problems.push(bad(format!("cannot re-render the container: {e}"))),
        }
    }
    Ok(Verified {
        manifest: Some(manifest),
        excerpt,
        export,
        problems,
        files_ok,
        recordings_ok,
    })
}

/// Renders to a private temporary WAV (hound needs to seek back for its header) and hashes it.
fn rendered_sha256(outcome: &crate::recording::reader::ReadOutcome) -> Result<String, String> {
    let path =
        std::env::temp_dir().join(format!("callgate-verify-{}.wav", crate::ids::random_hex(8)));
    let tmp = PrivateTemp::create(path.clone()).map_err(|e| format!("{}: {e}", path.display()))?;
    render_stereo_wav(outcome, tmp.path()).map_err(|e| e.to_string())?;
    let mut f = File::open(tmp.path()).map_err(|e| e.to_string())?;
    copy_hashing(&mut f, &mut io::sink())
        .map(|(_, h)| hex(&h))
        .map_err(|e| e.to_string())
}
