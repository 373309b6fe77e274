//! The Goertzel algorithm: the power of one frequency over a block of samples.
//!
//! [`GoertzelBank`] runs the eight DTMF frequencies over a block in one pass for
//! [`crate::pci::inband::InbandDetector`]; [`Goertzel`] is the one-frequency filter it must match
//! bit for bit. Power is normalised to **block energy units**: a pure sine of amplitude `A` over
//! `N` samples has energy `N·A²/2` and reads (close to) that value, so it compares directly with
//! [`block_energy`].

/// Filters in a [`GoertzelBank`].
pub const LANES: usize = 8;

/// The recursion coefficient 2·cos(ω); one function so that a bank lane and the scalar filter
/// start from the same bits.
fn coeff(freq_hz: f32, rate_hz: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * freq_hz / rate_hz;
    2.0 * w.cos()
}

/// A Goertzel filter tuned to one frequency (need not fall on a DFT bin).
#[derive(Clone, Copy, Debug)]
pub struct Goertzel {
    coeff: f32,
}

impl Goertzel {
    /// A filter for `freq_hz` at `rate_hz`.
    pub fn new(freq_hz: f32, rate_hz: f32) -> Goertzel {
        Goertzel {
            coeff: coeff(freq_hz, rate_hz),
        }
    }

    /// Power of the filter's frequency over `block`, in block energy units (see module docs).
    pub fn power(&self, block: &[f32]) -> f32 {
        if block.is_empty() {
            return 0.0;
        }
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &x in block {
            // `x - s2` is known a step early; only `coeff·s1 + …` is on the chain from one
            // sample to the next (a multiply and an add instead of a multiply and two adds).
            let s0 = (x - s2) + self.coeff * s1;
            s2 = s1;
            s1 = s0;
        }
        let mag2 = s1 * s1 + s2 * s2 - self.coeff * s1 * s2;
        // |X|² ≈ (A·N/2)² for a sine of amplitude A; energy N·A²/2 = 2·|X|²/N.
        (2.0 * mag2 / block.len() as f32).max(0.0)
    }
}

/// [`LANES`] Goertzel filters computed in one pass over a block.
///
/// Each lane performs the same IEEE operations in the same order as [`Goertzel::power`] (Rust
/// never contracts `a * b + c` into a fused multiply-add, and without fast-math LLVM does not
/// reorder float operations), so lane `k` returns exactly the bits the scalar filter for
/// `freqs[k]` returns. Holding the states as `[f32; LANES]` lets LLVM run the lanes as SIMD
/// vectors (two SSE2 `mulps`/`addps`/`subps` per step on the x86-64 baseline): one pass over
/// the block instead of eight, and one dependency chain per vector instead of one per filter.
#[derive(Clone, Copy, Debug)]
pub struct GoertzelBank {
    coeff: [f32; LANES],
}

impl GoertzelBank {
    /// Filters for `freqs_hz` at `rate_hz`.
    pub fn new(freqs_hz: [f32; LANES], rate_hz: f32) -> GoertzelBank {
        GoertzelBank {
            coeff: freqs_hz.map(|f| coeff(f, rate_hz)),
        }
    }

    /// Power of each filter's frequency over `block`, in block energy units (see module docs).
    pub fn powers(&self, block: &[f32]) -> [f32; LANES] {
        if block.is_empty() {
            return [0.0; LANES];
        }
        let c = self.coeff;
        let (mut s1, mut s2) = ([0.0f32; LANES], [0.0f32; LANES]);
        for &x in block {
            for k in 0..LANES {
                let s0 = (x - s2[k]) + c[k] * s1[k];
                s2[k] = s1[k];
                s1[k] = s0;
            }
        }
        let n = block.len() as f32;
        std::array::from_fn(|k| {
            let mag2 = s1[k] * s1[k] + s2[k] * s2[k] - c[k] * s1[k] * s2[k];
            (2.0 * mag2 / n).max(0.0)
        })
    }
}

/// Σ x² over the block.
pub fn block_energy(block: &[f32]) -> f32 {
    // Eight partial sums: one running sum is a chain of dependent adds (float addition is never
    // reordered by the compiler); eight independent ones become vector adds.
    let mut acc = [0.0f32; 8];
    let chunks = block.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] * c[k];
        }
    }
    for (a, x) in acc.iter_mut().zip(rest) {
        *a += x * x;
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::inband::{BLOCK, COLS, ROWS};
    use crate::pci::testsig::{Rng, Sig, speech};

    fn sine(f: f32, amp: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (2.0 * std::f32::consts::PI * f * i as f32 / 8000.0).sin())
            .collect()
    }

    #[test]
    fn power_matches_energy_for_a_pure_tone() {
        for f in [697.0, 941.0, 1209.0, 1633.0] {
            let b = sine(f, 0.5, 105);
            let p = Goertzel::new(f, 8000.0).power(&b);
            let e = block_energy(&b);
            assert!((p / e - 1.0).abs() < 0.1, "{f}: {p} vs {e}");
        }
    }

    #[test]
    fn neighbour_frequency_is_far_down() {
        // 105-sample blocks put 697 and 770 Hz about one bin apart: leakage near a null.
        let b = sine(697.0, 0.5, 105);
        let p = Goertzel::new(770.0, 8000.0).power(&b);
        assert!(p < block_energy(&b) * 0.05, "{p}");
        assert_eq!(Goertzel::new(697.0, 8000.0).power(&[]), 0.0);
    }

    /// Blocks of every kind the detector sees, and some it never does.
    fn corpus() -> Vec<Vec<f32>> {
        let pcm =
            |sig: &Sig| -> Vec<f32> { sig.pcm().iter().map(|&s| s as f32 / 32768.0).collect() };
        let mut long: Vec<Vec<f32>> = Vec::new();
        for (i, key) in "123A456B789C*0#D".chars().enumerate() {
            // Lead-in so blocks start at every phase of the tones; levels from far below the
            // suspect limit to the clipping point.
            for lvl in (-50..=3).step_by(3) {
                let (r, c) = (lvl as f64, lvl as f64 + (i % 7) as f64 - 3.0);
                long.push(pcm(&Sig::new()
                    .silence(i as f64)
                    .dtmf_levels(key, 100.0, r, c)));
            }
        }
        for f in [
            300.0, 697.0, 770.0, 852.0, 941.0, 1000.0, 1209.0, 1336.0, 1477.0, 1633.0, 3999.0,
        ] {
            for lvl in [-60.0, -38.0, -10.0, 3.0] {
                long.push(pcm(&Sig::new().sine(f, 60.0, lvl)));
            }
        }
        for seed in 1..=20 {
            let lvl = -70.0 + 3.5 * seed as f64;
            long.push(pcm(&Sig::new().noise(100.0, lvl, seed)));
            long.push(pcm(&speech(400.0, seed)));
            long.push(pcm(&Sig::new().dtmf('5', 60.0).plus_noise(lvl, seed)));
        }
        long.push(vec![0.0; 4 * BLOCK]);
        long.push(
            (0..BLOCK)
                .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                .collect(),
        );
        long.push(
            (0..BLOCK)
                .map(|i| if i == BLOCK / 2 { -1.0 } else { 0.0 })
                .collect(),
        );
        // Unquantised floats, large and subnormal, which decoded audio never gives.
        let mut rng = Rng::new(99);
        long.push((0..20 * BLOCK).map(|_| rng.uniform() as f32).collect());
        long.push(
            (0..4 * BLOCK)
                .map(|_| rng.uniform() as f32 * 1e-39)
                .collect(),
        );
        long.push((0..4 * BLOCK).map(|_| rng.gauss() as f32 * 1e3).collect());
        let mut blocks: Vec<Vec<f32>> = long
            .iter()
            .flat_map(|s| s.chunks_exact(BLOCK).map(<[f32]>::to_vec))
            .collect();
        // Other lengths, as the bank takes any.
        for n in [0, 1, 2, 37, 160, 1000] {
            blocks.push((0..n).map(|_| rng.uniform() as f32).collect());
        }
        blocks
    }

    #[test]
    fn bank_is_bit_identical_to_the_scalar_filters() {
        // Run this under `--release` too: only then is the bank's loop vectorised.
        let freqs: [f32; LANES] =
            std::array::from_fn(|k| if k < 4 { ROWS[k] } else { COLS[k - 4] });
        let bank = GoertzelBank::new(freqs, 8000.0);
        let scalar = freqs.map(|f| Goertzel::new(f, 8000.0));
        let blocks = corpus();
        assert!(blocks.len() > 2000, "{}", blocks.len());
        for (b, block) in blocks.iter().enumerate() {
            let got = bank.powers(block);
            for k in 0..LANES {
                let want = scalar[k].power(block);
                assert_eq!(
                    got[k].to_bits(),
                    want.to_bits(),
                    "block {b}, lane {k}: {} vs {want}",
                    got[k]
                );
            }
        }
        // Other frequencies and rates: the lanes are independent of what they are tuned to.
        let odd = [50.0, 440.0, 1000.0, 2000.0, 2600.0, 3000.0, 3500.0, 3950.0];
        let bank = GoertzelBank::new(odd, 16000.0);
        for block in &blocks {
            let got = bank.powers(block);
            for k in 0..LANES {
                assert_eq!(
                    got[k].to_bits(),
                    Goertzel::new(odd[k], 16000.0).power(block).to_bits()
                );
            }
        }
    }
}
