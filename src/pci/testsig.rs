//! Test signal generators: DTMF, speech-like voiced sounds, music, tones, noise (8 kHz).
//!
//! Everything is built on one global sample clock so phases are continuous across segments and
//! frames. Levels are in dBm0 (0 dBm0 = a sine of peak [`DBM0_PEAK`]).

use std::f64::consts::PI;
use std::ops::Range;

use super::Digit;
use super::inband::{COLS, DBM0_PEAK, ROWS};
use crate::media::g711::G711;

pub fn amp(dbm0: f64) -> f64 {
    DBM0_PEAK as f64 * 10f64.powf(dbm0 / 20.0)
}

/// Deterministic xorshift generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    /// Approximately normal, unit variance.
    pub fn gauss(&mut self) -> f64 {
        (0..12).map(|_| (self.uniform() + 1.0) / 2.0).sum::<f64>() - 6.0
    }
}

/// A signal under construction, with the sample ranges where DTMF tones were placed.
#[derive(Default)]
pub struct Sig {
    pub s: Vec<f64>,
    pub tones: Vec<Range<usize>>,
}

fn ms(ms: f64) -> usize {
    (ms * 8.0).round() as usize
}

const VOWELS: [[f64; 3]; 5] = [
    [730.0, 1090.0, 2440.0], // a
    [270.0, 2290.0, 3010.0], // i
    [300.0, 870.0, 2240.0],  // u
    [530.0, 1840.0, 2480.0], // e
    [570.0, 840.0, 2410.0],  // o
];

impl Sig {
    pub fn new() -> Sig {
        Sig::default()
    }
    fn t(&self) -> usize {
        self.s.len()
    }
    pub fn silence(mut self, d_ms: f64) -> Sig {
        let n = ms(d_ms);
        self.s.extend(std::iter::repeat_n(0.0, n));
        self
    }
    /// A DTMF tone with separate row / column levels (twist = row - col).
    pub fn dtmf_levels(mut self, key: char, d_ms: f64, row_db: f64, col_db: f64) -> Sig {
        let d = Digit::from_char(key).expect("test digit");
        let (r, c) = d.row_col();
        let (fr, fc) = (ROWS[r] as f64, COLS[c] as f64);
        let (ar, ac) = (amp(row_db), amp(col_db));
        let start = self.t();
        for i in 0..ms(d_ms) {
            let t = (start + i) as f64 / 8000.0;
            self.s
                .push(ar * (2.0 * PI * fr * t).sin() + ac * (2.0 * PI * fc * t + 0.7).sin());
        }
        self.tones.push(start..self.t());
        self
    }
    /// A typical phone DTMF tone: row -8 dBm0, column -6 dBm0.
    pub fn dtmf(self, key: char, d_ms: f64) -> Sig {
        self.dtmf_levels(key, d_ms, -8.0, -6.0)
    }
    /// Keys with a 70 ms tone and a 70 ms gap each.
    pub fn keys(mut self, keys: &str) -> Sig {
        for k in keys.chars() {
            self = self.dtmf(k, 70.0).silence(70.0);
        }
        self
    }
    pub fn sine(mut self, f: f64, d_ms: f64, dbm0: f64) -> Sig {
        let a = amp(dbm0);
        let start = self.t();
        for i in 0..ms(d_ms) {
            let t = (start + i) as f64 / 8000.0;
            self.s.push(a * (2.0 * PI * f * t).sin());
        }
        self
    }
    pub fn noise(mut self, d_ms: f64, dbm0: f64, seed: u64) -> Sig {
        let mut rng = Rng::new(seed);
        let rms = amp(dbm0) / 2f64.sqrt();
        for _ in 0..ms(d_ms) {
            self.s.push(rms * rng.gauss());
        }
        self
    }
    /// Voiced speech-like sound: harmonics of a gliding f0 shaped by formants that move from
    /// vowel `from` to vowel `to`, with syllable envelopes. Overall level about `dbm0`.
    pub fn voiced(mut self, d_ms: f64, f0: (f64, f64), from: usize, to: usize, dbm0: f64) -> Sig {
        let n = ms(d_ms);
        let (va, vb) = (VOWELS[from % 5], VOWELS[to % 5]);
        let a = amp(dbm0);
        let mut phase = 0.0f64;
        for i in 0..n {
            let x = i as f64 / n.max(1) as f64;
            let f0t = f0.0 + (f0.1 - f0.0) * x + 6.0 * (2.0 * PI * 5.0 * i as f64 / 8000.0).sin();
            phase += 2.0 * PI * f0t / 8000.0;
            let formants: Vec<f64> = (0..3).map(|k| va[k] + (vb[k] - va[k]) * x).collect();
            let mut v = 0.0;
            let mut k = 1.0;
            while k * f0t < 3600.0 {
                let f = k * f0t;
                let env: f64 = formants
                    .iter()
                    .zip([1.0, 0.6, 0.3])
                    .map(|(ff, g)| g * (-((f - ff) / 110.0).powi(2)).exp())
                    .sum::<f64>()
                    + 0.05 / k;
                v += env * (k * phase).sin();
                k += 1.0;
            }
            // Syllables of 180 ms with soft edges.
            let syl = (PI * ((i % 1440) as f64 / 1440.0)).sin().powf(0.5);
            self.s.push(a * 0.8 * v * syl);
        }
        self
    }
    /// A chord of harmonic-rich notes (sawtooth-like, 1/k harmonics).
    pub fn chord(mut self, notes: &[f64], d_ms: f64, dbm0: f64) -> Sig {
        let a = amp(dbm0) / notes.len() as f64;
        let start = self.t();
        let n = ms(d_ms);
        for i in 0..n {
            let t = (start + i) as f64 / 8000.0;
            let env = (-(i as f64) / 8000.0 * 1.5).exp();
            let mut v = 0.0;
            for &f in notes {
                let mut k = 1.0;
                while k * f < 3800.0 && k <= 8.0 {
                    v += (2.0 * PI * k * f * t).sin() / k;
                    k += 1.0;
                }
            }
            self.s.push(a * env * v);
        }
        self
    }
    /// Adds white noise at `dbm0` over the whole signal so far.
    pub fn plus_noise(mut self, dbm0: f64, seed: u64) -> Sig {
        let mut rng = Rng::new(seed);
        let rms = amp(dbm0) / 2f64.sqrt();
        for x in &mut self.s {
            *x += rms * rng.gauss();
        }
        self
    }
    /// Clipped 16-bit samples after a G.711 µ-law round trip (what the relay decodes).
    pub fn pcm(&self) -> Vec<i16> {
        self.s
            .iter()
            .map(|&x| {
                let s = x.round().clamp(-32768.0, 32767.0) as i16;
                G711::Pcmu.decode(G711::Pcmu.encode(s))
            })
            .collect()
    }
}

/// A long speech-like passage: vowel sweeps at different pitches (male and female ranges).
pub fn speech(d_ms: f64, seed: u64) -> Sig {
    let mut rng = Rng::new(seed);
    let mut sig = Sig::new();
    let mut left = d_ms;
    while left > 0.0 {
        let seg = 360.0f64.min(left);
        let f0a = 85.0 + 170.0 * (rng.uniform() + 1.0) / 2.0;
        let f0b = f0a * (0.8 + 0.4 * (rng.uniform() + 1.0) / 2.0);
        let from = (rng.next_u64() % 5) as usize;
        let to = (rng.next_u64() % 5) as usize;
        let level = -12.0 - 8.0 * (rng.uniform() + 1.0) / 2.0;
        sig = sig.voiced(seg, (f0a, f0b), from, to, level);
        left -= seg;
    }
    sig
}
