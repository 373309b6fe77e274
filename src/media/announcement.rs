//! The recording announcement: loading any PCM WAV into 8 kHz mono, and pacing it out as 20 ms
//! G.711 frames.
//!
//! [`Announcement::load`] is the only IO here (it reads one file, once, at config load).
//! [`AnnouncementPlayer`] is sans-IO: the media shell asks [`AnnouncementPlayer::poll_timeout`]
//! when to wake, then drains [`AnnouncementPlayer::poll_frame`] with the current `now`. Frame `i`
//! is due at `start + i × 20 ms`; a shell that wakes late gets every overdue frame, in order, one
//! per call, so the caller hears the whole notice (DESIGN principle 4: the notice is what makes
//! recording lawful).
//!
//! Resampling is a windowed-sinc (Blackman) polyphase FIR: a low-pass at 3.7 kHz before
//! decimation, so content above the 4 kHz Nyquist limit of the telephone band is removed instead
//! of folding back as audible aliases.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::g711::G711;

/// Samples per second of everything downstream of the loader.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples per 20 ms frame at 8 kHz (also bytes per G.711 frame).
pub const FRAME_SAMPLES: usize = 160;
/// Packetisation interval of the player.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
/// Largest announcement file accepted (bounded memory at config load).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Accepted input sample rates.
pub const MIN_INPUT_RATE: u32 = 2000;
pub const MAX_INPUT_RATE: u32 = 384_000;

/// Why an announcement could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AnnouncementError {
    #[error("announcement {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("announcement {}: not a readable WAV file: {source}", path.display())]
    Wav { path: PathBuf, source: hound::Error },
    #[error("announcement {}: {bytes} bytes exceeds the {MAX_FILE_BYTES}-byte limit", path.display())]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error("announcement {}: unsupported sample format ({bits}-bit {format})", path.display())]
    UnsupportedFormat {
        path: PathBuf,
        bits: u16,
        format: &'static str,
    },
    #[error("announcement {}: sample rate {rate} Hz outside {MIN_INPUT_RATE}..={MAX_INPUT_RATE}", path.display())]
    UnsupportedRate { path: PathBuf, rate: u32 },
    #[error("announcement {}: no channels", path.display())]
    NoChannels { path: PathBuf },
    #[error("announcement {}: contains no audio", path.display())]
    Empty { path: PathBuf },
}

/// A loaded announcement: 8 kHz mono linear PCM plus the SHA-256 of the file it came from (the
/// call record stores the hash, proving which notice the caller heard).
#[derive(Clone)]
pub struct Announcement {
    pub path: PathBuf,
    /// SHA-256 of the file's bytes as read.
    pub sha256: [u8; 32],
    /// The audio, resampled to 8 kHz mono. Shared (cheaply cloned) with every player.
    pub samples_8k: Arc<[i16]>,
}

impl std::fmt::Debug for Announcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcement")
            .field("path", &self.path)
            .field("sha256", &hex(&self.sha256))
            .field("samples_8k", &self.samples_8k.len())
            .finish()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

impl Announcement {
    /// Reads a WAV file: 8/16/24/32-bit integer or 32-bit float PCM, any rate in
    /// [`MIN_INPUT_RATE`]..=[`MAX_INPUT_RATE`], any channel count (averaged to mono).
    pub fn load(path: impl AsRef<Path>) -> Result<Announcement, AnnouncementError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| AnnouncementError::Io {
            path: path.clone(),
            source,
        };
        let bytes_len = std::fs::metadata(&path).map_err(io)?.len();
        if bytes_len > MAX_FILE_BYTES {
            return Err(AnnouncementError::TooLarge {
                path,
                bytes: bytes_len,
            });
        }
        let bytes = std::fs::read(&path).map_err(io)?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let samples_8k = decode_wav(&bytes).map_err(|e| e.with_path(path.clone()))?;
        if samples_8k.is_empty() {
            return Err(AnnouncementError::Empty { path });
        }
        Ok(Announcement {
            path,
            sha256,
            samples_8k: samples_8k.into(),
        })
    }

    /// Builds an announcement from 8 kHz samples already in memory (tests, generated prompts).
    /// The hash is of the little-endian sample bytes.
    pub fn from_samples_8k(samples: Vec<i16>) -> Announcement {
        let mut h = Sha256::new();
        for s in &samples {
            h.update(s.to_le_bytes());
        }
        Announcement {
            path: PathBuf::new(),
            sha256: h.finalize().into(),
            samples_8k: samples.into(),
        }
    }

    /// Playing time at 8 kHz.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.samples_8k.len() as u64 * 1_000_000_000 / SAMPLE_RATE as u64)
    }

    /// The hash as lowercase hex, for call records and audit entries.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    /// Number of 20 ms frames the player will send (last one padded with silence).
    pub fn frame_count(&self) -> u32 {
        frame_count(self.samples_8k.len())
    }
}

fn frame_count(samples: usize) -> u32 {
    u32::try_from(samples.div_ceil(FRAME_SAMPLES)).unwrap_or(u32::MAX)
}

/// Decoding error before the path is attached.
enum DecodeError {
    Wav(hound::Error),
    Format(u16, &'static str),
    Rate(u32),
    NoChannels,
}

impl DecodeError {
    fn with_path(self, path: PathBuf) -> AnnouncementError {
        match self {
            DecodeError::Wav(source) => AnnouncementError::Wav { path, source },
            DecodeError::Format(bits, format) => {
                AnnouncementError::UnsupportedFormat { path, bits, format }
            }
            DecodeError::Rate(rate) => AnnouncementError::UnsupportedRate { path, rate },
            DecodeError::NoChannels => AnnouncementError::NoChannels { path },
        }
    }
}

fn decode_wav(bytes: &[u8]) -> Result<Vec<i16>, DecodeError> {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(DecodeError::Wav)?;
    let spec = reader.spec();
    let channels = spec.channels as usize;
    if channels == 0 {
        return Err(DecodeError::NoChannels);
    }
    if !(MIN_INPUT_RATE..=MAX_INPUT_RATE).contains(&spec.sample_rate) {
        return Err(DecodeError::Rate(spec.sample_rate));
    }
    // Interleaved samples normalised to [-1, 1].
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (v as f64 * scale) as f32))
                .collect::<Result<_, _>>()
                .map_err(DecodeError::Wav)?
        }
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .map(|s| s.map(|v| if v.is_finite() { v } else { 0.0 }))
            .collect::<Result<_, _>>()
            .map_err(DecodeError::Wav)?,
        (hound::SampleFormat::Int, bits) => return Err(DecodeError::Format(bits, "integer")),
        (hound::SampleFormat::Float, bits) => return Err(DecodeError::Format(bits, "float")),
    };
    let mono: Vec<f32> = interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect();
    let out = resample_to_8k(&mono, spec.sample_rate);
    Ok(out
        .iter()
        .map(|&v| (v * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect())
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Zero crossings of the sinc on each side of the centre tap.
const SINC_ZEROS: f64 = 32.0;
/// Pass-band edge when downsampling to 8 kHz.
const CUTOFF_HZ: f64 = 3700.0;
/// Above this many table entries, weights are computed per output sample instead.
const MAX_TABLE: usize = 1 << 20;

/// Windowed-sinc resampler from `rate` to 8 kHz. Zero-phase (no delay): output sample `n` is the
/// band-limited input evaluated at time `n / 8000` s.
fn resample_to_8k(x: &[f32], rate: u32) -> Vec<f32> {
    if rate == SAMPLE_RATE || x.is_empty() {
        return x.to_vec();
    }
    let g = gcd(rate, SAMPLE_RATE);
    let (l, m) = ((SAMPLE_RATE / g) as u64, (rate / g) as u64); // t_n = n * m / l input samples
    let fc = CUTOFF_HZ.min(0.45 * rate as f64);
    let c = 2.0 * fc / rate as f64; // cutoff relative to the input Nyquist
    let hw = SINC_ZEROS / c; // half window, in input samples
    let k = hw.ceil() as i64;
    let taps = (2 * k) as usize;

    // Weights for output time t = i + frac over inputs i-k+1 ..= i+k, normalised to unity DC gain.
    let weights = |frac: f64, w: &mut Vec<f32>| {
        w.clear();
        let mut sum = 0.0;
        let mut tmp = Vec::with_capacity(taps);
        for j in (-k + 1)..=k {
            let d = frac - j as f64; // t - input index
            let v = if d.abs() >= hw {
                0.0
            } else {
                let x = c * d;
                let sinc = if x.abs() < 1e-12 {
                    1.0
                } else {
                    (PI * x).sin() / (PI * x)
                };
                let r = d / hw;
                let win = 0.42 + 0.5 * (PI * r).cos() + 0.08 * (2.0 * PI * r).cos();
                c * sinc * win
            };
            sum += v;
            tmp.push(v);
        }
        let norm = if sum.abs() > 1e-9 { 1.0 / sum } else { 1.0 };
        w.extend(tmp.iter().map(|v| (v * norm) as f32));
    };

    let table: Option<Vec<Vec<f32>>> =
        ((l as usize).saturating_mul(taps) <= MAX_TABLE).then(|| {
            (0..l)
                .map(|p| {
                    let mut w = Vec::new();
                    weights(p as f64 / l as f64, &mut w);
                    w
                })
                .collect()
        });

    let out_len = ((x.len() as u64 * l).div_ceil(m)) as usize;
    let mut out = Vec::with_capacity(out_len);
    let mut scratch = Vec::with_capacity(taps);
    let n_in = x.len() as i64;
    for n in 0..out_len as u64 {
        let pos = n * m;
        let i = (pos / l) as i64;
        let p = pos % l;
        let w: &[f32] = match &table {
            Some(t) => &t[p as usize],
            None => {
                weights(p as f64 / l as f64, &mut scratch);
                &scratch
            }
        };
        let first = i - k + 1;
        let mut acc = 0.0f32;
        // Clip the tap range to the input (zeros outside).
        let lo = (-first).max(0) as usize;
        let hi = ((n_in - first).min(taps as i64)).max(0) as usize;
        for t in lo..hi.max(lo) {
            acc += w[t] * x[(first + t as i64) as usize];
        }
        out.push(acc);
    }
    out
}

/// Synthesises a sine tone at 8 kHz: `peak` amplitude, `freq_hz`, for `duration` (test audio for
/// this and other modules).
pub fn tone(freq_hz: f64, peak: i16, duration: Duration) -> Vec<i16> {
    let n = (duration.as_secs_f64() * SAMPLE_RATE as f64).round() as usize;
    (0..n)
        .map(|i| {
            (peak as f64 * (2.0 * PI * freq_hz * i as f64 / SAMPLE_RATE as f64).sin()).round()
                as i16
        })
        .collect()
}

/// Goertzel power of `freq_hz` in `samples` taken at `rate` Hz (normalised by length²), for tests
/// that check what a listener would hear.
pub fn goertzel_power(samples: &[i16], rate: u32, freq_hz: f64) -> f64 {
    let w = 2.0 * PI * freq_hz / rate as f64;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let p = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = samples.len().max(1) as f64;
    p / (n * n)
}

/// One 20 ms G.711 frame of the announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub payload: [u8; FRAME_SAMPLES],
    /// 0, 1, 2, …: RTP timestamp offset is `index × 160`, sequence offset is `index`.
    pub index: u32,
    /// Set on the first frame (start of a talkspurt, RFC 3551 §4.1).
    pub marker: bool,
}

impl Frame {
    /// RTP timestamp offset of this frame from the first.
    pub fn timestamp_offset(&self) -> u32 {
        self.index.wrapping_mul(FRAME_SAMPLES as u32)
    }
}

/// Sans-IO pacer: yields the announcement as G.711 frames, frame `i` due at `start + i × 20 ms`.
#[derive(Debug, Clone)]
pub struct AnnouncementPlayer {
    samples: Arc<[i16]>,
    codec: G711,
    start: Instant,
    next: u32,
    frames: u32,
}

impl AnnouncementPlayer {
    /// A player for `samples` (8 kHz mono), first frame due at `start`.
    pub fn new(samples: Arc<[i16]>, codec: G711, start: Instant) -> AnnouncementPlayer {
        let frames = frame_count(samples.len());
        AnnouncementPlayer {
            samples,
            codec,
            start,
            next: 0,
            frames,
        }
    }

    /// Convenience: a player for a loaded announcement.
    pub fn for_announcement(a: &Announcement, codec: G711, start: Instant) -> AnnouncementPlayer {
        Self::new(a.samples_8k.clone(), codec, start)
    }

    fn due(&self, index: u32) -> Instant {
        self.start + FRAME_DURATION * index
    }

    /// When the next frame is due; `None` once every frame has been returned.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.next < self.frames).then(|| self.due(self.next))
    }

    /// The next frame if it is due at `now`. Call repeatedly until `None`: a late caller gets all
    /// overdue frames in order, none skipped.
    pub fn poll_frame(&mut self, now: Instant) -> Option<Frame> {
        if self.next >= self.frames || self.due(self.next) > now {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let mut payload = [self.codec.silence(); FRAME_SAMPLES];
        let from = index as usize * FRAME_SAMPLES;
        let to = (from + FRAME_SAMPLES).min(self.samples.len());
        for (dst, &s) in payload.iter_mut().zip(&self.samples[from..to]) {
            *dst = self.codec.encode(s);
        }
        Some(Frame {
            payload,
            index,
            marker: index == 0,
        })
    }

    /// All frames have been returned.
    pub fn is_done(&self) -> bool {
        self.next >= self.frames
    }

    /// Frames returned so far.
    pub fn frames_sent(&self) -> u32 {
        self.next
    }

    /// Total frames.
    pub fn frame_count(&self) -> u32 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(
        path: &Path,
        spec: hound::WavSpec,
        f: impl Fn(usize, usize) -> f64,
        frames: usize,
    ) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..frames {
            for ch in 0..spec.channels as usize {
                let v = f(i, ch);
                match spec.sample_format {
                    hound::SampleFormat::Float => w.write_sample(v as f32).unwrap(),
                    hound::SampleFormat::Int => {
                        let full = (1i64 << (spec.bits_per_sample - 1)) as f64 - 1.0;
                        w.write_sample((v * full).round() as i32).unwrap()
                    }
                }
            }
        }
        w.finalize().unwrap();
    }

    fn sine(freq: f64, rate: u32, amp: f64) -> impl Fn(usize, usize) -> f64 {
        move |i, _| amp * (2.0 * PI * freq * i as f64 / rate as f64).sin()
    }

    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let ma = a.iter().sum::<f64>() / n as f64;
        let mb = b.iter().sum::<f64>() / n as f64;
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for i in 0..n {
            sab += (a[i] - ma) * (b[i] - mb);
            saa += (a[i] - ma).powi(2);
            sbb += (b[i] - mb).powi(2);
        }
        sab / (saa * sbb).sqrt()
    }

    fn to_f64(s: &[i16]) -> Vec<f64> {
        s.iter().map(|&v| v as f64).collect()
    }

    #[test]
    fn stereo_16k_downmixed_resampled_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notice.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        // Left: 440 Hz. Right: the same 440 Hz plus a 6 kHz tone that must not survive (it would
        // alias to 2 kHz without a low-pass).
        let tone_fn = sine(440.0, 16000, 0.4);
        let hf = sine(6000.0, 16000, 0.4);
        write_wav(
            &path,
            spec,
            |i, ch| {
                if ch == 0 {
                    tone_fn(i, 0)
                } else {
                    tone_fn(i, 0) + hf(i, 0)
                }
            },
            16000,
        );

        let a = Announcement::load(&path).unwrap();
        let expect: [u8; 32] = Sha256::digest(std::fs::read(&path).unwrap()).into();
        assert_eq!(a.sha256, expect);
        assert_eq!(a.sha256_hex().len(), 64);
        assert_eq!(a.samples_8k.len(), 8000);
        assert_eq!(a.duration(), Duration::from_secs(1));

        let body = &a.samples_8k[400..7600]; // away from the edges
        let p440 = goertzel_power(body, 8000, 440.0);
        let p2k = goertzel_power(body, 8000, 2000.0); // where 6 kHz would fold
        let p1k = goertzel_power(body, 8000, 1000.0);
        assert!(p440 > 1000.0 * p2k, "440 Hz {p440} vs alias at 2 kHz {p2k}");
        assert!(p440 > 1000.0 * p1k);
        // Amplitude preserved: the downmix of (0.4 sin) and (0.4 sin + hf) is 0.4 sin at 440 Hz.
        let ideal = tone(440.0, (0.4 * 32767.0) as i16, Duration::from_secs(1));
        let c = correlation(&to_f64(body), &to_f64(&ideal[400..7600]));
        assert!(c > 0.999, "correlation {c}");
        let peak = body.iter().map(|v| v.unsigned_abs()).max().unwrap();
        assert!((12800..=13400).contains(&peak), "peak {peak}");
    }

    #[test]
    fn anti_alias_attenuates_near_nyquist() {
        // A 4.1 kHz tone in a 16 kHz file would fold to 3.9 kHz; 6 kHz to 2 kHz.
        let dir = tempfile::tempdir().unwrap();
        for (freq, alias) in [(4100.0, 3900.0), (6000.0, 2000.0), (7000.0, 1000.0)] {
            let path = dir.path().join(format!("hf{freq}.wav"));
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 16000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            write_wav(&path, spec, sine(freq, 16000, 0.5), 16000);
            let a = Announcement::load(&path).unwrap();
            let body = &a.samples_8k[400..7600];
            let reference = tone(alias, (0.5 * 32767.0) as i16, Duration::from_millis(900));
            let p_ref = goertzel_power(&reference, 8000, alias);
            let p = goertzel_power(body, 8000, alias);
            // At least 40 dB down.
            assert!(
                p < p_ref * 1e-4,
                "{freq} Hz leaks to {alias} Hz: {p} vs {p_ref}"
            );
        }
    }

    #[test]
    fn float_44k1_and_other_formats() {
        let dir = tempfile::tempdir().unwrap();
        let ideal = tone(440.0, (0.5 * 32767.0) as i16, Duration::from_secs(1));
        for (rate, bits, fmt) in [
            (44100, 32, hound::SampleFormat::Float),
            (48000, 24, hound::SampleFormat::Int),
            (8000, 8, hound::SampleFormat::Int),
            (11025, 32, hound::SampleFormat::Int),
            (22050, 16, hound::SampleFormat::Int),
        ] {
            let path = dir.path().join(format!("t{rate}-{bits}.wav"));
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: rate,
                bits_per_sample: bits,
                sample_format: fmt,
            };
            write_wav(&path, spec, sine(440.0, rate, 0.5), rate as usize);
            let a = Announcement::load(&path).unwrap_or_else(|e| panic!("{rate}/{bits}: {e}"));
            assert_eq!(a.samples_8k.len(), 8000, "{rate}/{bits}");
            let c = correlation(
                &to_f64(&a.samples_8k[400..7600]),
                &to_f64(&ideal[400..7600]),
            );
            let min = if bits == 8 { 0.99 } else { 0.999 };
            assert!(c > min, "{rate}/{bits}: correlation {c}");
            let p440 = goertzel_power(&a.samples_8k, 8000, 440.0);
            assert!(p440 > 100.0 * goertzel_power(&a.samples_8k, 8000, 1300.0));
        }
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-notice.wav");
        let e = Announcement::load(&missing).unwrap_err();
        assert!(matches!(e, AnnouncementError::Io { .. }));
        assert!(e.to_string().contains("missing-notice.wav"), "{e}");

        let junk = dir.path().join("junk.wav");
        std::fs::write(&junk, b"RIFF....not a wav at all").unwrap();
        let e = Announcement::load(&junk).unwrap_err();
        assert!(
            matches!(e, AnnouncementError::Wav { .. }) && e.to_string().contains("junk.wav"),
            "{e}"
        );

        let empty = dir.path().join("empty.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        hound::WavWriter::create(&empty, spec)
            .unwrap()
            .finalize()
            .unwrap();
        let e = Announcement::load(&empty).unwrap_err();
        assert!(
            matches!(e, AnnouncementError::Empty { .. }) && e.to_string().contains("empty.wav"),
            "{e}"
        );
    }

    #[test]
    fn player_paces_every_20ms_and_sounds_like_the_source() {
        let start = Instant::now();
        let src = tone(440.0, 12000, Duration::from_millis(1010)); // 8080 samples: 50.5 frames
        let a = Announcement::from_samples_8k(src.clone());
        assert_eq!(a.frame_count(), 51);
        let mut p = AnnouncementPlayer::for_announcement(&a, G711::Pcma, start);
        let mut decoded = Vec::new();
        let mut now = start;
        let mut frames = 0;
        while let Some(t) = p.poll_timeout() {
            assert_eq!(
                t,
                start + FRAME_DURATION * frames,
                "frame {frames} due time"
            );
            // Just before the deadline nothing is released.
            if t > start {
                assert_eq!(p.poll_frame(t - Duration::from_micros(1)), None);
            }
            now = now.max(t);
            let f = p.poll_frame(now).expect("due frame");
            assert_eq!(f.index, frames);
            assert_eq!(f.marker, frames == 0);
            assert_eq!(f.timestamp_offset(), frames * 160);
            assert_eq!(p.poll_frame(now), None, "only one frame per 20 ms");
            decoded.extend(f.payload.iter().map(|&b| G711::Pcma.decode(b)));
            frames += 1;
        }
        assert!(p.is_done());
        assert_eq!(frames, 51);
        assert_eq!(decoded.len(), 51 * 160);
        // Last frame padded with silence.
        assert!(decoded[8080..].iter().all(|&s| s.abs() <= 8));
        let c = correlation(&to_f64(&decoded[..8080]), &to_f64(&src));
        assert!(c >= 0.99, "correlation {c}");
    }

    #[test]
    fn late_poll_releases_overdue_frames_in_order() {
        let start = Instant::now();
        let src: Vec<i16> = (0..1600).map(|i| (i * 10) as i16).collect(); // 10 frames, ramp
        let mut p = AnnouncementPlayer::new(src.clone().into(), G711::Pcmu, start);
        assert_eq!(p.poll_frame(start).map(|f| f.index), Some(0));
        // Wake 75 ms late: frames 1..=3 (due at 20, 40, 60 ms) are overdue, 4 (80 ms) is not.
        let late = start + Duration::from_millis(75);
        let got: Vec<u32> = std::iter::from_fn(|| p.poll_frame(late))
            .map(|f| f.index)
            .collect();
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(p.poll_timeout(), Some(start + Duration::from_millis(80)));
        // Far in the future: everything left, in order, then done.
        let rest: Vec<Frame> =
            std::iter::from_fn(|| p.poll_frame(start + Duration::from_secs(10))).collect();
        assert_eq!(
            rest.iter().map(|f| f.index).collect::<Vec<_>>(),
            (4..10).collect::<Vec<_>>()
        );
        assert!(rest.iter().all(|f| !f.marker));
        assert_eq!(
            G711::Pcmu.decode(rest[5].payload[159]),
            G711::Pcmu.decode(G711::Pcmu.encode(src[1599]))
        );
        assert!(p.is_done() && p.poll_timeout().is_none());
    }
}
