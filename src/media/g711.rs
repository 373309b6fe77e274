//! G.711 µ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8), ITU-T G.711.
//!
//! Encoding works on 16-bit linear PCM; decoding yields 16-bit linear PCM.

/// The two narrowband codecs callgate relays and records.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, serde::Serialize, serde::Deserialize)]
pub enum G711 {
    /// µ-law, static RTP payload type 0.
    Pcmu,
    /// A-law, static RTP payload type 8.
    Pcma,
}

impl G711 {
    /// The static RTP payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            G711::Pcmu => 0,
            G711::Pcma => 8,
        }
    }
    pub fn from_payload_type(pt: u8) -> Option<G711> {
        match pt {
            0 => Some(G711::Pcmu),
            8 => Some(G711::Pcma),
            _ => None,
        }
    }
    /// SDP rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            G711::Pcmu => "PCMU",
            G711::Pcma => "PCMA",
        }
    }
    pub fn encode(self, s: i16) -> u8 {
        match self {
            G711::Pcmu => linear_to_ulaw(s),
            G711::Pcma => linear_to_alaw(s),
        }
    }
    pub fn decode(self, b: u8) -> i16 {
        match self {
            G711::Pcmu => ulaw_to_linear(b),
            G711::Pcma => alaw_to_linear(b),
        }
    }
    /// The byte a silent sample encodes to.
    pub fn silence(self) -> u8 {
        self.encode(0)
    }
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// µ-law encode (sign, 3-bit exponent, 4-bit mantissa, all bits inverted).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    if s > ULAW_CLIP {
        s = ULAW_CLIP;
    }
    s += ULAW_BIAS;
    // Exponent = position of the highest set bit above bit 7.
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && (s & mask) == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// µ-law decode.
pub fn ulaw_to_linear(b: u8) -> i16 {
    let u = !b as i32;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0f;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// A-law encode (even bits inverted with 0x55).
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s >= 0 {
        0x80
    } else {
        s = -s - 1;
        0
    };
    if s > 32767 {
        s = 32767;
    }
    let s = s >> 3; // 13-bit magnitude
    let byte = if s < 32 {
        (s >> 1) as u8
    } else {
        let mut exponent = 1;
        let mut v = s >> 5;
        while v > 1 {
            v >>= 1;
            exponent += 1;
        }
        ((exponent << 4) | ((s >> exponent) & 0x0f)) as u8
    };
    (byte | sign) ^ 0x55
}

/// A-law decode.
pub fn alaw_to_linear(b: u8) -> i16 {
    let a = (b ^ 0x55) as i32;
    let sign = a & 0x80;
    let exponent = (a >> 4) & 0x07;
    let mantissa = a & 0x0f;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if sign != 0 { magnitude } else { -magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_code_points() {
        // Silence and full scale per G.711 tables.
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
    }

    #[test]
    fn every_code_round_trips() {
        for codec in [G711::Pcmu, G711::Pcma] {
            for b in 0..=255u8 {
                let lin = codec.decode(b);
                let back = codec.encode(lin);
                // µ-law has two codes for zero (0x7f and 0xff); both decode to 0.
                assert_eq!(codec.decode(back), lin, "{codec:?} code {b:#04x}");
            }
        }
    }

    #[test]
    fn quantisation_error_is_small() {
        for codec in [G711::Pcmu, G711::Pcma] {
            for s in (-32000i32..32000).step_by(97) {
                let s = s as i16;
                let y = codec.decode(codec.encode(s)) as i32;
                let err = (y - s as i32).abs();
                // Logarithmic companding: error bounded by ~1/16 of magnitude plus a floor.
                assert!(err <= (s as i32).abs() / 16 + 16, "{codec:?} {s} -> {y}");
            }
        }
    }
}
