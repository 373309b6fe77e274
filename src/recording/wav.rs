//! Renders a read recording to a stereo PCM16 8 kHz WAV: left = caller, right = agent.
//!
//! Every audio sample goes to its timeline position; samples nobody recorded (loss, pauses,
//! before a leg started) are silence (0). Samples covered by a pause gap are forced to silence
//! even if audio was (wrongly) recorded there: a pause protects card entry, fail closed.
//! Overlapping audio (duplicates) resolves to the record that comes later in the file.
//!
//! A `Damaged` recording is refused, naming the chunk: a damaged recording is reported, not
//! half-played. A `Truncated` one renders what was authenticated and the report says so.
//!
//! Rendering streams in windows of one minute, so memory does not grow with call length.

use std::path::{Path, PathBuf};

use crate::ids::Leg;
use crate::recording::container::{GapKind, MAX_AUDIO_PAYLOAD, Record, SAMPLE_RATE};
use crate::recording::reader::{DamageCause, ReadOutcome, ReadStatus};

/// Longest recording rendered: 24 hours (a WAV of ~2.7 GB; the RIFF limit is 4 GiB).
pub const MAX_FRAMES: u64 = 24 * 3600 * SAMPLE_RATE as u64;
const WINDOW: u64 = 60 * SAMPLE_RATE as u64;

/// Why a WAV was not produced.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("recording is damaged at {}: {cause}; not rendered", where_(*.chunk_index))]
    Damaged {
        chunk_index: Option<u32>,
        cause: DamageCause,
    },
    #[error("recording has no readable header; nothing to render")]
    NoHeader,
    #[error("recording timeline is {frames} samples long, above the {MAX_FRAMES}-sample limit")]
    TooLong { frames: u64 },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
}

fn where_(chunk: Option<u32>) -> String {
    match chunk {
        Some(i) => format!("chunk {i}"),
        None => "the header".to_owned(),
    }
}

/// What was rendered.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RenderReport {
    /// Stereo frames written (= samples per channel).
    pub frames: u64,
    /// The recording was truncated: the WAV holds only what was authenticated.
    pub truncated: bool,
    /// Samples of audio placed per leg, indexed by `Leg as usize`.
    pub audio_samples: [u64; 2],
    /// Samples declared lost per leg.
    pub loss_samples: [u64; 2],
    /// Samples in pauses per leg.
    pub pause_samples: [u64; 2],
}

/// Renders `outcome` to `out_path` (created or replaced).
pub fn render_stereo_wav(outcome: &ReadOutcome, out_path: &Path) -> Result<RenderReport, WavError> {
    let truncated = match &outcome.status {
        ReadStatus::Complete => false,
        ReadStatus::Truncated { .. } => true,
        ReadStatus::Damaged { chunk_index, cause } => {
            return Err(WavError::Damaged {
                chunk_index: *chunk_index,
                cause: cause.clone(),
            });
        }
    };
    if outcome.header.is_none() {
        return Err(WavError::NoHeader);
    }
    let write_err = |source| WavError::Write {
        path: out_path.to_path_buf(),
        source,
    };

    // Per leg: audio records sorted by position (stable: file order kept for equal positions),
    // and pause ranges.
    let mut audio: [Vec<(u64, &[u8], crate::media::g711::G711)>; 2] = [Vec::new(), Vec::new()];
    let mut pauses: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    let mut report = RenderReport {
        truncated,
        ..RenderReport::default()
    };
    let mut frames = 0u64;
    for r in &outcome.records {
        match r {
            Record::Audio {
                leg,
                pos,
                codec,
                payload,
            } => {
                let l = *leg as usize;
                audio[l].push((*pos, payload.as_slice(), *codec));
                report.audio_samples[l] += payload.len() as u64;
                frames = frames.max(pos.saturating_add(payload.len() as u64));
            }
            Record::Gap {
                leg,
                from,
                to,
                kind,
            } => {
                let l = *leg as usize;
                let n = to.saturating_sub(*from);
                match kind {
                    GapKind::Loss => report.loss_samples[l] += n,
                    GapKind::Pause { .. } => {
                        report.pause_samples[l] += n;
                        pauses[l].push((*from, *to));
                    }
                }
                frames = frames.max(*to);
            }
            Record::End { .. } => {}
        }
    }
    if frames > MAX_FRAMES {
        return Err(WavError::TooLong { frames });
    }
    for a in &mut audio {
        a.sort_by_key(|(pos, _, _)| *pos);
    }

    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(out_path, spec).map_err(write_err)?;
    // frames <= MAX_FRAMES, so the window fits in memory and usize.
    let mut buf = [vec![0i16; WINDOW as usize], vec![0i16; WINDOW as usize]];
    let mut start = 0u64;
    while start < frames {
        let end = (start + WINDOW).min(frames);
        let n = (end - start) as usize;
        for leg in [Leg::Caller, Leg::Agent] {
            let l = leg as usize;
            let out = &mut buf[l][..n];
            out.fill(0);
            // Records are ≤ 1024 samples, so any record touching the window starts at or after
            // start - 1024.
            let first = audio[l].partition_point(|(pos, _, _)| {
                pos.saturating_add(MAX_AUDIO_PAYLOAD as u64) <= start
            });
            for (pos, payload, codec) in audio[l][first..].iter() {
                if *pos >= end {
                    break;
                }
                for (k, byte) in payload.iter().enumerate() {
                    let t = pos + k as u64;
                    if t >= start && t < end {
                        out[(t - start) as usize] = codec.decode(*byte);
                    }
                }
            }
            for (from, to) in &pauses[l] {
                let a = (*from).max(start);
                let b = (*to).min(end);
                if a < b {
                    out[(a - start) as usize..(b - start) as usize].fill(0);
                }
            }
        }
        for (l, r) in buf[0][..n].iter().zip(&buf[1][..n]) {
            w.write_sample(*l).map_err(write_err)?;
            w.write_sample(*r).map_err(write_err)?;
        }
        start = end;
    }
    w.finalize().map_err(write_err)?;
    report.frames = frames;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyId, RecordingId};
    use crate::media::g711::G711;
    use crate::recording::container::Header;
    use crate::recording::keys::Dek;
    use crate::recording::reader::read;
    use crate::recording::writer::RecordingWriter;
    use std::time::{Duration, Instant};

    fn tone(freq: f64, amp: f64, start: u64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|k| {
                let t = (start + k as u64) as f64 / 8000.0;
                (amp * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    fn record(build: impl FnOnce(&mut RecordingWriter), truncate_final: bool) -> (Vec<u8>, Dek) {
        let dek = Dek::from_bytes([9; 32]);
        let t0 = Instant::now();
        let h = Header::new(
            RecordingId::new_random(),
            KeyId::new_random(),
            0,
            Duration::from_secs(1),
        )
        .unwrap();
        let mut w = RecordingWriter::new(h, &dek, t0, Duration::from_secs(1));
        build(&mut w);
        let mut file = Vec::new();
        w.handle_timeout(t0 + Duration::from_secs(1));
        while let Some(b) = w.poll_output() {
            file.extend(b);
        }
        if !truncate_final {
            file.extend(w.finish().unwrap().bytes);
        }
        (file, dek)
    }

    #[test]
    fn tones_land_on_their_channels_at_their_offsets() {
        // Caller: 400 Hz µ-law from sample 800 for 1600 samples (10 packets).
        // Agent: 1000 Hz A-law from sample 2000 for 800 samples, one lost packet in the middle.
        let caller = tone(400.0, 8000.0, 800, 1600);
        let agent = tone(1000.0, 12000.0, 2000, 800);
        let (file, dek) = record(
            |w| {
                for p in 0..10 {
                    let s = &caller[p * 160..(p + 1) * 160];
                    let enc: Vec<u8> = s.iter().map(|x| G711::Pcmu.encode(*x)).collect();
                    w.push_audio(Leg::Caller, 800 + p as u64 * 160, G711::Pcmu, &enc);
                }
                for p in 0..5 {
                    let pos = 2000 + p as u64 * 160;
                    if p == 2 {
                        w.push_gap(Leg::Agent, pos, pos + 160, GapKind::Loss);
                        continue;
                    }
                    let s = &agent[p * 160..(p + 1) * 160];
                    let enc: Vec<u8> = s.iter().map(|x| G711::Pcma.encode(*x)).collect();
                    w.push_audio(Leg::Agent, pos, G711::Pcma, &enc);
                }
            },
            false,
        );
        let outcome = read(&file, &dek);
        assert!(outcome.status.is_complete());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let rep = render_stereo_wav(&outcome, &path).unwrap();
        assert_eq!(rep.frames, 2800);
        assert!(!rep.truncated);
        assert_eq!(rep.audio_samples, [1600, 640]);
        assert_eq!(rep.loss_samples, [0, 160]);

        let mut r = hound::WavReader::open(&path).unwrap();
        let spec = r.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8000, 16)
        );
        let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
        assert_eq!(s.len(), 2 * 2800);
        let left = |i: usize| s[2 * i];
        let right = |i: usize| s[2 * i + 1];
        for i in 0..2800 {
            let exp_l = if (800..2400).contains(&i) {
                G711::Pcmu.decode(G711::Pcmu.encode(caller[i - 800]))
            } else {
                0
            };
            let exp_r = if (2000..2800).contains(&i) && !(2320..2480).contains(&i) {
                G711::Pcma.decode(G711::Pcma.encode(agent[i - 2000]))
            } else {
                0
            };
            assert_eq!(left(i), exp_l, "left sample {i}");
            assert_eq!(right(i), exp_r, "right sample {i}");
        }
        // The tones really are there (not all-zero through some shared bug).
        assert!((800..2400).any(|i| left(i).abs() > 7000));
        assert!((2000..2320).any(|i| right(i).abs() > 11000));
    }

    #[test]
    fn pause_silences_even_recorded_audio() {
        let (file, dek) = record(
            |w| {
                w.push_audio(Leg::Caller, 0, G711::Pcmu, &[0x10; 320]);
                w.push_gap(
                    Leg::Caller,
                    100,
                    200,
                    GapKind::Pause {
                        trigger: 0,
                        digits: 4,
                    },
                );
            },
            false,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.wav");
        let rep = render_stereo_wav(&read(&file, &dek), &path).unwrap();
        assert_eq!(rep.pause_samples, [100, 0]);
        let s: Vec<i16> = hound::WavReader::open(&path)
            .unwrap()
            .samples::<i16>()
            .map(|x| x.unwrap())
            .collect();
        let loud = G711::Pcmu.decode(0x10);
        assert_ne!(loud, 0);
        assert_eq!(s[2 * 99], loud);
        assert!((100..200).all(|i| s[2 * i] == 0));
        assert_eq!(s[2 * 200], loud);
    }

    #[test]
    fn truncated_renders_and_says_so_damaged_refused() {
        let (file, dek) = record(
            |w| w.push_audio(Leg::Agent, 0, G711::Pcma, &[0x55; 160]),
            true,
        );
        let out = read(&file, &dek);
        assert_eq!(out.status, ReadStatus::Truncated { chunks_ok: 1 });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wav");
        let rep = render_stereo_wav(&out, &path).unwrap();
        assert!(rep.truncated);
        assert_eq!(rep.frames, 160);

        let mut bad = file.clone();
        let n = bad.len();
        bad[n - 3] ^= 0xff;
        let out = read(&bad, &dek);
        let path2 = dir.path().join("d.wav");
        let err = render_stereo_wav(&out, &path2).unwrap_err();
        assert!(matches!(
            err,
            WavError::Damaged {
                chunk_index: Some(0),
                ..
            }
        ));
        assert!(err.to_string().contains("chunk 0"), "{err}");
        assert!(!path2.exists());
    }

    #[test]
    fn window_boundaries_are_seamless() {
        // Records straddling the 60 s window boundary, written out of order.
        let b = WINDOW;
        let (file, dek) = record(
            |w| {
                w.push_audio(Leg::Agent, b - 100, G711::Pcmu, &[0x20; 1000]);
                w.push_audio(Leg::Caller, b + 5, G711::Pcmu, &[0x30; 10]);
                w.push_audio(Leg::Caller, b - 1024, G711::Pcmu, &[0x40; 1024]);
            },
            false,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.wav");
        let rep = render_stereo_wav(&read(&file, &dek), &path).unwrap();
        assert_eq!(rep.frames, b + 900);
        let s: Vec<i16> = hound::WavReader::open(&path)
            .unwrap()
            .samples::<i16>()
            .map(|x| x.unwrap())
            .collect();
        let at = |i: u64, ch: u64| s[(2 * i + ch) as usize];
        let (v20, v30, v40) = (
            G711::Pcmu.decode(0x20),
            G711::Pcmu.decode(0x30),
            G711::Pcmu.decode(0x40),
        );
        assert!(((b - 100)..(b + 900)).all(|i| at(i, 1) == v20));
        assert_eq!(at(b - 101, 1), 0);
        assert!(((b - 1024)..b).all(|i| at(i, 0) == v40));
        assert_eq!(at(b, 0), 0);
        assert!(((b + 5)..(b + 15)).all(|i| at(i, 0) == v30));
    }
}
