//! Masking toward the agent: what replaces the caller's audio while keying, and what happens to
//! each RTP packet.
//!
//! While [`PauseController::mask_to_agent`](super::PauseController::mask_to_agent) is true:
//! * audio packets keep their header (sequence, timestamp, SSRC) and get a masked payload of the
//!   same length ([`Masker::fill`]): low comfort noise or a quiet neutral tone, so the agent hears
//!   a flat signal, not the tones (and not dead air that sounds like a dropped call);
//! * telephone-event packets are dropped (the agent's phone would otherwise play the digit);
//! * SIP INFO digits are answered locally and not forwarded (the SIP shell's job).

use crate::media::g711::G711;

/// What the agent hears instead of masked audio.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum MaskStyle {
    /// White noise at about -60 dBm0.
    #[default]
    ComfortNoise,
    /// A 400 Hz tone at about -24 dBm0 (no DTMF detector reacts to one tone).
    NeutralTone,
}

/// What to do with one RTP packet from the caller toward the agent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PacketAction {
    /// Relay unchanged.
    Pass,
    /// Relay with the payload replaced by [`Masker::fill`] (same length).
    ReplacePayload,
    /// Do not relay.
    Drop,
}

/// The kind of RTP packet, from its payload type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PacketKind {
    Audio,
    TelephoneEvent,
}

/// The per-packet decision for caller → agent packets.
pub fn decide(masked: bool, kind: PacketKind) -> PacketAction {
    match (masked, kind) {
        (false, _) => PacketAction::Pass,
        (true, PacketKind::Audio) => PacketAction::ReplacePayload,
        (true, PacketKind::TelephoneEvent) => PacketAction::Drop,
    }
}

/// Makes masked G.711 payloads; keeps its phase and noise state across packets.
#[derive(Clone, Debug)]
pub struct Masker {
    codec: G711,
    style: MaskStyle,
    phase: u32,
    rng: u32,
}

/// 400 Hz at 8 kHz is 1/20 of a cycle per sample; one cycle of 20 samples, peak ~1430 (-24 dBm0).
const TONE: [i16; 20] = {
    // sin(2π k / 20) * 1430, rounded.
    [
        0, 442, 841, 1157, 1360, 1430, 1360, 1157, 841, 442, 0, -442, -841, -1157, -1360, -1430,
        -1360, -1157, -841, -442,
    ]
};

impl Masker {
    pub fn new(codec: G711, style: MaskStyle) -> Masker {
        Masker {
            codec,
            style,
            phase: 0,
            rng: 0x1234_5678,
        }
    }

    /// Writes `len` masked G.711 bytes into `out` (cleared first).
    pub fn fill(&mut self, len: usize, out: &mut Vec<u8>) {
        out.clear();
        for _ in 0..len {
            let s = match self.style {
                MaskStyle::ComfortNoise => {
                    // xorshift32; ±24 peak ≈ -60 dBm0.
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 17;
                    self.rng ^= self.rng << 5;
                    ((self.rng >> 16) as i32 % 25) as i16
                }
                MaskStyle::NeutralTone => {
                    let s = TONE[(self.phase % 20) as usize];
                    self.phase = self.phase.wrapping_add(1);
                    s
                }
            };
            out.push(self.codec.encode(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::inband::{InbandDetector, InbandEvent};
    use std::time::Instant;

    #[test]
    fn decisions() {
        assert_eq!(decide(false, PacketKind::Audio), PacketAction::Pass);
        assert_eq!(
            decide(false, PacketKind::TelephoneEvent),
            PacketAction::Pass
        );
        assert_eq!(
            decide(true, PacketKind::Audio),
            PacketAction::ReplacePayload
        );
        assert_eq!(decide(true, PacketKind::TelephoneEvent), PacketAction::Drop);
    }

    #[test]
    fn masked_audio_is_quiet_flat_and_not_dtmf() {
        for codec in [G711::Pcmu, G711::Pcma] {
            for style in [MaskStyle::ComfortNoise, MaskStyle::NeutralTone] {
                let mut m = Masker::new(codec, style);
                let mut det = InbandDetector::new();
                let mut buf = Vec::new();
                let t0 = Instant::now();
                let mut peak = 0i32;
                for k in 0..100u64 {
                    m.fill(160, &mut buf);
                    assert_eq!(buf.len(), 160);
                    let pcm: Vec<i16> = buf.iter().map(|&b| codec.decode(b)).collect();
                    peak = peak.max(pcm.iter().map(|s| (*s as i32).abs()).max().unwrap_or(0));
                    det.push_frame(t0 + std::time::Duration::from_millis(20 * k), &pcm);
                }
                assert!(peak < 1600, "{codec:?} {style:?} {peak}");
                while let Some(ev) = det.poll_event() {
                    assert!(
                        !matches!(ev, InbandEvent::ToneStart { .. }),
                        "{codec:?} {style:?}"
                    );
                }
            }
        }
        assert_eq!(MaskStyle::default(), MaskStyle::ComfortNoise);
    }
}
