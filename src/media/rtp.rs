//! RTP (RFC 3550) header view and writer, RTP/RTCP demultiplexing (RFC 5761), sequence-number
//! arithmetic, and the RFC 4733 telephone-event payload.
//!
//! Sans-IO: everything here works on byte slices handed in by the relay shell. Nothing a peer
//! sends can make these functions panic; malformed input is an [`RtpError`].

use crate::ids::Ssrc;

/// Length of the fixed RTP header (no CSRCs, no extension).
pub const RTP_HEADER_LEN: usize = 12;

/// Why bytes were not accepted as an RTP packet. Every variant is a drop reason for the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("packet of {0} bytes is shorter than the 12-byte RTP header")]
    TooShort(usize),
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    #[error("CSRC list ({0} entries) runs past the end of the packet")]
    CsrcTruncated(u8),
    #[error("header extension runs past the end of the packet")]
    ExtensionTruncated,
    #[error("padding count {0} is zero or larger than the payload")]
    BadPadding(u8),
    #[error("payload type {0} does not fit in 7 bits")]
    BadPayloadType(u8),
    #[error("output buffer of {have} bytes, need {need}")]
    BufferTooSmall { have: usize, need: usize },
}

/// A zero-copy view of one RTP packet. Padding is already stripped from [`payload`](Self::payload)
/// and the header extension (if any) is skipped but available via [`extension`](Self::extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    payload_start: usize,
    payload_end: usize,
    /// (profile, start, end) of the extension data (without its 4-byte header).
    ext: Option<(u16, usize, usize)>,
}

impl<'a> RtpPacket<'a> {
    /// Parses and validates an RTP packet. Checks version 2, that the CSRC list and header
    /// extension fit, and that the padding count is sane (RFC 3550 §5.1).
    pub fn parse(buf: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        if buf.len() < RTP_HEADER_LEN {
            return Err(RtpError::TooShort(buf.len()));
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let padding = buf[0] & 0x20 != 0;
        let has_ext = buf[0] & 0x10 != 0;
        let cc = buf[0] & 0x0f;
        let mut pos = RTP_HEADER_LEN + 4 * cc as usize;
        if pos > buf.len() {
            return Err(RtpError::CsrcTruncated(cc));
        }
        let mut ext = None;
        if has_ext {
            if pos + 4 > buf.len() {
                return Err(RtpError::ExtensionTruncated);
            }
            let profile = u16::from_be_bytes([buf[pos], buf[pos + 1]]);
            let words = u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]) as usize;
            let start = pos + 4;
            let end = start + 4 * words;
            if end > buf.len() {
                return Err(RtpError::ExtensionTruncated);
            }
            ext = Some((profile, start, end));
            pos = end;
        }
        let mut end = buf.len();
        if padding {
            // Invariant: buf.len() >= 12, so there is a last byte.
            let count = buf[buf.len() - 1];
            if count == 0 || count as usize > end - pos {
                return Err(RtpError::BadPadding(count));
            }
            end -= count as usize;
        }
        Ok(RtpPacket {
            buf,
            payload_start: pos,
            payload_end: end,
            ext,
        })
    }

    /// The whole packet as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// Always 2 for a parsed packet.
    pub fn version(&self) -> u8 {
        self.buf[0] >> 6
    }
    /// Whether the P bit was set (the padding itself is not part of [`payload`](Self::payload)).
    pub fn has_padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }
    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }
    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(u32::from_be_bytes([
            self.buf[8],
            self.buf[9],
            self.buf[10],
            self.buf[11],
        ]))
    }
    pub fn csrc_count(&self) -> u8 {
        self.buf[0] & 0x0f
    }
    /// The contributing sources (validated to be inside the packet by [`parse`](Self::parse)).
    pub fn csrcs(&self) -> impl Iterator<Item = Ssrc> + 'a {
        let buf = self.buf;
        (0..self.csrc_count() as usize).map(move |i| {
            let o = RTP_HEADER_LEN + 4 * i;
            Ssrc(u32::from_be_bytes([
                buf[o],
                buf[o + 1],
                buf[o + 2],
                buf[o + 3],
            ]))
        })
    }
    /// The header extension: (profile-defined 16 bits, extension data).
    pub fn extension(&self) -> Option<(u16, &'a [u8])> {
        self.ext.map(|(p, s, e)| (p, &self.buf[s..e]))
    }
    /// The payload, without header, CSRCs, extension or padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.payload_start..self.payload_end]
    }
}

/// The fixed header fields of a packet to write.
fn header(marker: bool, pt: u8, seq: u16, ts: u32, ssrc: Ssrc) -> Result<[u8; 12], RtpError> {
    if pt > 0x7f {
        return Err(RtpError::BadPayloadType(pt));
    }
    let mut h = [0u8; 12];
    h[0] = 0x80; // V=2, P=0, X=0, CC=0
    h[1] = pt | if marker { 0x80 } else { 0 };
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&ts.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.0.to_be_bytes());
    Ok(h)
}

/// Appends one RTP packet (no padding, extension or CSRCs) to `out`.
/// Fails only if `pt` does not fit in 7 bits.
pub fn write_rtp(
    out: &mut Vec<u8>,
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: Ssrc,
    payload: &[u8],
) -> Result<(), RtpError> {
    let h = header(marker, pt, seq, ts, ssrc)?;
    out.reserve(RTP_HEADER_LEN + payload.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    Ok(())
}

/// Writes one RTP packet into the start of `buf`, returning its length.
pub fn write_rtp_into(
    buf: &mut [u8],
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: Ssrc,
    payload: &[u8],
) -> Result<usize, RtpError> {
    let need = RTP_HEADER_LEN + payload.len();
    if buf.len() < need {
        return Err(RtpError::BufferTooSmall {
            have: buf.len(),
            need,
        });
    }
    let h = header(marker, pt, seq, ts, ssrc)?;
    buf[..RTP_HEADER_LEN].copy_from_slice(&h);
    buf[RTP_HEADER_LEN..need].copy_from_slice(payload);
    Ok(need)
}

/// RTP/RTCP demultiplexing on one port (RFC 5761 §4).
///
/// RTCP packet types (SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB 205, PSFB 206, XR 207…)
/// occupy the *whole* second byte, which lies in 192..=223. In RTP that byte is the marker bit
/// followed by the payload type, so 192..=223 would be a marked RTP packet with payload type
/// 64..=95 — the range RFC 5761 forbids for RTP when multiplexing. We therefore test the whole
/// byte (not the masked payload type: an unmarked RTP packet with PT 72 is *not* RTCP), and require
/// version 2 and the 8-byte minimum of a compound RTCP packet (header + SSRC).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// Signed distance from sequence number `a` to `b` with 16-bit wrap-around: `seq_delta(65535, 0)
/// == 1`, `seq_delta(0, 65535) == -1`. The result lies in -32768..=32767.
pub fn seq_delta(a: u16, b: u16) -> i32 {
    b.wrapping_sub(a) as i16 as i32
}

/// Signed distance from RTP timestamp `a` to `b` with 32-bit wrap-around.
pub fn ts_delta(a: u32, b: u32) -> i64 {
    b.wrapping_sub(a) as i32 as i64
}

/// RFC 4733 §2.3 named telephone event payload (DTMF digits 0-9 = 0-9, `*` = 10, `#` = 11,
/// A-D = 12-15, flash = 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    /// E bit: this packet reports the end of the event.
    pub end: bool,
    /// Power level in -dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

/// Why a telephone-event payload was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TelephoneEventError {
    #[error("telephone-event payload of {0} bytes, need at least 4")]
    TooShort(usize),
}

impl TelephoneEvent {
    /// Parses the first event block of an RFC 4733 payload (`payload` is
    /// [`RtpPacket::payload`]). Trailing bytes (further blocks) are ignored.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, TelephoneEventError> {
        if payload.len() < 4 {
            return Err(TelephoneEventError::TooShort(payload.len()));
        }
        Ok(TelephoneEvent {
            event: payload[0],
            end: payload[1] & 0x80 != 0,
            volume: payload[1] & 0x3f,
            duration: u16::from_be_bytes([payload[2], payload[3]]),
        })
    }

    /// Encodes the event (R bit zero), for tests and for regenerating events toward a leg.
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (self.volume & 0x3f) | if self.end { 0x80 } else { 0 },
            d[0],
            d[1],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        write_rtp(
            &mut v,
            true,
            8,
            65535,
            0xdead_beef,
            Ssrc(0x0102_0304),
            &[1, 2, 3, 4],
        )
        .unwrap();
        v
    }

    #[test]
    fn write_parse_round_trip() {
        let v = sample();
        assert_eq!(v.len(), 16);
        let p = RtpPacket::parse(&v).unwrap();
        assert_eq!(p.version(), 2);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 8);
        assert_eq!(p.sequence(), 65535);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), Ssrc(0x0102_0304));
        assert_eq!(p.csrc_count(), 0);
        assert_eq!(p.extension(), None);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);

        let mut buf = [0u8; 32];
        let n = write_rtp_into(&mut buf, false, 0, 7, 160, Ssrc(9), &[0xff; 5]).unwrap();
        assert_eq!(n, 17);
        let p = RtpPacket::parse(&buf[..n]).unwrap();
        assert!(!p.marker());
        assert_eq!((p.payload_type(), p.sequence(), p.timestamp()), (0, 7, 160));
        assert_eq!(p.payload(), &[0xff; 5]);
        assert!(matches!(
            write_rtp_into(&mut buf[..10], false, 0, 0, 0, Ssrc(0), &[]),
            Err(RtpError::BufferTooSmall { have: 10, need: 12 })
        ));
        assert_eq!(
            write_rtp(&mut Vec::new(), false, 128, 0, 0, Ssrc(0), &[]),
            Err(RtpError::BadPayloadType(128))
        );
    }

    #[test]
    fn csrc_extension_padding() {
        // V=2 P=1 X=1 CC=2, PT 0.
        let mut v = vec![0xb2, 0x00, 0, 1, 0, 0, 0, 160, 0, 0, 0, 42];
        v.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 6]); // CSRCs
        v.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // one-byte ext, 1 word
        v.extend_from_slice(&[9, 9, 9]); // payload
        v.extend_from_slice(&[0, 0, 3]); // 3 bytes padding
        let p = RtpPacket::parse(&v).unwrap();
        assert_eq!(p.csrc_count(), 2);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![Ssrc(5), Ssrc(6)]);
        assert_eq!(p.extension(), Some((0xbede, &[0x10, 0xaa, 0, 0][..])));
        assert!(p.has_padding());
        assert_eq!(p.payload(), &[9, 9, 9]);
        assert_eq!(p.ssrc(), Ssrc(42));

        // Padding count zero or larger than what follows the header is rejected.
        let mut bad = v.clone();
        *bad.last_mut().unwrap() = 0;
        assert_eq!(RtpPacket::parse(&bad), Err(RtpError::BadPadding(0)));
        *bad.last_mut().unwrap() = 7;
        assert_eq!(RtpPacket::parse(&bad), Err(RtpError::BadPadding(7)));
        // Padding that eats the whole payload exactly is fine (empty payload).
        *bad.last_mut().unwrap() = 6;
        assert_eq!(RtpPacket::parse(&bad).unwrap().payload(), &[] as &[u8]);
    }

    #[test]
    fn truncated_headers_rejected() {
        let v = sample();
        for n in 0..12 {
            assert_eq!(RtpPacket::parse(&v[..n]), Err(RtpError::TooShort(n)));
        }
        let mut bad = v.clone();
        bad[0] = 0x40;
        assert_eq!(RtpPacket::parse(&bad), Err(RtpError::BadVersion(1)));
        // CC=3 but only 4 bytes after the header.
        let mut cc = v.clone();
        cc[0] = 0x83;
        assert_eq!(RtpPacket::parse(&cc), Err(RtpError::CsrcTruncated(3)));
        // Extension header claims 2 words but only the 4-byte extension header fits.
        let mut ext = v[..12].to_vec();
        ext[0] = 0x90;
        ext.extend_from_slice(&[0, 0, 0, 2]);
        assert_eq!(RtpPacket::parse(&ext), Err(RtpError::ExtensionTruncated));
        ext.truncate(14);
        assert_eq!(RtpPacket::parse(&ext), Err(RtpError::ExtensionTruncated));
    }

    #[test]
    fn rtcp_demux() {
        // RR: V=2, PT=201, length 1.
        assert!(is_rtcp(&[0x80, 201, 0, 1, 0, 0, 0, 1]));
        assert!(is_rtcp(&[0x81, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0]));
        // RTP PCMU with and without marker; PT 72 unmarked (second byte 72) is RTP.
        assert!(!is_rtcp(&sample()));
        let mut v = Vec::new();
        write_rtp(&mut v, false, 72, 1, 1, Ssrc(1), &[0; 4]).unwrap();
        assert!(!is_rtcp(&v));
        write_rtp(&mut v, true, 0, 1, 1, Ssrc(1), &[0; 4]).unwrap();
        assert!(!is_rtcp(&v[16..]));
        assert!(!is_rtcp(&[0x80, 201, 0]));
        assert!(!is_rtcp(&[0x40, 201, 0, 1, 0, 0, 0, 1]));
    }

    #[test]
    fn sequence_arithmetic_wraps() {
        assert_eq!(seq_delta(65535, 0), 1);
        assert_eq!(seq_delta(0, 65535), -1);
        assert_eq!(seq_delta(100, 90), -10);
        assert_eq!(seq_delta(65530, 5), 11);
        assert_eq!(seq_delta(0, 32767), 32767);
        assert_eq!(seq_delta(0, 32768), -32768);
        assert_eq!(ts_delta(u32::MAX - 159, 0), 160);
        assert_eq!(ts_delta(160, 0), -160);
    }

    #[test]
    fn telephone_event_parse() {
        // '5', end, volume 10, duration 1280.
        let e = TelephoneEvent::parse(&[5, 0x8a, 0x05, 0x00]).unwrap();
        assert_eq!(
            e,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 1280
            }
        );
        assert_eq!(e.to_bytes(), [5, 0x8a, 5, 0]);
        // R bit is ignored.
        let e = TelephoneEvent::parse(&[11, 0x40 | 0x3f, 0, 160, 0xff]).unwrap();
        assert_eq!(
            e,
            TelephoneEvent {
                event: 11,
                end: false,
                volume: 63,
                duration: 160
            }
        );
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(TelephoneEventError::TooShort(3))
        );
    }
}
