//! Recordings in an S3 bucket (AWS or any S3-compatible server), written through a local spool.
//!
//! Object key: `<prefix>/<recording-id>.cgrec`. The object holds exactly the bytes of the
//! sealed container: encryption happened before the file was written, so the bucket (and its
//! backups and replicas) only ever sees ciphertext, and deleting the key row shreds every copy.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

use super::dir::checked_id;
use super::{DirStorage, EXTENSION, StorageError, blocking};
use crate::config::S3Config;
use crate::ids::RecordingId;

/// Files up to this size go up in one request; larger ones in parts (an eight-hour call is
/// about 500 MB, more than one request should carry).
pub const MULTIPART_THRESHOLD: usize = 32 * 1024 * 1024;
const PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts in flight per upload: bounds the memory an upload holds (2 × 16 MiB).
const PARTS_IN_FLIGHT: usize = 2;
/// Deletions in flight per batch.
const DELETES_IN_FLIGHT: usize = 16;

/// Access keys given in code (tests, tools); the gateway reads them from the environment.
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// An S3 bucket and prefix, plus the local spool recordings are written to first.
#[derive(Clone)]
pub struct S3Storage {
    objects: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    spool: DirStorage,
    multipart_threshold: usize,
    /// Set by the uploader when it runs in this process (`serve`).
    uploads: Arc<OnceLock<mpsc::Sender<RecordingId>>>,
}

impl fmt::Debug for S3Storage {
    // The client is left out: it holds credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("spool", &self.spool.root())
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    /// Credentials and (unless configured) region and endpoint from the `AWS_*` environment
    /// variables, or the instance's role.
    pub fn from_config(c: &S3Config) -> Result<S3Storage, StorageError> {
        S3Storage::build(c, None)
    }

    /// As [`S3Storage::from_config`], with the access keys given.
    pub fn with_credentials(c: &S3Config, creds: S3Credentials) -> Result<S3Storage, StorageError> {
        S3Storage::build(c, Some(creds))
    }

    fn build(c: &S3Config, creds: Option<S3Credentials>) -> Result<S3Storage, StorageError> {
        // Bounded: a CLI read or an upload fails within about a minute when the server is
        // away; the uploader retries on its own schedule, keeping the spool file. (Client
        // options first: the builder's own settings below write into them.)
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            })
            .with_bucket_name(&c.bucket);
        if let Some(endpoint) = &c.endpoint {
            // Plain HTTP only when the operator wrote an http:// endpoint: the objects are
            // ciphertext and requests are signed, but the choice is theirs to make.
            let http = endpoint.to_ascii_lowercase().starts_with("http://");
            b = b.with_endpoint(endpoint).with_allow_http(http);
        }
        if let Some(region) = &c.region {
            b = b.with_region(region);
        }
        if let Some(k) = creds {
            b = b
                .with_access_key_id(k.access_key_id)
                .with_secret_access_key(k.secret_access_key);
        }
        let objects = b
            .build()
            .map_err(|e| StorageError::Setup(format!("s3://{}: {e}", c.bucket)))?;
        Ok(S3Storage::with_store(
            Arc::new(objects),
            &c.bucket,
            &c.prefix,
            DirStorage::new(&c.spool),
        ))
    }

    /// Over any object store (unit tests use an in-memory one).
    pub fn with_store(
        objects: Arc<dyn ObjectStore>,
        bucket: &str,
        prefix: &str,
        spool: DirStorage,
    ) -> S3Storage {
        S3Storage {
            objects,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            spool,
            multipart_threshold: MULTIPART_THRESHOLD,
            uploads: Arc::new(OnceLock::new()),
        }
    }

    /// Uploads above `bytes` go in parts (tests lower it to exercise multipart uploads).
    pub fn set_multipart_threshold(&mut self, bytes: usize) {
        self.multipart_threshold = bytes.max(1);
    }

    pub fn spool(&self) -> &DirStorage {
        &self.spool
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn name(&self, id: &str) -> String {
        if self.prefix.is_empty() {
            format!("{id}.{EXTENSION}")
        } else {
            format!("{}/{id}.{EXTENSION}", self.prefix)
        }
    }

    /// The object key of a recording, after checking the id is a safe name.
    pub fn key(&self, id: &RecordingId) -> Result<ObjectPath, StorageError> {
        let id = checked_id(id)?;
        ObjectPath::parse(self.name(id)).map_err(|e| StorageError::Object {
            location: self.name(id),
            source: e.into(),
        })
    }

    /// `s3://bucket/prefix/<id>.cgrec`.
    pub fn url(&self, id: &RecordingId) -> String {
        format!("s3://{}/{}", self.bucket, self.name(id.as_str()))
    }

    fn object_error(&self, id: &RecordingId, e: object_store::Error) -> StorageError {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound {
                id: id.clone(),
                location: self.url(id),
            },
            source => StorageError::Object {
                location: self.url(id),
                source,
            },
        }
    }

    /// The spool's copy if there is one (not uploaded yet, or still being written), else the
    /// object.
    pub async fn read_all(&self, id: &RecordingId) -> Result<Vec<u8>, StorageError> {
        let (spool, rid) = (self.spool.clone(), id.clone());
        match blocking(move || spool.read_all(&rid)).await {
            Ok(bytes) => return Ok(bytes),
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let key = self.key(id)?;
        let got = self
            .objects
            .get(&key)
            .await
            .map_err(|e| self.object_error(id, e))?;
        let bytes = got.bytes().await.map_err(|e| self.object_error(id, e))?;
        Ok(bytes.to_vec())
    }

    /// Whether the bucket holds the recording.
    pub async fn object_exists(&self, id: &RecordingId) -> Result<bool, StorageError> {
        match self.objects.head(&self.key(id)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.object_error(id, e)),
        }
    }

    /// Copies the spool file to the bucket (overwriting: the bytes are the same) and returns
    /// its size. The spool file stays; the caller removes it once the upload is known good.
    pub async fn upload(&self, id: &RecordingId) -> Result<u64, StorageError> {
        let key = self.key(id)?;
        let path = self.spool.path_for(id)?;
        let io = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound {
                id: id.clone(),
                location: path.display().to_string(),
            },
            _ => StorageError::Io {
                path: path.clone(),
                source,
            },
        };
        let mut file = tokio::fs::File::open(&path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        if len <= self.multipart_threshold as u64 {
            let mut buf = Vec::with_capacity(len as usize);
            file.read_to_end(&mut buf).await.map_err(io)?;
            self.objects
                .put(&key, PutPayload::from(buf))
                .await
                .map_err(|e| self.object_error(id, e))?;
            return Ok(len);
        }
        let part = PART_SIZE.min(self.multipart_threshold.max(5 * 1024 * 1024));
        let upload = self
            .objects
            .put_multipart(&key)
            .await
            .map_err(|e| self.object_error(id, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, part);
        let mut buf = vec![0u8; 1024 * 1024];
        let mut sent = 0u64;
        let failed = loop {
            let n = match file.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => n,
                Err(e) => break Some(io(e)),
            };
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                break Some(self.object_error(id, e));
            }
            w.write(&buf[..n]);
            sent += n as u64;
        };
        if let Some(e) = failed {
            // Not completing leaves no object; abort frees the parts already stored.
            let _ = w.abort().await;
            return Err(e);
        }
        w.finish().await.map_err(|e| self.object_error(id, e))?;
        Ok(sent)
    }

    /// Removes the object and any spool copy; already gone is fine.
    pub async fn remove(&self, id: &RecordingId) -> Result<(), StorageError> {
        match self.objects.delete(&self.key(id)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.object_error(id, e)),
        }
        let (spool, id) = (self.spool.clone(), id.clone());
        blocking(move || spool.remove(&id)).await
    }

    /// [`S3Storage::remove`] for many, a few at a time; one result per id, in order.
    pub async fn remove_many(&self, ids: &[RecordingId]) -> Vec<Result<(), StorageError>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(DELETES_IN_FLIGHT) {
            let mut set = tokio::task::JoinSet::new();
            for (i, id) in chunk.iter().enumerate() {
                let (me, id) = (self.clone(), id.clone());
                set.spawn(async move { (i, me.remove(&id).await) });
            }
            let mut results: Vec<Option<Result<(), StorageError>>> =
                (0..chunk.len()).map(|_| None).collect();
            while let Some(joined) = set.join_next().await {
                if let Ok((i, r)) = joined {
                    results[i] = Some(r);
                }
            }
            out.extend(results.into_iter().map(|r| {
                r.unwrap_or_else(|| Err(StorageError::Setup("a deletion task failed".into())))
            }));
        }
        out
    }

    pub(super) fn set_upload_queue(&self, tx: mpsc::Sender<RecordingId>) -> bool {
        self.uploads.set(tx).is_ok()
    }

    pub(super) fn queue_upload(&self, id: &RecordingId) {
        if let Some(tx) = self.uploads.get() {
            // Full or closed: the spool file stays and the uploader's next scan finds it.
            let _ = tx.try_send(id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use std::io::Write as _;

    fn storage(dir: &std::path::Path) -> (S3Storage, Arc<InMemory>) {
        let mem = Arc::new(InMemory::new());
        let s = S3Storage::with_store(mem.clone(), "calls", "/site-1/rec/", DirStorage::new(dir));
        (s, mem)
    }

    fn spool_file(s: &S3Storage, id: &RecordingId, bytes: &[u8]) {
        s.spool().create(id).unwrap().write_all(bytes).unwrap();
    }

    #[tokio::test]
    async fn a_spooled_recording_is_readable_before_and_after_its_upload() {
        let dir = tempfile::tempdir().unwrap();
        let (s, mem) = storage(dir.path());
        let id = RecordingId::from_string("rec-1");
        assert_eq!(s.url(&id), "s3://calls/site-1/rec/rec-1.cgrec");
        assert!(
            matches!(s.read_all(&id).await, Err(StorageError::NotFound { location, .. }) if location == s.url(&id))
        );
        spool_file(&s, &id, b"sealed bytes");
        assert_eq!(
            s.read_all(&id).await.unwrap(),
            b"sealed bytes",
            "from the spool"
        );
        assert!(!s.object_exists(&id).await.unwrap());
        assert_eq!(s.upload(&id).await.unwrap(), 12);
        let key = ObjectPath::from("site-1/rec/rec-1.cgrec");
        assert_eq!(
            mem.get(&key).await.unwrap().bytes().await.unwrap().as_ref(),
            b"sealed bytes"
        );
        s.spool().remove(&id).unwrap();
        assert_eq!(
            s.read_all(&id).await.unwrap(),
            b"sealed bytes",
            "from the bucket"
        );
        s.remove(&id).await.unwrap();
        s.remove(&id).await.unwrap();
        assert!(!s.object_exists(&id).await.unwrap());
        assert!(matches!(
            s.read_all(&id).await,
            Err(StorageError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn large_recordings_go_up_in_parts_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = storage(dir.path());
        s.set_multipart_threshold(1024);
        let id = RecordingId::from_string("rec-big");
        let bytes: Vec<u8> = (0..12 * 1024 * 1024 + 17)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        spool_file(&s, &id, &bytes);
        assert_eq!(s.upload(&id).await.unwrap(), bytes.len() as u64);
        s.spool().remove(&id).unwrap();
        assert!(
            s.read_all(&id).await.unwrap() == bytes,
            "the object is the file"
        );
    }

    #[tokio::test]
    async fn removal_takes_object_and_spool_copy_and_reports_per_id() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = storage(dir.path());
        let ids: Vec<RecordingId> = (0..40)
            .map(|i| RecordingId::from_string(format!("rec-{i}")))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            spool_file(&s, id, b"x");
            if i % 2 == 0 {
                s.upload(id).await.unwrap();
            }
        }
        let mut asked = ids.clone();
        asked.push(RecordingId::from_string("../escape"));
        let r = s.remove_many(&asked).await;
        assert_eq!(r.len(), 41);
        assert!(r[..40].iter().all(Result::is_ok));
        assert!(matches!(r[40], Err(StorageError::InvalidId(_))));
        for id in &ids {
            assert!(!s.object_exists(id).await.unwrap() && !s.spool().exists(id).unwrap());
        }
    }

    #[test]
    fn keys_refuse_unsafe_ids_and_omit_an_empty_prefix() {
        let mem = Arc::new(InMemory::new());
        let s = S3Storage::with_store(mem, "calls", "", DirStorage::new("/nonexistent"));
        assert_eq!(
            s.key(&RecordingId::from_string("rec-a")).unwrap().as_ref(),
            "rec-a.cgrec"
        );
        assert!(matches!(
            s.key(&RecordingId::from_string("a/../b")),
            Err(StorageError::InvalidId(_))
        ));
    }
}
