//! Sans-IO recording writer: records in, container bytes out.
//!
//! No files, no tasks, no clock reads. The shell:
//!
//! 1. builds a [`Header`] and a fresh [`Dek`] (wrapping the DEK into the database),
//!    creates the writer with `now`,
//! 2. pushes records as media arrives ([`RecordingWriter::push_audio`],
//!    [`RecordingWriter::push_gap`]),
//! 3. sleeps until [`RecordingWriter::poll_timeout`], then calls
//!    [`RecordingWriter::handle_timeout`],
//! 4. after every call, drains [`RecordingWriter::poll_output`] and appends the bytes to the
//!    file (then fsyncs, batched as it likes),
//! 5. at hangup calls [`RecordingWriter::finish`] and appends the returned bytes.
//!
//! Timing: a chunk is sealed at the first `handle_timeout(now)` with `now` at or after the
//! deadline (`flush` after the previous deadline was handled, or after creation), if any record
//! is pending; an interval with no records seals nothing. A chunk is also sealed as soon as its
//! plaintext reaches [`MAX_CHUNK_PLAINTEXT`], so a writer buffers at most ~65 KiB of plaintext.
//! A crash therefore loses at most the records of one flush interval (plus what the shell had
//! not yet written).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::ids::Leg;
use crate::media::g711::G711;
use crate::recording::container::{
    CHUNK_LEN_PREFIX, ChunkCipher, EndReason, GapKind, Header, MAX_AUDIO_PAYLOAD,
    MAX_CHUNK_PLAINTEXT, Record, TAG_LEN, encode_record,
};
use crate::recording::keys::Dek;

/// Why the writer stopped producing chunks. Once failed, records are dropped and `finish`
/// returns the error; the call goes on and its record says `recording_failed`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum WriterError {
    #[error("chunk counter exhausted (2^32 - 1 chunks)")]
    TooManyChunks,
    #[error("AES-GCM refused to seal a chunk")]
    Seal,
}

/// Everything `finish` hands back.
#[derive(Debug)]
pub struct Finished {
    /// Bytes not yet taken with `poll_output`, ending with the final chunk: append them.
    pub bytes: Vec<u8>,
    /// SHA-256 of the whole file (every byte this writer ever output, header included).
    pub sha256: [u8; 32],
    /// Length of the whole file in bytes.
    pub total_len: u64,
    /// Number of chunks, the final one included.
    pub chunks: u32,
}

impl Finished {
    /// SHA-256 of the whole ciphertext file.
    pub fn ciphertext_sha256(&self) -> [u8; 32] {
        self.sha256
    }
}

/// The sans-IO writer of one recording. See the module docs for the driving loop.
pub struct RecordingWriter {
    header: Vec<u8>,
    cipher: ChunkCipher,
    /// Counter of the next chunk to seal.
    counter: u32,
    /// The chunk being built: [`CHUNK_LEN_PREFIX`] bytes for its length, then the encoded
    /// records. It is sealed in place and becomes the output: one buffer per chunk, no copy.
    pending: Vec<u8>,
    flush: Duration,
    deadline: Instant,
    output: VecDeque<Vec<u8>>,
    sha: Sha256,
    bytes_output: u64,
    error: Option<WriterError>,
    /// The payload buffer of the last audio record, reused by the next (no allocation per
    /// packet).
    audio_buf: Vec<u8>,
}

impl std::fmt::Debug for RecordingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingWriter")
            .field("chunks", &self.counter)
            .field("pending_bytes", &self.pending_len())
            .field("bytes_output", &self.bytes_output)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl RecordingWriter {
    /// Starts a recording. `flush` overrides `header.flush_ms` (so the file says what was used).
    /// The header bytes are the first output.
    pub fn new(mut header: Header, dek: &Dek, now: Instant, flush: Duration) -> RecordingWriter {
        header.flush_ms = u32::try_from(flush.as_millis()).unwrap_or(u32::MAX);
        let header_bytes = header.encode();
        let mut w = RecordingWriter {
            cipher: ChunkCipher::new(dek, &header.nonce_prefix),
            header: header_bytes.clone(),
            counter: 0,
            pending: vec![0; CHUNK_LEN_PREFIX],
            flush,
            deadline: now + flush,
            output: VecDeque::new(),
            sha: Sha256::new(),
            bytes_output: 0,
            error: None,
            audio_buf: Vec::new(),
        };
        w.emit(header_bytes);
        w
    }

    /// Records G.711 samples of `leg` starting at timeline sample `pos`. Payloads longer than
    /// 1024 bytes are split into several records; an empty payload records nothing.
    pub fn push_audio(&mut self, leg: Leg, pos: u64, codec: G711, payload: &[u8]) {
        for (i, part) in payload.chunks(MAX_AUDIO_PAYLOAD).enumerate() {
            // i * 1024 <= payload.len(), which fits u64.
            let pos = pos.saturating_add((i * MAX_AUDIO_PAYLOAD) as u64);
            let mut buf = std::mem::take(&mut self.audio_buf);
            buf.clear();
            buf.extend_from_slice(part);
            let record = Record::Audio { leg, pos, codec, payload: buf };
            self.push(&record);
            if let Record::Audio { payload, .. } = record {
                self.audio_buf = payload;
            }
        }
    }

    /// Records that `leg` has no audio for samples `from..to`. Reversed bounds are swapped;
    /// an empty range records nothing.
    pub fn push_gap(&mut self, leg: Leg, from: u64, to: u64, kind: GapKind) {
        if from == to {
            return;
        }
        let (from, to) = if to < from { (to, from) } else { (from, to) };
        self.push(&Record::Gap {
            leg,
            from,
            to,
            kind,
        });
    }

    /// Records why the recording ended (optional; call just before `finish`).
    pub fn push_end(&mut self, reason: EndReason) {
        self.push(&Record::End { reason });
    }

    fn push(&mut self, record: &Record) {
        if self.error.is_some() {
            return;
        }
        encode_record(record, &mut self.pending);
        if self.pending_len() >= MAX_CHUNK_PLAINTEXT {
            self.seal(false);
        }
    }

    /// Seals pending records into a chunk if the flush deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.deadline {
            return;
        }
        if self.pending_len() > 0 {
            self.seal(false);
        }
        // From now, not from the old deadline: a late wake-up does not cause a burst of seals.
        self.deadline = now + self.flush;
    }

    /// When `handle_timeout` wants to run next; `None` once the writer has failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.error {
            Some(_) => None,
            None => Some(self.deadline),
        }
    }

    /// Next bytes to append to the file, in order: the header, then each sealed chunk.
    pub fn poll_output(&mut self) -> Option<Vec<u8>> {
        self.output.pop_front()
    }

    /// Bytes output so far (queued or taken), header included.
    pub fn bytes_output(&self) -> u64 {
        self.bytes_output
    }

    /// Chunks sealed so far.
    pub fn chunks_sealed(&self) -> u32 {
        self.counter
    }

    /// The error that stopped the writer, if any.
    pub fn error(&self) -> Option<WriterError> {
        self.error
    }

    /// Seals the final chunk (STREAM last flag; possibly empty) and returns all remaining bytes
    /// with the file's SHA-256 and length.
    pub fn finish(mut self) -> Result<Finished, WriterError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.seal(true);
        if let Some(e) = self.error {
            return Err(e);
        }
        let bytes = self.output.drain(..).flatten().collect();
        Ok(Finished {
            bytes,
            sha256: self.sha.finalize().into(),
            total_len: self.bytes_output,
            chunks: self.counter,
        })
    }

    fn seal(&mut self, last: bool) {
        // Keep u32::MAX unused, as aead-stream's stateful Encryptor does.
        if self.counter >= u32::MAX - 1 && !last {
            self.error = Some(WriterError::TooManyChunks);
            return;
        }
        // The next chunk's buffer is sized like this one (1/8 more, and room for the tag): a
        // steady call never grows it, and none holds twice what it needs.
        let len = self.pending_len();
        let mut next = Vec::with_capacity(CHUNK_LEN_PREFIX + len + len / 8 + TAG_LEN);
        next.extend_from_slice(&[0; CHUNK_LEN_PREFIX]);
        let mut framed = std::mem::replace(&mut self.pending, next);
        match self
            .cipher
            .seal_framed(self.counter, last, &self.header, &mut framed)
        {
            Ok(()) => {
                self.counter += 1;
                self.emit(framed);
            }
            Err(_) => self.error = Some(WriterError::Seal),
        }
    }

    /// Bytes of records waiting in the chunk being built.
    fn pending_len(&self) -> usize {
        self.pending.len() - CHUNK_LEN_PREFIX
    }

    fn emit(&mut self, bytes: Vec<u8>) {
        self.sha.update(&bytes);
        self.bytes_output += bytes.len() as u64;
        self.output.push_back(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyId, RecordingId};
    use crate::recording::container::{HEADER_FIXED_LEN, Header};

    fn new_writer(now: Instant) -> RecordingWriter {
        let h = Header::new(
            RecordingId::new_random(),
            KeyId::new_random(),
            0,
            Duration::from_secs(1),
        )
        .unwrap();
        RecordingWriter::new(h, &Dek::from_bytes([7; 32]), now, Duration::from_secs(1))
    }

    fn drain(w: &mut RecordingWriter) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| w.poll_output()).collect()
    }

    #[test]
    fn chunk_sealed_only_after_flush_interval() {
        let t0 = Instant::now();
        let mut w = new_writer(t0);
        let out = drain(&mut w);
        assert_eq!(out.len(), 1, "header only");
        assert_eq!(&out[0][..8], b"CGREC\0\r\n");
        assert_eq!(w.poll_timeout(), Some(t0 + Duration::from_secs(1)));

        w.push_audio(Leg::Caller, 0, G711::Pcmu, &[0xff; 160]);
        w.handle_timeout(t0 + Duration::from_millis(999));
        assert!(w.poll_output().is_none(), "no chunk before the deadline");
        assert_eq!(w.chunks_sealed(), 0);

        w.handle_timeout(t0 + Duration::from_millis(1000));
        let out = drain(&mut w);
        assert_eq!(out.len(), 1);
        let ct_len = u32::from_be_bytes(out[0][..4].try_into().unwrap()) as usize;
        assert_eq!(ct_len, out[0].len() - 4);
        assert_eq!(ct_len, 3 + 10 + 160 + 16);
        assert_eq!(w.chunks_sealed(), 1);
        assert_eq!(w.poll_timeout(), Some(t0 + Duration::from_millis(2000)));

        // An empty interval seals nothing but moves the deadline.
        w.handle_timeout(t0 + Duration::from_millis(2500));
        assert!(w.poll_output().is_none());
        assert_eq!(w.poll_timeout(), Some(t0 + Duration::from_millis(3500)));

        w.push_gap(Leg::Agent, 0, 8000, GapKind::Loss);
        w.handle_timeout(t0 + Duration::from_millis(3400));
        assert!(w.poll_output().is_none());
        w.handle_timeout(t0 + Duration::from_millis(3500));
        assert_eq!(drain(&mut w).len(), 1);
        assert_eq!(w.chunks_sealed(), 2);
    }

    #[test]
    fn chunk_plaintext_is_capped() {
        let t0 = Instant::now();
        let mut w = new_writer(t0);
        drain(&mut w);
        // 100 s of audio pushed with no timeout at all: chunks are still sealed.
        for i in 0..5000u64 {
            w.push_audio(Leg::Caller, i * 160, G711::Pcma, &[0xd5; 160]);
        }
        let out = drain(&mut w);
        assert!(out.len() >= 10, "{} chunks", out.len());
        for c in &out {
            assert!(c.len() <= 4 + MAX_CHUNK_PLAINTEXT + 3 + 10 + 1024 + 16);
        }
        assert!(w.pending_len() < MAX_CHUNK_PLAINTEXT);
    }

    #[test]
    fn long_payload_is_split() {
        let mut w = new_writer(Instant::now());
        w.push_audio(Leg::Agent, 100, G711::Pcmu, &[1u8; 2500]);
        // 3 records: 1024 + 1024 + 452
        assert_eq!(w.pending_len(), 3 * 13 + 2500);
        w.push_audio(Leg::Agent, 100, G711::Pcmu, &[]);
        w.push_gap(Leg::Agent, 5, 5, GapKind::Loss);
        assert_eq!(w.pending_len(), 3 * 13 + 2500);
    }

    #[test]
    fn finish_returns_remaining_bytes_and_hash_of_everything() {
        let t0 = Instant::now();
        let mut w = new_writer(t0);
        let mut file = Vec::new();
        w.push_audio(Leg::Caller, 0, G711::Pcmu, &[3; 160]);
        w.handle_timeout(t0 + Duration::from_secs(1));
        file.extend(drain(&mut w).concat());
        w.push_audio(Leg::Caller, 160, G711::Pcmu, &[4; 160]);
        w.push_end(EndReason::Hangup);
        let f = w.finish().unwrap();
        file.extend_from_slice(&f.bytes);
        assert_eq!(f.total_len, file.len() as u64);
        assert_eq!(f.chunks, 2);
        let expect: [u8; 32] = Sha256::digest(&file).into();
        assert_eq!(f.ciphertext_sha256(), expect);
        assert!(file.len() > HEADER_FIXED_LEN);
    }

    #[test]
    fn finish_without_records_still_seals_final_chunk() {
        let w = new_writer(Instant::now());
        let f = w.finish().unwrap();
        assert_eq!(f.chunks, 1);
        // header + (4 + 16-byte tag of an empty plaintext)
        let header_len = f.bytes.len() - 20;
        assert_eq!(&f.bytes[header_len..header_len + 4], &16u32.to_be_bytes());
    }
}
