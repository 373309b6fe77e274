//! Test-side DTMF: a tone generator, an independent energy decoder, a wrapper around
//! `multimon-ng` (a third-party decoder, when installed), and a scanner for card digits in bytes.
//!
//! Nothing here uses callgate's own `pci` code: the point is to check the gateway's keypad
//! protection with tools that do not share its assumptions.
//!
//! ## The independent decoder
//! Goertzel power at the eight DTMF frequencies over rectangular windows stepped every 20 ms.
//! A window holds a *tone* when the strongest row and the strongest column frequency are each
//! more than 20 dB above every other DTMF bin of that window and the window's RMS is non-trivial.
//! Consecutive tone windows of the same key are one key press.
//!
//! Window length: 40 ms (320 samples), stepped by 20 ms. A 20 ms (160-sample) Goertzel has 50 Hz
//! bins, and adjacent DTMF rows are only 73 Hz apart: a pure 697 Hz tone reads just 13 dB below
//! itself in the 770 Hz bin (rectangular window; a Hann window is no better at 1.46 bins), so the
//! 20 dB rule could never fire. At 40 ms (25 Hz bins) the nearest neighbour is ≥ 2.9 bins away
//! and 30 dB down. With 80 ms tones and 80 ms gaps each press still gives ≥ 2 tone windows
//! and each gap ≥ 2 quiet ones.

use std::f64::consts::PI;
use std::path::Path;
use std::process::Command;

/// Row (low group) frequencies, Hz.
pub const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// Column (high group) frequencies, Hz.
pub const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// The keypad, `KEYS[row][col]`.
pub const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

const RATE: f64 = 8000.0;
/// Analysis window and step (samples).
pub const WINDOW: usize = 320;
pub const STEP: usize = 160;
/// Both winners must be this far above every other DTMF bin (power ratio, 20 dB).
pub const DOMINANCE: f64 = 100.0;
/// Windows quieter than this RMS (≈ -56 dBFS) are not tones whatever their spectrum.
pub const MIN_RMS: f64 = 50.0;

/// Row and column of a key.
pub fn key_pos(key: char) -> Option<(usize, usize)> {
    for (r, row) in KEYS.iter().enumerate() {
        for (c, &k) in row.iter().enumerate() {
            if k == key.to_ascii_uppercase() {
                return Some((r, c));
            }
        }
    }
    None
}

/// RFC 4733 event code of a key (0-9, `*` 10, `#` 11, A-D 12-15).
pub fn event_code(key: char) -> Option<u8> {
    match key {
        '0'..='9' => Some(key as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(12 + key as u8 - b'A'),
        _ => None,
    }
}

/// A DTMF key press at 8 kHz: the two sines summed, `ms` long, total peak `peak_dbfs` (the
/// two tones at equal level, so each is 6 dB below), 1 ms raised-cosine edges.
pub fn tone(key: char, ms: u32, peak_dbfs: f64) -> Vec<i16> {
    // Invariant: callers pass keypad characters.
    let (r, c) = key_pos(key).expect("a DTMF key");
    let n = (ms as usize) * 8;
    let each = 32767.0 * 10f64.powf(peak_dbfs / 20.0) / 2.0;
    (0..n)
        .map(|i| {
            let t = i as f64 / RATE;
            let edge = ((i.min(n - 1 - i)) as f64 / 8.0).min(1.0);
            let ramp = 0.5 - 0.5 * (PI * edge).cos();
            let v = each * ((2.0 * PI * ROWS[r] * t).sin() + (2.0 * PI * COLS[c] * t).sin());
            (v * ramp).round() as i16
        })
        .collect()
}

/// A keyed sequence: each key `tone_ms` of tone then `gap_ms` of silence.
pub fn keyed(keys: &str, tone_ms: u32, gap_ms: u32, peak_dbfs: f64) -> Vec<i16> {
    let mut out = Vec::new();
    for k in keys.chars() {
        out.extend(tone(k, tone_ms, peak_dbfs));
        out.extend(std::iter::repeat_n(0i16, gap_ms as usize * 8));
    }
    out
}

/// Goertzel power of `x` at `f` Hz (8 kHz), Hann window.
pub fn goertzel(x: &[i16], f: f64) -> f64 {
    let w = 2.0 * PI * f / RATE;
    let coeff = 2.0 * w.cos();
    let n = x.len().max(2) as f64;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for (i, &v) in x.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * PI * i as f64 / (n - 1.0)).cos();
        let s0 = v as f64 * hann + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The key a window holds, if it is a tone by the rule above.
pub fn window_key(x: &[i16]) -> Option<char> {
    let rms = super::audio::rms(x);
    if rms < MIN_RMS {
        return None;
    }
    let rp: Vec<f64> = ROWS.iter().map(|&f| goertzel(x, f)).collect();
    let cp: Vec<f64> = COLS.iter().map(|&f| goertzel(x, f)).collect();
    let argmax = |v: &[f64]| {
        (0..v.len())
            .max_by(|&a, &b| v[a].total_cmp(&v[b]))
            .unwrap_or(0)
    };
    let (r, c) = (argmax(&rp), argmax(&cp));
    let others = rp
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != r)
        .map(|(_, &p)| p)
        .chain(
            cp.iter()
                .enumerate()
                .filter(|&(i, _)| i != c)
                .map(|(_, &p)| p),
        )
        .fold(0.0f64, f64::max);
    let floor = others.max(1e-9);
    (rp[r] > DOMINANCE * floor && cp[c] > DOMINANCE * floor).then_some(KEYS[r][c])
}

/// One key press found by [`decode`]: the key and where (sample offset of its first window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Press {
    pub key: char,
    pub at: usize,
    /// Tone windows in the run.
    pub windows: usize,
}

/// Every key press in `x`: runs of consecutive tone windows of the same key (≥ 1 window).
pub fn decode(x: &[i16]) -> Vec<Press> {
    let mut out: Vec<Press> = Vec::new();
    let mut prev: Option<char> = None;
    let mut start = 0;
    while start + WINDOW <= x.len() {
        let k = window_key(&x[start..start + WINDOW]);
        match (k, prev) {
            (Some(k), Some(p)) if k == p => {
                if let Some(last) = out.last_mut() {
                    last.windows += 1;
                }
            }
            (Some(k), _) => out.push(Press {
                key: k,
                at: start,
                windows: 1,
            }),
            (None, _) => {}
        }
        prev = k;
        start += STEP;
    }
    out
}

/// The keys of [`decode`] as a string.
pub fn decode_string(x: &[i16]) -> String {
    decode(x).iter().map(|p| p.key).collect()
}

/// Whether `multimon-ng` and `sox` are on PATH.
pub fn multimon_available() -> bool {
    let ok = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .map(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
            .unwrap_or(false)
    };
    ok("multimon-ng", "-h") && ok("sox", "--version")
}

/// Runs `multimon-ng -a DTMF` over 8 kHz samples (resampled to its 22050 Hz raw input with
/// `sox`) and returns the keys it printed, in order. `None` when the tools are not installed.
pub fn multimon_decode(x: &[i16], scratch: &Path, name: &str) -> Option<String> {
    if !multimon_available() {
        return None;
    }
    let raw8 = scratch.join(format!("{name}.8k.raw"));
    let raw22 = scratch.join(format!("{name}.22k.raw"));
    let bytes: Vec<u8> = x.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&raw8, bytes).expect("write raw audio for sox");
    let st = Command::new("sox")
        .args([
            "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1",
        ])
        .arg(&raw8)
        .args([
            "-t", "raw", "-r", "22050", "-e", "signed", "-b", "16", "-c", "1",
        ])
        .arg(&raw22)
        .status()
        .expect("run sox");
    assert!(st.success(), "sox resampling failed");
    let out = Command::new("multimon-ng")
        .args(["-q", "-c", "-a", "DTMF", "-t", "raw"])
        .arg(&raw22)
        .output()
        .expect("run multimon-ng");
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("DTMF: "))
            .filter_map(|k| k.trim().chars().next())
            .collect(),
    )
}

/// Finds `digits` in `hay` allowing up to `max_sep` non-digit bytes between consecutive digits
/// (so "4929123456789012", "4929 1234 5678 9012", "4-9-2-9…", "'4', '9', …" all match); any
/// other digit in between breaks the match. Returns the byte offset of the first match.
pub fn find_digits(hay: &[u8], digits: &str, max_sep: usize) -> Option<usize> {
    let want: Vec<u8> = digits.bytes().filter(u8::is_ascii_digit).collect();
    if want.is_empty() {
        return None;
    }
    'start: for s in 0..hay.len() {
        if hay[s] != want[0] {
            continue;
        }
        let mut i = s + 1;
        for &w in &want[1..] {
            let mut sep = 0;
            loop {
                let Some(&b) = hay.get(i) else {
                    continue 'start;
                };
                i += 1;
                if b == w {
                    break;
                }
                if b.is_ascii_digit() || sep == max_sep {
                    continue 'start;
                }
                sep += 1;
            }
        }
        return Some(s);
    }
    None
}
