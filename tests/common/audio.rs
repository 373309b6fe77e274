//! Test signals and what a listener would measure: G.711 decoding of what a phone received and
//! aligned normalised cross-correlation against the signal that was sent.

use std::f64::consts::PI;
use std::path::Path;

use callgate::media::g711::G711;

use super::phone::RtpRx;

/// Sample rate of every phone signal.
pub const RATE: u32 = 8000;

/// Deterministic xorshift noise in [-1, 1).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Speech-like test signal: band-limited (≈300–3000 Hz) seeded noise under a syllable-rate
/// envelope. Correlatable (no periodicity for a lag search to lock onto wrongly) and distinct per
/// seed. `seconds` long at 8 kHz, peak about `peak`.
pub fn speechlike(seed: u64, syllable_hz: f64, seconds: f64, peak: f64) -> Vec<i16> {
    let n = (seconds * RATE as f64) as usize;
    let mut noise = Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // Band-pass: one-pole high-pass at ~300 Hz, then two one-pole low-passes at ~3 kHz.
    let hp_a = (-2.0 * PI * 300.0 / RATE as f64).exp();
    let lp_a = (-2.0 * PI * 3000.0 / RATE as f64).exp();
    let (mut hp_prev_x, mut hp_y, mut lp1, mut lp2) = (0.0, 0.0, 0.0, 0.0);
    let mut raw = Vec::with_capacity(n);
    for i in 0..n {
        let x = noise.next();
        hp_y = hp_a * (hp_y + x - hp_prev_x);
        hp_prev_x = x;
        lp1 = lp_a * lp1 + (1.0 - lp_a) * hp_y;
        lp2 = lp_a * lp2 + (1.0 - lp_a) * lp1;
        let t = i as f64 / RATE as f64;
        let env = 0.35 + 0.65 * (PI * syllable_hz * t).sin().abs();
        raw.push(lp2 * env);
    }
    let max = raw.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-9);
    raw.iter()
        .map(|v| (v / max * peak).round() as i16)
        .collect()
}

/// Signal A (what the caller says).
pub fn signal_a(seconds: f64) -> Vec<i16> {
    speechlike(0xA11CE, 3.1, seconds, 9000.0)
}

/// Signal B (what the agent says).
pub fn signal_b(seconds: f64) -> Vec<i16> {
    speechlike(0xB0B, 4.3, seconds, 9000.0)
}

/// The announcement as a function of time: a linear chirp 400 → 2800 Hz plus a second,
/// falling component, so no lag but the true one lines up. Sampled at any rate.
pub fn announcement_at(rate: u32, seconds: f64) -> Vec<i16> {
    let n = (seconds * rate as f64).round() as usize;
    let (f0, f1) = (400.0, 2800.0);
    let k = (f1 - f0) / seconds;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let up = (2.0 * PI * (f0 * t + 0.5 * k * t * t)).sin();
            let down = (2.0 * PI * (1800.0 * t - 0.5 * 300.0 * t * t)).sin();
            // Short fades so the file starts and ends cleanly.
            let fade = (t / 0.01).min(1.0).min((seconds - t) / 0.01).max(0.0);
            ((0.30 * up + 0.20 * down) * fade * 32767.0).round() as i16
        })
        .collect()
}

/// Writes mono 16-bit PCM WAV at `rate`.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    // Invariant: the test's own temp dir is writable.
    let mut w = hound::WavWriter::create(path, spec).expect("create announcement WAV");
    for &s in samples {
        w.write_sample(s).expect("write WAV sample");
    }
    w.finalize().expect("finalise WAV");
}

/// Reads a stereo WAV into (left, right).
pub fn read_stereo_wav(path: &Path) -> (u32, Vec<i16>, Vec<i16>) {
    let mut r = hound::WavReader::open(path).expect("open rendered WAV");
    let spec = r.spec();
    assert_eq!(spec.channels, 2, "rendered recording must be stereo");
    let all: Vec<i16> = r.samples::<i16>().map(|s| s.expect("WAV sample")).collect();
    let left = all.iter().step_by(2).copied().collect();
    let right = all.iter().skip(1).step_by(2).copied().collect();
    (spec.sample_rate, left, right)
}

/// Decodes one G.711 payload; other payload types (telephone-event, comfort noise) give nothing.
pub fn decode(pt: u8, payload: &[u8]) -> Vec<i16> {
    match G711::from_payload_type(pt) {
        Some(codec) => payload.iter().map(|&b| codec.decode(b)).collect(),
        None => Vec::new(),
    }
}

/// The audio of received packets, in arrival order, concatenated (loopback does not lose or
/// reorder, so arrival order is the sender's order).
pub fn received_audio<'a>(packets: impl IntoIterator<Item = &'a RtpRx>) -> Vec<i16> {
    packets
        .into_iter()
        .flat_map(|p| decode(p.pt, &p.payload))
        .collect()
}

/// Encodes with `codec` and decodes again: what a perfect G.711 path delivers.
pub fn through_g711(codec: G711, samples: &[i16]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| codec.decode(codec.encode(s)))
        .collect()
}

/// Normalised cross-correlation of `reference[i]` with `received[i + lag]` over their overlap.
pub fn correlation_at(reference: &[i16], received: &[i16], lag: i64) -> f64 {
    let start = 0i64.max(-lag) as usize;
    let end = (reference.len() as i64)
        .min(received.len() as i64 - lag)
        .max(0) as usize;
    if end <= start {
        return 0.0;
    }
    let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
    for i in start..end {
        let x = reference[i] as f64;
        let y = received[(i as i64 + lag) as usize] as f64;
        xy += x * y;
        xx += x * x;
        yy += y * y;
    }
    if xx == 0.0 || yy == 0.0 {
        return 0.0;
    }
    xy / (xx * yy).sqrt()
}

/// Finds where `reference` sits in `received`: the lag in `-max_lag..=max_lag` (samples;
/// `received[i + lag] ≈ reference[i]`) with the highest normalised correlation over the overlap,
/// and that correlation.
///
/// Two stages to stay fast in an unoptimised test build: a probe window from the middle of the
/// reference (≤ 1024 samples, 128 ms) is slid across every lag, then the full-overlap correlation is
/// evaluated at the best probe lags (and ±2 around them) and the best of those is returned.
pub fn best_alignment_correlation(
    reference: &[i16],
    received: &[i16],
    max_lag: usize,
) -> (i64, f64) {
    if reference.is_empty() || received.is_empty() {
        return (0, 0.0);
    }
    let w = reference
        .len()
        .min(1024)
        .min(reference.len().div_ceil(2).max(1));
    let w0 = (reference.len() - w) / 2;
    let probe: Vec<f64> = reference[w0..w0 + w].iter().map(|&s| s as f64).collect();
    let pp: f64 = probe.iter().map(|x| x * x).sum();
    let recv: Vec<f64> = received.iter().map(|&s| s as f64).collect();
    // Prefix sums of energy for the received window norm.
    let mut energy = vec![0.0f64; recv.len() + 1];
    for (i, y) in recv.iter().enumerate() {
        energy[i + 1] = energy[i] + y * y;
    }
    let max_lag = max_lag as i64;
    let mut scored: Vec<(f64, i64)> = Vec::new();
    for lag in -max_lag..=max_lag {
        let s = w0 as i64 + lag;
        if s < 0 || s as usize + w > recv.len() {
            continue;
        }
        let s = s as usize;
        let yy = energy[s + w] - energy[s];
        if yy <= 0.0 || pp <= 0.0 {
            continue;
        }
        let xy: f64 = probe.iter().zip(&recv[s..s + w]).map(|(x, y)| x * y).sum();
        scored.push((xy / (pp * yy).sqrt(), lag));
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best = (0i64, f64::MIN);
    let candidates: Vec<i64> = if scored.is_empty() {
        // The received signal is shorter than the probe window would need: plain search.
        (-max_lag..=max_lag).collect()
    } else {
        scored
            .iter()
            .take(3)
            .flat_map(|&(_, l)| (l - 2)..=(l + 2))
            .collect()
    };
    for lag in candidates {
        let r = correlation_at(reference, received, lag);
        if r > best.1 {
            best = (lag, r);
        }
    }
    best
}

/// RMS level.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// A rendered recording at `wav` is 8 kHz stereo whose left channel is `caller` and right
/// channel is `agent` (best-aligned correlation at least 0.95 each).
#[track_caller]
pub fn assert_stereo_holds(wav: &Path, caller: &[i16], agent: &[i16]) {
    let (rate, left, right) = read_stereo_wav(wav);
    assert_eq!(rate, 8000);
    let (_, r_left) = best_alignment_correlation(caller, &left, 20_000);
    let (_, r_right) = best_alignment_correlation(agent, &right, 20_000);
    assert!(
        r_left >= 0.95 && r_right >= 0.95,
        "left~caller {r_left:.3}, right~agent {r_right:.3}"
    );
}
