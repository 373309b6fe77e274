//! Media plane: RTP header view and writer, G.711, SDP offer/answer, announcement loading and
//! pacing, and the per-direction recording track. Everything here is sans-IO except
//! [`announcement::Announcement::load`], which reads one file; the relay shell does the sockets.
pub mod announcement;
pub mod g711;
pub mod load;
pub mod rtp;
pub mod sdp;
pub mod track;
pub mod reactor;
pub mod relay;

/// No-panic tests for everything here that parses peer bytes or reacts to peer timing: thousands
/// of pseudo-random and mutated inputs per run (a stand-in for `fuzz/`, which needs nightly).
#[cfg(test)]
mod robustness {
    use std::time::{Duration, Instant};

    use super::rtp::{RtpPacket, TelephoneEvent, is_rtcp, write_rtp};
    use super::sdp::{BuildSdp, negotiate, parse_offer, split_codecs};
    use super::track::{RecordTrack, TrackOutput};
    use crate::ids::Ssrc;

    /// xorshift64*: deterministic, seedable, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn bytes(&mut self, max: usize) -> Vec<u8> {
            let n = self.below(max as u64 + 1) as usize;
            (0..n).map(|_| self.next() as u8).collect()
        }
        /// Flip, insert, delete, truncate or duplicate a few bytes.
        fn mutate(&mut self, mut v: Vec<u8>) -> Vec<u8> {
            for _ in 0..=self.below(4) {
                let len = v.len() as u64;
                match self.below(5) {
                    0 if len > 0 => {
                        let i = self.below(len) as usize;
                        v[i] ^= 1 << self.below(8);
                    }
                    1 => {
                        let i = self.below(len + 1) as usize;
                        v.insert(i, self.next() as u8);
                    }
                    2 if len > 0 => {
                        v.remove(self.below(len) as usize);
                    }
                    3 => v.truncate(self.below(len + 1) as usize),
                    _ if len > 0 => {
                        let a = self.below(len) as usize;
                        let b = (a + self.below(16) as usize).min(v.len());
                        let chunk = v[a..b].to_vec();
                        let at = self.below(len + 1) as usize;
                        v.splice(at..at, chunk);
                    }
                    _ => {}
                }
            }
            v
        }
    }

    #[test]
    fn rtp_and_telephone_event_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut valid = Vec::new();
        write_rtp(&mut valid, true, 101, 65535, 1, Ssrc(7), &[1, 0x8a, 0, 160]).unwrap();
        let mut parsed = 0;
        for i in 0..20_000 {
            let buf = if i % 2 == 0 {
                rng.bytes(64)
            } else {
                rng.mutate(valid.clone())
            };
            let _ = is_rtcp(&buf);
            let _ = TelephoneEvent::parse(&buf);
            if let Ok(p) = RtpPacket::parse(&buf) {
                parsed += 1;
                // Every accessor on an accepted packet stays in bounds.
                let hdr = 12
                    + 4 * p.csrc_count() as usize
                    + p.extension().map_or(0, |(_, d)| 4 + d.len());
                assert!(hdr + p.payload().len() <= buf.len());
                assert_eq!(p.csrcs().count(), p.csrc_count() as usize);
                let _ = (
                    p.marker(),
                    p.payload_type(),
                    p.sequence(),
                    p.timestamp(),
                    p.ssrc(),
                );
                let _ = TelephoneEvent::parse(p.payload());
            }
        }
        // The mutator must actually reach the accepting paths, or this test proves little.
        assert!(parsed > 1000, "only {parsed} inputs parsed");
    }

    const SEED_SDP: &str = "v=0\r\no=- 1 2 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 96 0 8 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=rtcp:4001 IN IP4 10.0.0.7\r\na=ptime:20\r\na=sendonly\r\nm=video 4002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n";

    #[test]
    fn sdp_never_panics() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let mut ok = 0;
        for i in 0..20_000 {
            let bytes = match i % 3 {
                0 => rng.bytes(200),
                _ => rng.mutate(SEED_SDP.as_bytes().to_vec()),
            };
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(m) = parse_offer(&text) {
                ok += 1;
                assert!(m.audio_index < m.media_lines.len());
                let _ = m.is_hold();
                if let Ok(codecs) = negotiate(&m) {
                    let (audio, te) = split_codecs(&codecs);
                    let sdp = BuildSdp {
                        session_id: 1,
                        version: 1,
                        addr: m.rtp.0.ip(),
                        port: 20000,
                        codecs: &audio,
                        telephone_event: te,
                        direction: m.direction.reversed(),
                        ptime: 20,
                        answer_to: Some(&m),
                    };
                    let answer = super::sdp::build_sdp(&sdp).unwrap();
                    // Our answer always parses and mirrors the offer's m-line count.
                    let back = parse_offer(&answer).unwrap();
                    assert_eq!(
                        back.media_lines.len(),
                        m.media_lines.len(),
                        "{text:?}\n{answer}"
                    );
                }
            }
        }
        assert!(ok > 1000, "only {ok} inputs parsed");
    }

    #[test]
    fn track_never_panics_and_never_goes_backwards() {
        let mut rng = Rng(42);
        for round in 0..200 {
            let t0 = Instant::now();
            let mut t = RecordTrack::new(t0, Duration::from_millis(rng.below(200)));
            let mut now = t0;
            let (mut seq, mut ts) = (rng.next() as u16, rng.next() as u32);
            let mut end = 0u64;
            let mut after_loss = None;
            let mut check = |o: TrackOutput| match o {
                TrackOutput::Audio { pos, payload } => {
                    assert!(pos >= end, "round {round}: audio at {pos} before {end}");
                    // A loss covers exactly the hole up to the next audio.
                    if let Some(to) = after_loss.take() {
                        assert_eq!(pos, to, "round {round}");
                    }
                    assert!(!payload.is_empty());
                    end = pos + payload.len() as u64;
                }
                TrackOutput::Loss { from, to } => {
                    assert!(
                        from == end && from < to,
                        "round {round}: loss {from}..{to} after audio ending {end}"
                    );
                    assert!(after_loss.is_none());
                    after_loss = Some(to);
                }
            };
            for _ in 0..500 {
                now += Duration::from_micros(rng.below(60_000));
                // Mostly a sane stream, with reorder, duplicates, jumps, SSRC flips.
                let (s, q, x) = match rng.below(20) {
                    0 => (rng.next() as u32, rng.next() as u16, rng.next() as u32),
                    1 => (1, seq.wrapping_sub(rng.below(200) as u16), ts),
                    2 => (1, rng.next() as u16, rng.next() as u32),
                    _ => {
                        seq = seq.wrapping_add(1 + (rng.below(10) == 0) as u16);
                        ts = ts.wrapping_add(160);
                        (1, seq.wrapping_add(rng.below(3) as u16), ts)
                    }
                };
                let len = if rng.below(50) == 0 {
                    rng.below(400)
                } else {
                    160
                } as usize;
                t.push(now, Ssrc(s), q, x, &vec![0x55; len]);
                while let Some(o) = t.poll(now) {
                    check(o);
                }
                if rng.below(100) == 0 {
                    t.flush(now);
                }
            }
            t.flush(now);
            while let Some(o) = t.poll(now) {
                check(o);
            }
        }
    }
}
