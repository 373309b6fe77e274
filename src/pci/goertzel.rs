//! The Goertzel algorithm: the power of one frequency over a block of samples.
//!
//! Used at the eight DTMF frequencies (and their second harmonics) by
//! [`crate::pci::inband::InbandDetector`]. Power is normalised to **block energy units**: a pure
//! sine of amplitude `A` over `N` samples has energy `N·A²/2` and reads (close to) that value,
//! so it compares directly with [`block_energy`].

/// A Goertzel filter tuned to one frequency (need not fall on a DFT bin).
#[derive(Clone, Copy, Debug)]
pub struct Goertzel {
    coeff: f32,
}

impl Goertzel {
    /// A filter for `freq_hz` at `rate_hz`.
    pub fn new(freq_hz: f32, rate_hz: f32) -> Goertzel {
        let w = 2.0 * std::f32::consts::PI * freq_hz / rate_hz;
        Goertzel {
            coeff: 2.0 * w.cos(),
        }
    }

    /// Power of the filter's frequency over `block`, in block energy units (see module docs).
    pub fn power(&self, block: &[f32]) -> f32 {
        if block.is_empty() {
            return 0.0;
        }
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &x in block {
            let s0 = x + self.coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let mag2 = s1 * s1 + s2 * s2 - self.coeff * s1 * s2;
        // |X|² ≈ (A·N/2)² for a sine of amplitude A; energy N·A²/2 = 2·|X|²/N.
        (2.0 * mag2 / block.len() as f32).max(0.0)
    }
}

/// Σ x² over the block.
pub fn block_energy(block: &[f32]) -> f32 {
    block.iter().map(|x| x * x).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
