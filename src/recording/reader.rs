//! Reads a recording: authenticates every chunk in order, detects truncation, decodes records.
//! Sans-IO (takes the whole file as bytes) and panic-free on any input.
//!
//! Status, from the file's point of view:
//!
//! * `Complete`: every chunk authenticated, the last one carries the STREAM last flag and
//!   nothing follows it.
//! * `Truncated`: the bytes end early (inside the header, inside a chunk's length or body, or
//!   after a chunk that is not the final one). Expected after a crash; what was authenticated
//!   is returned.
//! * `Damaged`: something is there that should not be: a header that does not parse, a chunk
//!   that fails authentication (tampering, bit rot, wrong DEK, chunks reordered or dropped from
//!   the middle), an impossible chunk length, bytes after the final chunk, or an authenticated
//!   chunk whose records do not decode.
//!
//! How a chunk's flag is decided: the reader does not know in advance which chunk is last, so it
//! tries the expected flag first (last if no bytes follow the chunk, not-last otherwise) and
//! then the other one. GCM authenticates the nonce, so exactly one (or neither) succeeds.

use crate::recording::container::{
    CHUNK_LEN_PREFIX, ChunkCipher, Cursor, Header, HeaderError, MAX_CHUNK_CIPHERTEXT, Record,
    RecordError, TAG_LEN, decode_records,
};
use crate::recording::keys::Dek;

/// Why a recording is damaged.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DamageCause {
    #[error("header: {0}")]
    Header(HeaderError),
    #[error("chunk length {0} is impossible (min 16, max 1 MiB)")]
    BadChunkLength(u32),
    #[error("authentication failed (altered, reordered, or wrong key)")]
    Authentication,
    #[error("data follows the final chunk")]
    TrailingData,
    #[error("records: {0}")]
    Records(RecordError),
    #[error("too many chunks")]
    TooManyChunks,
}

/// Overall verdict on a recording file.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ReadStatus {
    /// Every chunk authenticated, final chunk present, nothing after it.
    Complete,
    /// The data stops early; `chunks_ok` chunks authenticated before that.
    Truncated { chunks_ok: u32 },
    /// Damaged at chunk `chunk_index` (`None`: the header itself).
    Damaged {
        chunk_index: Option<u32>,
        cause: DamageCause,
    },
}

impl ReadStatus {
    pub fn is_complete(&self) -> bool {
        matches!(self, ReadStatus::Complete)
    }
}

impl std::fmt::Display for ReadStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadStatus::Complete => f.write_str("complete"),
            ReadStatus::Truncated { chunks_ok } => {
                write!(f, "truncated after {chunks_ok} authenticated chunks")
            }
            ReadStatus::Damaged {
                chunk_index: None,
                cause,
            } => write!(f, "damaged header: {cause}"),
            ReadStatus::Damaged {
                chunk_index: Some(i),
                cause,
            } => write!(f, "damaged at chunk {i}: {cause}"),
        }
    }
}

/// Everything a read found.
#[derive(Clone, Debug)]
pub struct ReadOutcome {
    /// `None` if the header is missing, cut short, or does not parse.
    pub header: Option<Header>,
    /// Records of the authenticated chunks only, in file order.
    pub records: Vec<Record>,
    /// Chunks that authenticated (and decoded).
    pub chunks_ok: u32,
    pub status: ReadStatus,
}

/// Parses the plaintext header only: recording and key ids without any key.
pub fn read_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    Header::decode(bytes).map(|(h, _)| h)
}

/// Authenticates and decodes a whole recording file.
pub fn read(bytes: &[u8], dek: &Dek) -> ReadOutcome {
    let mut outcome = ReadOutcome {
        header: None,
        records: Vec::new(),
        chunks_ok: 0,
        status: ReadStatus::Complete,
    };
    let (header, header_len) = match Header::decode(bytes) {
        Ok(h) => h,
        Err(HeaderError::Incomplete { .. }) => {
            outcome.status = ReadStatus::Truncated { chunks_ok: 0 };
            return outcome;
        }
        Err(e) => {
            outcome.status = ReadStatus::Damaged {
                chunk_index: None,
                cause: DamageCause::Header(e),
            };
            return outcome;
        }
    };
    let aad = &bytes[..header_len];
    let cipher = ChunkCipher::new(dek, &header.nonce_prefix);
    outcome.header = Some(header);
    outcome.status = read_chunks(&bytes[header_len..], aad, &cipher, &mut outcome);
    outcome
}

fn read_chunks(
    mut rest: &[u8],
    aad: &[u8],
    cipher: &ChunkCipher,
    outcome: &mut ReadOutcome,
) -> ReadStatus {
    let mut index: u32 = 0;
    loop {
        let damaged = |cause| ReadStatus::Damaged {
            chunk_index: Some(index),
            cause,
        };
        let truncated = ReadStatus::Truncated {
            chunks_ok: outcome.chunks_ok,
        };
        if rest.is_empty() {
            // No final chunk seen and no more data.
            return truncated;
        }
        let mut c = Cursor::new(rest);
        let Some(len) = c.u32() else {
            return truncated;
        };
        if (len as usize) < TAG_LEN || len as usize > MAX_CHUNK_CIPHERTEXT {
            return damaged(DamageCause::BadChunkLength(len));
        }
        let Some(ct) = c.take(len as usize) else {
            return truncated;
        };
        rest = &rest[CHUNK_LEN_PREFIX + len as usize..];
        let at_end = rest.is_empty();

        let (plaintext, was_last) = match cipher.open(index, at_end, aad, ct) {
            Ok(p) => (p, at_end),
            Err(_) => match cipher.open(index, !at_end, aad, ct) {
                Ok(p) => (p, !at_end),
                Err(_) => return damaged(DamageCause::Authentication),
            },
        };
        if was_last && !at_end {
            return damaged(DamageCause::TrailingData);
        }
        match decode_records(&plaintext) {
            Ok(recs) => outcome.records.extend(recs),
            Err(e) => return damaged(DamageCause::Records(e)),
        }
        outcome.chunks_ok += 1;
        if was_last {
            return ReadStatus::Complete;
        }
        if at_end {
            return ReadStatus::Truncated {
                chunks_ok: outcome.chunks_ok,
            };
        }
        let Some(next) = index.checked_add(1) else {
            return damaged(DamageCause::TooManyChunks);
        };
        index = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyId, Leg, RecordingId};
    use crate::media::g711::G711;
    use crate::recording::container::{EndReason, GapKind, HEADER_FIXED_LEN};
    use crate::recording::writer::RecordingWriter;
    use std::time::{Duration, Instant};

    const DEK: [u8; 32] = [0x42; 32];

    /// Builds a file with both legs, gaps, an end record, over several chunks.
    /// Returns (file, chunk boundaries (offset of each chunk's length prefix), expected records).
    pub(crate) fn sample_file(packets: u64, flush_ms: u64) -> (Vec<u8>, Vec<usize>, Vec<Record>) {
        let t0 = Instant::now();
        let h = Header::new(
            RecordingId::from_string("rec-test"),
            KeyId::from_string("kek-test"),
            1_700_000_000_000,
            Duration::from_millis(flush_ms),
        )
        .unwrap();
        let mut w = RecordingWriter::new(
            h,
            &Dek::from_bytes(DEK),
            t0,
            Duration::from_millis(flush_ms),
        );
        let mut file = Vec::new();
        let mut bounds = Vec::new();
        let mut expected = Vec::new();
        let drain = |w: &mut RecordingWriter, file: &mut Vec<u8>, bounds: &mut Vec<usize>| {
            while let Some(b) = w.poll_output() {
                if !file.is_empty() {
                    bounds.push(file.len());
                }
                file.extend_from_slice(&b);
            }
        };
        // 20 ms packets: 50 per second per leg.
        for p in 0..packets {
            let now = t0 + Duration::from_millis(p * 20);
            w.handle_timeout(now);
            drain(&mut w, &mut file, &mut bounds);
            let pos = p * 160;
            let caller = vec![(p % 251) as u8; 160];
            w.push_audio(Leg::Caller, pos, G711::Pcmu, &caller);
            expected.push(Record::Audio {
                leg: Leg::Caller,
                pos,
                codec: G711::Pcmu,
                payload: caller,
            });
            if p % 10 == 3 {
                w.push_gap(Leg::Agent, pos, pos + 160, GapKind::Loss);
                expected.push(Record::Gap {
                    leg: Leg::Agent,
                    from: pos,
                    to: pos + 160,
                    kind: GapKind::Loss,
                });
            } else {
                let agent = vec![(p % 7) as u8 + 0x80; 160];
                w.push_audio(Leg::Agent, pos, G711::Pcma, &agent);
                expected.push(Record::Audio {
                    leg: Leg::Agent,
                    pos,
                    codec: G711::Pcma,
                    payload: agent,
                });
            }
        }
        let pause = GapKind::Pause {
            trigger: 1,
            digits: 16,
        };
        let end = packets * 160;
        w.push_gap(Leg::Caller, end, end + 800, pause);
        expected.push(Record::Gap {
            leg: Leg::Caller,
            from: end,
            to: end + 800,
            kind: pause,
        });
        w.push_end(EndReason::Hangup);
        expected.push(Record::End {
            reason: EndReason::Hangup,
        });
        drain(&mut w, &mut file, &mut bounds);
        let f = w.finish().unwrap();
        bounds.push(file.len());
        file.extend_from_slice(&f.bytes);
        (file, bounds, expected)
    }

    #[test]
    fn round_trip_both_legs_and_gaps() {
        let (file, bounds, expected) = sample_file(150, 500);
        assert!(bounds.len() >= 6, "several chunks: {bounds:?}");
        let out = read(&file, &Dek::from_bytes(DEK));
        assert_eq!(out.status, ReadStatus::Complete);
        assert_eq!(out.chunks_ok as usize, bounds.len());
        assert_eq!(out.records, expected);
        let h = out.header.unwrap();
        assert_eq!(h.recording_id.as_str(), "rec-test");
        assert_eq!(h.flush_ms, 500);
        let h2 = read_header(&file).unwrap();
        assert_eq!(h2.key_id.as_str(), "kek-test");
    }

    #[test]
    fn wrong_dek_is_damaged_at_chunk_0() {
        let (file, _, _) = sample_file(12, 60);
        let out = read(&file, &Dek::from_bytes([0x43; 32]));
        assert_eq!(
            out.status,
            ReadStatus::Damaged {
                chunk_index: Some(0),
                cause: DamageCause::Authentication
            }
        );
        assert!(out.records.is_empty());
    }

    #[test]
    fn truncation_at_every_byte_is_never_complete() {
        let (file, bounds, _) = sample_file(12, 60);
        let dek = Dek::from_bytes(DEK);
        for cut in 0..file.len() {
            let out = read(&file[..cut], &dek);
            match out.status {
                ReadStatus::Truncated { chunks_ok } => {
                    // Exactly the chunks wholly before the cut authenticated.
                    let whole = bounds.iter().skip(1).filter(|&&b| b <= cut).count();
                    assert_eq!(chunks_ok as usize, whole, "cut {cut}");
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert!(read(&file, &dek).status.is_complete());
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let (file, bounds, _) = sample_file(12, 60);
        let dek = Dek::from_bytes(DEK);
        let header_len = bounds[0];
        for i in 0..file.len() {
            let mut f = file.clone();
            f[i] ^= 0x01;
            let st = read(&f, &dek).status;
            assert!(!st.is_complete(), "flip at {i} undetected");
            let in_length_prefix = bounds.iter().any(|&b| i >= b && i < b + 4);
            if i >= HEADER_FIXED_LEN && !in_length_prefix {
                // Header body and ciphertext bytes: authentication catches it.
                assert!(
                    matches!(
                        st,
                        ReadStatus::Damaged {
                            cause: DamageCause::Authentication,
                            ..
                        } | ReadStatus::Damaged {
                            chunk_index: None,
                            ..
                        }
                    ),
                    "flip at {i} (header_len {header_len}): {st:?}"
                );
            }
        }
    }

    #[test]
    fn dropped_reordered_or_extra_chunks_are_damaged() {
        let (file, bounds, _) = sample_file(100, 500);
        let dek = Dek::from_bytes(DEK);
        let chunk = |i: usize| &file[bounds[i]..*bounds.get(i + 1).unwrap_or(&file.len())];
        // Drop chunk 1.
        let mut dropped = file[..bounds[1]].to_vec();
        dropped.extend_from_slice(&file[bounds[2]..]);
        assert!(matches!(
            read(&dropped, &dek).status,
            ReadStatus::Damaged {
                chunk_index: Some(1),
                cause: DamageCause::Authentication
            }
        ));
        // Swap chunks 1 and 2.
        let mut swapped = file[..bounds[1]].to_vec();
        swapped.extend_from_slice(chunk(2));
        swapped.extend_from_slice(chunk(1));
        swapped.extend_from_slice(&file[bounds[3]..]);
        assert_eq!(swapped.len(), file.len());
        assert!(matches!(
            read(&swapped, &dek).status,
            ReadStatus::Damaged {
                chunk_index: Some(1),
                ..
            }
        ));
        // Garbage after the final chunk.
        let mut trailing = file.clone();
        trailing.extend_from_slice(&[0, 0, 0, 16]);
        trailing.extend_from_slice(&[0; 16]);
        let last = bounds.len() as u32 - 1;
        assert_eq!(
            read(&trailing, &dek).status,
            ReadStatus::Damaged {
                chunk_index: Some(last),
                cause: DamageCause::TrailingData
            }
        );
        // Header of another recording spliced onto these chunks.
        let (other, other_bounds, _) = sample_file(12, 60);
        let mut spliced = other[..other_bounds[0]].to_vec();
        spliced.extend_from_slice(&file[bounds[0]..]);
        assert!(!read(&spliced, &dek).status.is_complete());
    }

    /// Deterministic xorshift, so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn random_mutations_never_panic_never_complete() {
        let (file, _, _) = sample_file(12, 60);
        let dek = Dek::from_bytes(DEK);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..3000 {
            let mut f = file.clone();
            let ops = 1 + rng.below(4);
            for _ in 0..ops {
                match rng.below(5) {
                    0 => {
                        let i = rng.below(f.len());
                        f[i] = rng.next() as u8;
                    }
                    1 => {
                        let n = rng.below(f.len());
                        f.truncate(n);
                    }
                    2 => {
                        let i = rng.below(f.len() + 1);
                        f.insert(i.min(f.len()), rng.next() as u8);
                    }
                    3 if !f.is_empty() => {
                        let i = rng.below(f.len());
                        f.remove(i);
                    }
                    _ => {
                        // Overwrite a 4-byte field with an extreme value.
                        if f.len() >= 4 {
                            let i = rng.below(f.len() - 3);
                            let v = [0u32, 15, 16, u32::MAX, 1 << 20][rng.below(5)];
                            f[i..i + 4].copy_from_slice(&v.to_be_bytes());
                        }
                    }
                }
            }
            let out = read(&f, &dek);
            let _ = read_header(&f);
            if f != file {
                assert!(!out.status.is_complete(), "round {round} undetected");
            }
        }
        // Pure noise too.
        for n in 0..300 {
            let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            assert!(!read(&noise, &dek).status.is_complete());
        }
    }
}
