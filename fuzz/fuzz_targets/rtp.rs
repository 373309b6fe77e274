//! RTP header view, RTP/RTCP demux, RFC 4733 payloads, and the recording track fed a sequence of
//! packets built from the input: nothing a peer sends may panic.
#![no_main]

use std::time::{Duration, Instant};

use callgate::ids::Ssrc;
use callgate::media::rtp::{RtpPacket, TelephoneEvent, is_rtcp};
use callgate::media::track::RecordTrack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = is_rtcp(data);
    let _ = TelephoneEvent::parse(data);
    if let Ok(p) = RtpPacket::parse(data) {
        let _ = (
            p.marker(),
            p.payload_type(),
            p.sequence(),
            p.timestamp(),
            p.ssrc(),
            p.extension(),
        );
        let _ = p.csrcs().count();
        let _ = TelephoneEvent::parse(p.payload());
    }

    // The input as a packet stream: [gap_ms, ssrc_lo, seq(2), ts(4), len] + payload, repeated.
    let t0 = Instant::now();
    let mut now = t0;
    let mut track = RecordTrack::new(t0, Duration::from_millis(60));
    let mut rest = data;
    while rest.len() >= 9 {
        let (h, tail) = rest.split_at(9);
        now += Duration::from_millis(h[0] as u64);
        let seq = u16::from_be_bytes([h[2], h[3]]);
        let ts = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let len = (h[8] as usize).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        track.push(now, Ssrc(h[1] as u32), seq, ts, payload);
        while track.poll(now).is_some() {}
        rest = tail;
    }
    track.flush(now);
    while track.poll(now).is_some() {}
});
