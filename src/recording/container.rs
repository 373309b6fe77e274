//! The on-disk recording container: header, chunk framing, record encoding. Sans-IO.
//!
//! The byte-level specification is `docs/recording-format.md`; this module is its reference
//! implementation. In short:
//!
//! ```text
//! file   = header chunk*            (the last chunk is sealed with the STREAM "last" flag)
//! header = magic "CGREC\0\r\n" | u16 version | u32 body_len | body      (big endian)
//! chunk  = u32 ciphertext_len | AES-256-GCM ciphertext ‖ 16-byte tag
//! nonce  = 7-byte prefix (from the header) | u32 BE chunk counter | u8 last flag
//! AAD    = the whole header, for every chunk
//! plaintext of a chunk = record*;  record = u8 type | u16 body_len | body
//! ```
//!
//! Positions (`pos`, `from`, `to`) are sample indices at 8 kHz since the recording started,
//! shared by both legs (see `docs/architecture.md`, "Clocks").

use std::time::Duration;

use aead_stream::{NewStream, StreamBE32, StreamPrimitive};
use aes_gcm::aead::Payload;
use aes_gcm::{Aes256Gcm, Key};

use crate::ids::{KeyId, Leg, RecordingId};
use crate::media::g711::G711;
use crate::recording::keys::Dek;

/// First 8 bytes of every recording file. The CR LF catches text-mode mangling (as PNG does).
pub const MAGIC: [u8; 8] = *b"CGREC\0\r\n";
/// The container version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes before the header body: magic, version, body length.
pub const HEADER_FIXED_LEN: usize = 8 + 2 + 4;
/// Upper bound on the header body a reader accepts.
pub const MAX_HEADER_BODY: usize = 4096;
/// Length of the random STREAM nonce prefix (12-byte GCM nonce minus 4 counter bytes and 1 flag).
pub const NONCE_PREFIX_LEN: usize = 7;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Each chunk in the file is preceded by its ciphertext length (u32, big-endian).
pub const CHUNK_LEN_PREFIX: usize = 4;
/// The only sample rate of the timeline.
pub const SAMPLE_RATE: u32 = 8000;
/// Largest audio payload in one record (bytes = G.711 samples). Writers split longer payloads.
pub const MAX_AUDIO_PAYLOAD: usize = 1024;
/// A writer seals a chunk early once its pending plaintext reaches this size.
pub const MAX_CHUNK_PLAINTEXT: usize = 64 * 1024;
/// Largest chunk ciphertext a reader accepts (generous, to let writers grow the chunk cap).
pub const MAX_CHUNK_CIPHERTEXT: usize = 1024 * 1024;

/// Record type bytes.
pub mod record_type {
    pub const AUDIO: u8 = 1;
    pub const GAP: u8 = 2;
    pub const END: u8 = 3;
}

/// The OS random number generator failed.
#[derive(Debug, thiserror::Error)]
#[error("operating system random number generator failed: {0}")]
pub struct RandomError(pub getrandom::Error);

/// The plaintext header. Not secret, but authenticated as the associated data of every chunk.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Header {
    pub recording_id: RecordingId,
    /// Id of the KEK that wraps this recording's DEK (the wrapped DEK itself is in the database).
    pub key_id: KeyId,
    /// Wall clock at the start of the recording, Unix milliseconds (taken by the shell).
    pub created_unix_ms: i64,
    /// Always [`SAMPLE_RATE`] in version 1.
    pub sample_rate: u32,
    /// Random per recording; the first 7 bytes of every chunk nonce.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// The writer's flush interval in milliseconds (informational: the most audio a crash loses).
    pub flush_ms: u32,
}

/// Why a header could not be parsed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("header incomplete: file has {have} bytes, header needs {need}")]
    Incomplete { have: usize, need: usize },
    #[error("not a callgate recording (bad magic)")]
    BadMagic,
    #[error("unsupported container version {0}")]
    UnsupportedVersion(u16),
    #[error("header body length {0} exceeds the limit")]
    TooLong(u32),
    #[error("malformed header: {0}")]
    Malformed(&'static str),
}

impl Header {
    /// A header for a new recording, with a fresh random nonce prefix.
    pub fn new(
        recording_id: RecordingId,
        key_id: KeyId,
        created_unix_ms: i64,
        flush: Duration,
    ) -> Result<Header, RandomError> {
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        getrandom::fill(&mut nonce_prefix).map_err(RandomError)?;
        Ok(Header {
            recording_id,
            key_id,
            created_unix_ms,
            sample_rate: SAMPLE_RATE,
            nonce_prefix,
            flush_ms: duration_ms_u32(flush),
        })
    }

    /// The exact header bytes (also the associated data of every chunk).
    ///
    /// Ids longer than 255 bytes are not representable; ids are short generated strings
    /// (`rec-<16 hex>`), and longer ones are cut at 255 bytes on a char boundary.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        put_str8(&mut body, self.recording_id.as_str());
        put_str8(&mut body, self.key_id.as_str());
        body.extend_from_slice(&self.created_unix_ms.to_be_bytes());
        body.extend_from_slice(&self.sample_rate.to_be_bytes());
        body.extend_from_slice(&self.nonce_prefix);
        body.extend_from_slice(&self.flush_ms.to_be_bytes());

        let mut out = Vec::with_capacity(HEADER_FIXED_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        // Body is at most 2 * 256 + 27 bytes, far below u32::MAX.
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a header from the start of `bytes`; returns it and its total length in bytes.
    /// Bytes after the version-1 fields inside the body are ignored (room to grow).
    pub fn decode(bytes: &[u8]) -> Result<(Header, usize), HeaderError> {
        if bytes.len() < HEADER_FIXED_LEN {
            // Report bad magic early if what we have already disagrees with it.
            let n = bytes.len().min(MAGIC.len());
            if bytes[..n] != MAGIC[..n] {
                return Err(HeaderError::BadMagic);
            }
            return Err(HeaderError::Incomplete {
                have: bytes.len(),
                need: HEADER_FIXED_LEN,
            });
        }
        let mut r = Cursor::new(bytes);
        let magic = r.take(8).ok_or(HeaderError::BadMagic)?;
        if magic != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = r.u16().ok_or(HeaderError::Malformed("version"))?;
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let body_len = r.u32().ok_or(HeaderError::Malformed("body length"))?;
        if body_len as usize > MAX_HEADER_BODY {
            return Err(HeaderError::TooLong(body_len));
        }
        let total = HEADER_FIXED_LEN + body_len as usize;
        let body = r.take(body_len as usize).ok_or(HeaderError::Incomplete {
            have: bytes.len(),
            need: total,
        })?;
        let mut b = Cursor::new(body);
        let short = HeaderError::Malformed("body shorter than version 1 fields");
        let recording_id = b.str8().ok_or(short.clone())??;
        let key_id = b.str8().ok_or(short.clone())??;
        let created_unix_ms = b.i64().ok_or(short.clone())?;
        let sample_rate = b.u32().ok_or(short.clone())?;
        let nonce_prefix: [u8; NONCE_PREFIX_LEN] = b
            .take(NONCE_PREFIX_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(short.clone())?;
        let flush_ms = b.u32().ok_or(short)?;
        if sample_rate != SAMPLE_RATE {
            return Err(HeaderError::Malformed("sample rate must be 8000"));
        }
        Ok((
            Header {
                recording_id: RecordingId::from_string(recording_id),
                key_id: KeyId::from_string(key_id),
                created_unix_ms,
                sample_rate,
                nonce_prefix,
                flush_ms,
            },
            total,
        ))
    }
}

fn duration_ms_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn put_str8(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    // end <= 255 by construction.
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// Why a gap exists on a track.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GapKind {
    /// Packets lost or never sent (filled as silence on playback, counted).
    Loss,
    /// Recording paused for payment-card entry. Only the trigger and how many digits were
    /// entered are stored, never the digits.
    Pause { trigger: u8, digits: u16 },
}

/// Why a recording ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EndReason {
    /// The call ended normally.
    Hangup,
    /// The gateway shut down while the call was up.
    Shutdown,
    /// Recording stopped because of an error (the call record has the cause).
    Failed,
    /// A code this version does not know.
    Other(u8),
}

impl EndReason {
    pub fn code(self) -> u8 {
        match self {
            EndReason::Hangup => 0,
            EndReason::Shutdown => 1,
            EndReason::Failed => 2,
            EndReason::Other(c) => c,
        }
    }
    pub fn from_code(c: u8) -> EndReason {
        match c {
            0 => EndReason::Hangup,
            1 => EndReason::Shutdown,
            2 => EndReason::Failed,
            c => EndReason::Other(c),
        }
    }
}

/// One entry on the recording timeline.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Record {
    /// G.711 samples of one leg, starting at sample `pos`; one byte per sample, ≤ 1024 bytes.
    Audio {
        leg: Leg,
        pos: u64,
        codec: G711,
        payload: Vec<u8>,
    },
    /// No audio on `leg` for samples `from..to` (half-open).
    Gap {
        leg: Leg,
        from: u64,
        to: u64,
        kind: GapKind,
    },
    /// The writer ended the recording deliberately.
    End { reason: EndReason },
}

/// Why the plaintext of an authenticated chunk could not be decoded into records.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record at offset {offset} runs past the end of the chunk")]
    Truncated { offset: usize },
    #[error("record at offset {offset}: {problem}")]
    Invalid {
        offset: usize,
        problem: &'static str,
    },
}

fn leg_code(leg: Leg) -> u8 {
    leg as u8
}

fn leg_from_code(c: u8) -> Option<Leg> {
    match c {
        0 => Some(Leg::Caller),
        1 => Some(Leg::Agent),
        _ => None,
    }
}

/// Appends the encoding of one record to `out`.
///
/// Audio payloads longer than [`MAX_AUDIO_PAYLOAD`] must be split by the caller (the writer
/// does); here they are cut at the limit, so the encoding is always valid.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Audio {
            leg,
            pos,
            codec,
            payload,
        } => {
            let payload = &payload[..payload.len().min(MAX_AUDIO_PAYLOAD)];
            out.push(record_type::AUDIO);
            // 10 + at most 1024 bytes, fits u16.
            out.extend_from_slice(&((10 + payload.len()) as u16).to_be_bytes());
            out.push(leg_code(*leg));
            out.push(codec.payload_type());
            out.extend_from_slice(&pos.to_be_bytes());
            out.extend_from_slice(payload);
        }
        Record::Gap {
            leg,
            from,
            to,
            kind,
        } => {
            out.push(record_type::GAP);
            out.extend_from_slice(&21u16.to_be_bytes());
            out.push(leg_code(*leg));
            out.extend_from_slice(&from.to_be_bytes());
            out.extend_from_slice(&to.to_be_bytes());
            let (k, trigger, digits) = match kind {
                GapKind::Loss => (0u8, 0u8, 0u16),
                GapKind::Pause { trigger, digits } => (1, *trigger, *digits),
            };
            out.push(k);
            out.push(trigger);
            out.extend_from_slice(&digits.to_be_bytes());
        }
        Record::End { reason } => {
            out.push(record_type::END);
            out.extend_from_slice(&1u16.to_be_bytes());
            out.push(reason.code());
        }
    }
}

/// Size of a record's encoding, without encoding it.
pub fn encoded_len(record: &Record) -> usize {
    3 + match record {
        Record::Audio { payload, .. } => 10 + payload.len().min(MAX_AUDIO_PAYLOAD),
        Record::Gap { .. } => 21,
        Record::End { .. } => 1,
    }
}

/// Decodes the plaintext of one chunk. Unknown record types are skipped (forward
/// compatibility); known types with invalid contents are errors.
pub fn decode_records(plaintext: &[u8]) -> Result<Vec<Record>, RecordError> {
    let mut out = Vec::new();
    let mut r = Cursor::new(plaintext);
    while !r.is_empty() {
        let offset = r.pos;
        let trunc = RecordError::Truncated { offset };
        let invalid = |problem| RecordError::Invalid { offset, problem };
        let ty = r.u8().ok_or(trunc.clone())?;
        let len = r.u16().ok_or(trunc.clone())? as usize;
        let body = r.take(len).ok_or(trunc)?;
        let mut b = Cursor::new(body);
        match ty {
            record_type::AUDIO => {
                if len <= 10 || len > 10 + MAX_AUDIO_PAYLOAD {
                    return Err(invalid("audio payload must be 1 to 1024 bytes"));
                }
                let (Some(leg), Some(pt), Some(pos)) = (b.u8(), b.u8(), b.u64()) else {
                    return Err(invalid("audio record too short"));
                };
                let leg = leg_from_code(leg).ok_or(invalid("unknown leg"))?;
                let codec = G711::from_payload_type(pt).ok_or(invalid("unknown codec"))?;
                let payload = b.rest().to_vec();
                if pos.checked_add(payload.len() as u64).is_none() {
                    return Err(invalid("audio position overflows"));
                }
                out.push(Record::Audio {
                    leg,
                    pos,
                    codec,
                    payload,
                });
            }
            record_type::GAP => {
                if len != 21 {
                    return Err(invalid("gap record must be 21 bytes"));
                }
                let (Some(leg), Some(from), Some(to), Some(k), Some(trigger), Some(digits)) =
                    (b.u8(), b.u64(), b.u64(), b.u8(), b.u8(), b.u16())
                else {
                    return Err(invalid("gap record too short"));
                };
                let leg = leg_from_code(leg).ok_or(invalid("unknown leg"))?;
                if to < from {
                    return Err(invalid("gap ends before it starts"));
                }
                let kind = match k {
                    0 => GapKind::Loss,
                    1 => GapKind::Pause { trigger, digits },
                    _ => return Err(invalid("unknown gap kind")),
                };
                out.push(Record::Gap {
                    leg,
                    from,
                    to,
                    kind,
                });
            }
            record_type::END => {
                let Some(code) = b.u8() else {
                    return Err(invalid("end record too short"));
                };
                out.push(Record::End {
                    reason: EndReason::from_code(code),
                });
            }
            _ => {} // unknown type from a newer writer: skipped
        }
    }
    Ok(out)
}

/// A buffer whose first bytes (the chunk's length prefix) the cipher does not see.
struct AfterPrefix<'a>(&'a mut Vec<u8>);

impl AsRef<[u8]> for AfterPrefix<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.0[CHUNK_LEN_PREFIX..]
    }
}

impl AsMut<[u8]> for AfterPrefix<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0[CHUNK_LEN_PREFIX..]
    }
}

impl aead_stream::aead::Buffer for AfterPrefix<'_> {
    fn extend_from_slice(&mut self, other: &[u8]) -> aead_stream::aead::Result<()> {
        self.0.extend_from_slice(other);
        Ok(())
    }

    fn truncate(&mut self, len: usize) {
        self.0.truncate(CHUNK_LEN_PREFIX + len);
    }
}

/// The STREAM (Hoang-Reyhanitabar-Rogaway-Vizár) instance of one recording:
/// AES-256-GCM, nonce = prefix(7) ‖ counter(u32 BE) ‖ last flag(u8).
pub(crate) struct ChunkCipher {
    stream: StreamBE32<Aes256Gcm>,
}

impl ChunkCipher {
    pub(crate) fn new(dek: &Dek, nonce_prefix: &[u8; NONCE_PREFIX_LEN]) -> ChunkCipher {
        let key = Key::<Aes256Gcm>::from(*dek.as_bytes());
        ChunkCipher {
            stream: StreamBE32::new(&key, &(*nonce_prefix).into()),
        }
    }

    /// Seals `framed` after its first [`CHUNK_LEN_PREFIX`] bytes in place (the tag is appended)
    /// and writes the ciphertext's length into those bytes: a chunk as it goes into the file,
    /// with no copy of the plaintext and no second buffer.
    pub(crate) fn seal_framed(
        &self,
        counter: u32,
        last: bool,
        header: &[u8],
        framed: &mut Vec<u8>,
    ) -> Result<(), aes_gcm::Error> {
        if framed.len() < CHUNK_LEN_PREFIX {
            return Err(aes_gcm::Error);
        }
        self.stream
            .encrypt_in_place(counter, last, header, &mut AfterPrefix(framed))?;
        let len = u32::try_from(framed.len() - CHUNK_LEN_PREFIX).map_err(|_| aes_gcm::Error)?;
        framed[..CHUNK_LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    pub(crate) fn open(
        &self,
        counter: u32,
        last: bool,
        header: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, aes_gcm::Error> {
        self.stream.decrypt(
            counter,
            last,
            Payload {
                msg: ciphertext,
                aad: header,
            },
        )
    }
}

/// A bounds-checked big-endian reader; every accessor returns `None` instead of panicking.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn rest(&mut self) -> &'a [u8] {
        let r = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        r
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|a| a[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }
    /// u8 length + UTF-8 string. Outer `None`: too short; inner error: not UTF-8.
    fn str8(&mut self) -> Option<Result<String, HeaderError>> {
        let n = self.u8()? as usize;
        let s = self.take(n)?;
        Some(
            std::str::from_utf8(s)
                .map(str::to_owned)
                .map_err(|_| HeaderError::Malformed("id is not UTF-8")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_sealed_in_place_is_its_length_then_the_stream_ciphertext() {
        let dek = Dek::from_bytes([7; 32]);
        let cipher = ChunkCipher::new(&dek, &[3; NONCE_PREFIX_LEN]);
        let plain: Vec<u8> = (0..5000u32).map(|i| (i * 31) as u8).collect();
        for (counter, last) in [(0, false), (9, true)] {
            let mut framed = vec![0xee; 4];
            framed.extend_from_slice(&plain);
            cipher
                .seal_framed(counter, last, b"hdr", &mut framed)
                .unwrap();
            let whole = cipher
                .stream
                .encrypt(
                    counter,
                    last,
                    Payload {
                        msg: &plain,
                        aad: b"hdr",
                    },
                )
                .unwrap();
            assert_eq!(&framed[..4], &(whole.len() as u32).to_be_bytes());
            assert_eq!(&framed[4..], &whole[..]);
            assert_eq!(
                cipher.open(counter, last, b"hdr", &framed[4..]).unwrap(),
                plain
            );
        }
        assert!(cipher.seal_framed(0, false, b"", &mut vec![0; 3]).is_err());
    }

    fn header() -> Header {
        Header::new(
            RecordingId::from_string("rec-0011223344556677"),
            KeyId::from_string("kek-8899aabbccddeeff"),
            1_700_000_000_123,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn header_round_trip_and_layout() {
        let h = header();
        let b = h.encode();
        assert_eq!(&b[..8], b"CGREC\0\r\n");
        assert_eq!(&b[8..10], &[0, 1]);
        let body_len = u32::from_be_bytes(b[10..14].try_into().unwrap()) as usize;
        assert_eq!(b.len(), 14 + body_len);
        // 1+20 + 1+20 + 8 + 4 + 7 + 4
        assert_eq!(body_len, 65);
        let (back, len) = Header::decode(&b).unwrap();
        assert_eq!(back, h);
        assert_eq!(len, b.len());
        assert_eq!(back.flush_ms, 1000);
    }

    #[test]
    fn header_grows_compatibly_and_rejects_bad_input() {
        let h = header();
        let mut b = h.encode();
        // Append a future field: readers of v1 ignore it.
        b.extend_from_slice(&[9, 9, 9]);
        let new_len = (b.len() - HEADER_FIXED_LEN) as u32;
        b[10..14].copy_from_slice(&new_len.to_be_bytes());
        let (back, len) = Header::decode(&b).unwrap();
        assert_eq!((back, len), (h.clone(), b.len()));

        let good = h.encode();
        assert_eq!(Header::decode(b"RIFF"), Err(HeaderError::BadMagic));
        assert!(matches!(
            Header::decode(&good[..5]),
            Err(HeaderError::Incomplete { .. })
        ));
        assert!(matches!(
            Header::decode(&good[..good.len() - 1]),
            Err(HeaderError::Incomplete { .. })
        ));
        let mut v2 = good.clone();
        v2[9] = 2;
        assert_eq!(Header::decode(&v2), Err(HeaderError::UnsupportedVersion(2)));
        let mut rate = good.clone();
        let rate_at = 14 + 21 + 21 + 8;
        rate[rate_at..rate_at + 4].copy_from_slice(&16000u32.to_be_bytes());
        assert!(matches!(
            Header::decode(&rate),
            Err(HeaderError::Malformed(_))
        ));
    }

    #[test]
    fn records_round_trip() {
        let recs = vec![
            Record::Audio {
                leg: Leg::Caller,
                pos: 160,
                codec: G711::Pcmu,
                payload: vec![1, 2, 3],
            },
            Record::Audio {
                leg: Leg::Agent,
                pos: u64::MAX - 1024,
                codec: G711::Pcma,
                payload: vec![0xd5; 1024],
            },
            Record::Gap {
                leg: Leg::Agent,
                from: 10,
                to: 20,
                kind: GapKind::Loss,
            },
            Record::Gap {
                leg: Leg::Caller,
                from: 8000,
                to: 16000,
                kind: GapKind::Pause {
                    trigger: 2,
                    digits: 16,
                },
            },
            Record::End {
                reason: EndReason::Other(77),
            },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            let before = buf.len();
            encode_record(r, &mut buf);
            assert_eq!(buf.len() - before, encoded_len(r));
        }
        assert_eq!(decode_records(&buf).unwrap(), recs);
        // Unknown record type is skipped.
        let mut with_unknown = vec![0x7f, 0, 2, 0xaa, 0xbb];
        with_unknown.extend_from_slice(&buf);
        assert_eq!(decode_records(&with_unknown).unwrap(), recs);
        // Truncation anywhere inside a record is an error, never a panic.
        for cut in 1..buf.len() {
            let _ = decode_records(&buf[..cut]);
        }
        assert!(decode_records(&buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn invalid_records_rejected() {
        let mut gap = Vec::new();
        encode_record(
            &Record::Gap {
                leg: Leg::Caller,
                from: 5,
                to: 9,
                kind: GapKind::Loss,
            },
            &mut gap,
        );
        let mut backwards = gap.clone();
        backwards[4..12].copy_from_slice(&100u64.to_be_bytes());
        assert!(decode_records(&backwards).is_err());
        let mut bad_leg = gap.clone();
        bad_leg[3] = 2;
        assert!(decode_records(&bad_leg).is_err());
        let mut bad_kind = gap;
        bad_kind[20] = 9;
        assert!(decode_records(&bad_kind).is_err());
        // Audio with an empty payload or unknown codec.
        assert!(decode_records(&[1, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_records(&[1, 0, 11, 0, 99, 0, 0, 0, 0, 0, 0, 0, 0, 7]).is_err());
        // Position overflow.
        assert!(
            decode_records(&[1, 0, 11, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 7]).is_err()
        );
    }
}
