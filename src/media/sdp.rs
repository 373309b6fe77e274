//! SDP (RFC 4566 / RFC 8866) as the B2BUA needs it: parse a peer's offer or answer down to its
//! audio stream, negotiate G.711 + telephone-event, and generate our own SDP toward each leg.
//!
//! A small line-based parser rather than a full SDP model: real phones (SIPp, baresip, PJSIP,
//! desk phones) send attributes in many orders, with LF or CRLF, trailing blanks, unknown
//! attributes, several m-lines (video, a second audio, SRTP variants). We read what we need,
//! ignore the rest, and never panic. Addresses are held as [`PeerAddr`] so `Debug` output of a
//! parsed session is safe to log.
//!
//! Only one audio stream is anchored: the first `m=audio` with a non-zero port and plain RTP
//! (`RTP/AVP` or `RTP/AVPF`). RFC 3264 §6 requires the answer to carry one m-line per offered
//! m-line, in order; [`SessionMedia::media_lines`] keeps them, and [`BuildSdp::answer_to`] makes
//! [`build_sdp`] answer every other m-line with port 0 (rejected).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::g711::G711;
use crate::pii::PeerAddr;

/// Largest SDP body we look at; bigger bodies are rejected (bounded work per message).
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// Why an SDP body was not usable. [`SdpError::sip_status`] maps each to a SIP response code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP body of {0} bytes exceeds the {MAX_SDP_LEN}-byte limit")]
    TooLarge(usize),
    #[error("no usable audio stream (m=audio with a non-zero port) in SDP")]
    NoAudio,
    #[error("audio stream uses transport {0:?}; only RTP/AVP and RTP/AVPF are supported")]
    UnsupportedTransport(String),
    #[error("audio stream has no connection address (c=) at media or session level")]
    MissingConnection,
    #[error("connection line (c=) is not an IPv4/IPv6 address")]
    BadConnection,
    #[error("malformed media line (m=): {0}")]
    BadMediaLine(&'static str),
    #[error("no common codec: only PCMU and PCMA are supported")]
    NoCommonCodec,
}

impl SdpError {
    /// SIP response code for a request whose SDP failed this way: 488 Not Acceptable Here when
    /// the SDP is fine but we cannot do what it asks, 400 Bad Request when it is malformed.
    pub fn sip_status(&self) -> u16 {
        match self {
            SdpError::NoAudio | SdpError::UnsupportedTransport(_) | SdpError::NoCommonCodec => 488,
            SdpError::TooLarge(_) => 413,
            SdpError::MissingConnection | SdpError::BadConnection | SdpError::BadMediaLine(_) => {
                400
            }
        }
    }
}

/// Media direction attribute (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The attribute name, without `a=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    fn parse(attr: &str) -> Option<Direction> {
        match attr {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
    /// The direction an answerer that is willing to do anything answers with (RFC 3264 §6.1):
    /// sendonly ⇄ recvonly, others unchanged.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

/// One offered RTP payload format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFormat {
    pub pt: u8,
    /// Encoding name from `a=rtpmap` (or the RFC 3551 static table), as sent (case preserved);
    /// empty for a dynamic type without rtpmap.
    pub name: String,
    /// Clock rate; 0 when unknown.
    pub clock_rate: u32,
    /// Channels (1 unless the rtpmap says otherwise).
    pub channels: u16,
}

/// One m-line of the SDP, kept so an answer can mirror the offer's m-line layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    /// `audio`, `video`, `application`, …
    pub kind: String,
    pub port: u16,
    pub proto: String,
    /// Format list as sent (payload types for RTP, anything for other protocols).
    pub fmts: Vec<String>,
}

/// What the B2BUA needs from one side's SDP: its audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMedia {
    /// `o=` session version, for detecting "no change" re-INVITEs.
    pub origin_version: Option<u64>,
    /// Where to send RTP (media-level `c=` overriding session-level, and the m-line port).
    pub rtp: PeerAddr,
    /// Where to send RTCP: `a=rtcp` (RFC 3605) if present, else the RTP port + 1, or the RTP
    /// address itself when `rtcp_mux` is set.
    pub rtcp: PeerAddr,
    /// `a=rtcp-mux` (RFC 5761) was present.
    pub rtcp_mux: bool,
    /// Transport, e.g. `RTP/AVP`.
    pub proto: String,
    /// Offered payload formats in the m-line's order.
    pub payloads: Vec<PayloadFormat>,
    /// Payload type of `telephone-event/8000` (RFC 4733), if offered at 8 kHz.
    pub telephone_event: Option<u8>,
    /// Media-level direction, else session-level, else sendrecv.
    pub direction: Direction,
    /// `a=ptime` in milliseconds, if given.
    pub ptime: Option<u32>,
    /// Every m-line of the body, in order.
    pub media_lines: Vec<MediaLine>,
    /// Index into `media_lines` of the audio stream described above.
    pub audio_index: usize,
}

impl SessionMedia {
    /// The peer puts us on hold: direction sendonly or inactive, or the RFC 2543 style
    /// `c=0.0.0.0` (or `::`).
    pub fn is_hold(&self) -> bool {
        matches!(self.direction, Direction::SendOnly | Direction::Inactive)
            || self.rtp.0.ip().is_unspecified()
    }

    /// The offered G.711 codecs in the offer's order.
    pub fn g711_codecs(&self) -> Vec<G711> {
        let mut out = Vec::new();
        for p in &self.payloads {
            if let Some(c) = g711_of(p)
                && !out.contains(&c)
            {
                out.push(c);
            }
        }
        out
    }
}

/// A negotiated codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// PCMU (PT 0) or PCMA (PT 8).
    G711(G711),
    /// RFC 4733 telephone-event at 8 kHz with its (dynamic) payload type.
    TelephoneEvent(u8),
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::G711(c) => c.payload_type(),
            Codec::TelephoneEvent(pt) => pt,
        }
    }
}

/// Splits a negotiated list into the audio codecs (in order) and the telephone-event PT, the
/// shape [`BuildSdp`] takes.
pub fn split_codecs(codecs: &[Codec]) -> (Vec<G711>, Option<u8>) {
    let mut audio = Vec::new();
    let mut te = None;
    for c in codecs {
        match *c {
            Codec::G711(g) => audio.push(g),
            Codec::TelephoneEvent(pt) => te = te.or(Some(pt)),
        }
    }
    (audio, te)
}

/// RFC 3551 static audio payload types we may see without an rtpmap.
fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => return None,
    })
}

fn g711_of(p: &PayloadFormat) -> Option<G711> {
    // Only the static payload types: our G.711 RTP path always uses PT 0/8. An rtpmap that
    // re-labels PT 0/8 as something else is not G.711.
    let c = G711::from_payload_type(p.pt)?;
    (p.name.eq_ignore_ascii_case(c.name()) && p.clock_rate == 8000 && p.channels == 1).then_some(c)
}

/// One section (session level or one m-line) as raw lines.
#[derive(Default)]
struct Section<'a> {
    m: Option<&'a str>,
    c: Option<&'a str>,
    attrs: Vec<&'a str>,
}

fn split_sections(sdp: &str) -> (Option<u64>, Vec<Section<'_>>) {
    let mut sections = vec![Section::default()];
    let mut origin_version = None;
    for raw in sdp.split('\n') {
        let line = raw.trim();
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match kind.trim() {
            "m" => sections.push(Section {
                m: Some(value),
                ..Section::default()
            }),
            "o" if sections.len() == 1 => {
                origin_version = value
                    .split_ascii_whitespace()
                    .nth(2)
                    .and_then(|v| v.parse().ok());
            }
            "c" => {
                // Invariant: `sections` starts non-empty and only grows.
                let s = sections.last_mut().expect("sections is never empty");
                s.c = s.c.or(Some(value));
            }
            "a" => sections
                .last_mut()
                .expect("sections is never empty")
                .attrs
                .push(value),
            _ => {}
        }
    }
    (origin_version, sections)
}

fn parse_media_line(m: &str) -> Result<MediaLine, SdpError> {
    let mut it = m.split_ascii_whitespace();
    let kind = it.next().ok_or(SdpError::BadMediaLine("empty"))?;
    let port = it.next().ok_or(SdpError::BadMediaLine("no port"))?;
    // "49170/2" (port count) → first port.
    let port = port.split('/').next().unwrap_or(port);
    let port: u16 = port
        .parse()
        .map_err(|_| SdpError::BadMediaLine("port is not a number"))?;
    let proto = it.next().ok_or(SdpError::BadMediaLine("no transport"))?;
    Ok(MediaLine {
        kind: kind.to_ascii_lowercase(),
        port,
        proto: proto.to_string(),
        fmts: it.map(str::to_string).collect(),
    })
}

fn parse_connection(c: &str) -> Result<IpAddr, SdpError> {
    // "IN IP4 192.0.2.1", multicast "IN IP4 224.2.1.1/127", "IN IP6 2001:db8::1".
    let mut it = c.split_ascii_whitespace();
    let (_net, _atype, addr) = (
        it.next(),
        it.next(),
        it.next().ok_or(SdpError::BadConnection)?,
    );
    let addr = addr.split('/').next().unwrap_or(addr);
    addr.parse().map_err(|_| SdpError::BadConnection)
}

fn attr_value<'a>(attr: &'a str, name: &str) -> Option<&'a str> {
    let rest = attr.strip_prefix(name)?;
    rest.strip_prefix(':').map(str::trim)
}

fn is_plain_rtp(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("RTP/AVP") || proto.eq_ignore_ascii_case("RTP/AVPF")
}

/// Parses an SDP offer (or answer) down to its audio stream. Accepts CRLF or LF, blanks around
/// fields, unknown lines and attributes, any number of m-lines.
pub fn parse_offer(sdp: &str) -> Result<SessionMedia, SdpError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge(sdp.len()));
    }
    let (origin_version, sections) = split_sections(sdp);
    let Some((session, media)) = sections.split_first() else {
        return Err(SdpError::NoAudio);
    };

    let mut media_lines = Vec::with_capacity(media.len());
    for s in media {
        // Invariant: only sections created from an m= line follow the session section.
        media_lines.push(parse_media_line(
            s.m.expect("media sections carry their m= line"),
        )?);
    }

    let audio = media_lines
        .iter()
        .position(|m| m.kind == "audio" && m.port != 0 && is_plain_rtp(&m.proto));
    let Some(audio_index) = audio else {
        if let Some(m) = media_lines
            .iter()
            .find(|m| m.kind == "audio" && m.port != 0)
        {
            return Err(SdpError::UnsupportedTransport(
                m.proto.chars().take(32).collect(),
            ));
        }
        return Err(SdpError::NoAudio);
    };
    let line = &media_lines[audio_index];
    let sect = &media[audio_index];

    let c = sect.c.or(session.c).ok_or(SdpError::MissingConnection)?;
    let ip = parse_connection(c)?;
    let port = line.port;

    let mut payloads: Vec<PayloadFormat> = Vec::new();
    for f in &line.fmts {
        let Ok(pt) = f.parse::<u8>() else { continue };
        if pt > 127 || payloads.iter().any(|p| p.pt == pt) {
            continue;
        }
        let (name, clock_rate) = static_payload(pt).unwrap_or(("", 0));
        payloads.push(PayloadFormat {
            pt,
            name: name.to_string(),
            clock_rate,
            channels: 1,
        });
    }

    let mut direction = None;
    let mut ptime = None;
    let mut rtcp_mux = false;
    let mut rtcp: Option<SocketAddr> = None;
    for a in &sect.attrs {
        if let Some(v) = attr_value(a, "rtpmap") {
            // "<pt> <name>/<rate>[/<channels>]"
            let mut it = v.split_ascii_whitespace();
            let (Some(pt), Some(enc)) = (it.next(), it.next()) else {
                continue;
            };
            let Ok(pt) = pt.parse::<u8>() else { continue };
            let Some(p) = payloads.iter_mut().find(|p| p.pt == pt) else {
                continue;
            };
            let mut parts = enc.split('/');
            p.name = parts.next().unwrap_or_default().to_string();
            p.clock_rate = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
            p.channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
        } else if let Some(v) = attr_value(a, "ptime") {
            ptime = v
                .parse::<f64>()
                .ok()
                .filter(|p| p.is_finite() && *p > 0.0 && *p < 10_000.0)
                .map(|p| p.round() as u32);
        } else if let Some(v) = attr_value(a, "rtcp") {
            // "53020" or "53020 IN IP4 192.0.2.1" (RFC 3605).
            let mut it = v.split_ascii_whitespace();
            let Some(Ok(p)) = it.next().map(str::parse::<u16>) else {
                continue;
            };
            let rest: Vec<&str> = it.collect();
            let addr = if rest.len() >= 3 {
                parse_connection(&rest.join(" ")).unwrap_or(ip)
            } else {
                ip
            };
            rtcp = Some(SocketAddr::new(addr, p));
        } else if *a == "rtcp-mux" {
            rtcp_mux = true;
        } else if let Some(d) = Direction::parse(a) {
            direction = Some(d);
        }
    }
    let direction = direction
        .or_else(|| session.attrs.iter().rev().find_map(|a| Direction::parse(a)))
        .unwrap_or_default();

    let telephone_event = payloads
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case("telephone-event") && p.clock_rate == 8000)
        .map(|p| p.pt);

    let rtcp = match (rtcp_mux, rtcp) {
        (true, _) => SocketAddr::new(ip, port),
        (false, Some(r)) => r,
        (false, None) => SocketAddr::new(ip, port.saturating_add(1)),
    };

    Ok(SessionMedia {
        origin_version,
        rtp: PeerAddr(SocketAddr::new(ip, port)),
        rtcp: PeerAddr(rtcp),
        rtcp_mux,
        proto: line.proto.clone(),
        payloads,
        telephone_event,
        direction,
        ptime,
        media_lines,
        audio_index,
    })
}

/// Codec negotiation for an offer: the offered PCMU/PCMA in the offer's order, then
/// telephone-event/8000 if offered. `NoCommonCodec` (SIP 488) when no G.711 is offered.
pub fn negotiate(offer: &SessionMedia) -> Result<Vec<Codec>, SdpError> {
    let mut out: Vec<Codec> = offer.g711_codecs().into_iter().map(Codec::G711).collect();
    if out.is_empty() {
        return Err(SdpError::NoCommonCodec);
    }
    if let Some(te) = offer.telephone_event {
        out.push(Codec::TelephoneEvent(te));
    }
    Ok(out)
}

/// The codec a call will use after an answer: the first G.711 codec listed in the answer that was
/// also in the offer (RFC 3264 §6.1: the answerer lists its preference first).
pub fn answer_codec(offer: &SessionMedia, answer: &SessionMedia) -> Option<G711> {
    let offered = offer.g711_codecs();
    answer
        .g711_codecs()
        .into_iter()
        .find(|c| offered.contains(c))
}

/// Inputs for [`build_sdp`].
#[derive(Debug, Clone, Copy)]
pub struct BuildSdp<'a> {
    /// `o=` session id: fixed for the dialog.
    pub session_id: u64,
    /// `o=` version: incremented each time our SDP toward this leg changes.
    pub version: u64,
    /// Our media address toward this leg.
    pub addr: IpAddr,
    /// Our RTP port toward this leg (RTCP on port + 1).
    pub port: u16,
    /// Audio codecs in preference order (static payload types 0/8).
    pub codecs: &'a [G711],
    /// Telephone-event payload type (at 8 kHz), if negotiated.
    pub telephone_event: Option<u8>,
    pub direction: Direction,
    /// Packetisation time in milliseconds (20 for everything we send).
    pub ptime: u32,
    /// When answering: the offer, so that every m-line is mirrored in order and those other than
    /// the audio stream are rejected with port 0. `None` when we make an offer (audio only).
    pub answer_to: Option<&'a SessionMedia>,
}

/// Generates our SDP (CRLF line endings). Fails with `NoCommonCodec` if `codecs` is empty.
pub fn build_sdp(b: &BuildSdp<'_>) -> Result<String, SdpError> {
    if b.codecs.is_empty() {
        return Err(SdpError::NoCommonCodec);
    }
    let ipv = if b.addr.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = String::with_capacity(320);
    // Writing into a String cannot fail; results are ignored below for that reason.
    let _ = write!(
        s,
        "v=0\r\no=callgate {} {} IN {ipv} {}\r\ns=callgate\r\nc=IN {ipv} {}\r\nt=0 0\r\n",
        b.session_id, b.version, b.addr, b.addr
    );

    let audio = |s: &mut String| {
        let _ = write!(s, "m=audio {} RTP/AVP", b.port);
        for c in b.codecs {
            let _ = write!(s, " {}", c.payload_type());
        }
        if let Some(te) = b.telephone_event {
            let _ = write!(s, " {te}");
        }
        s.push_str("\r\n");
        for c in b.codecs {
            let _ = write!(s, "a=rtpmap:{} {}/8000\r\n", c.payload_type(), c.name());
        }
        if let Some(te) = b.telephone_event {
            let _ = write!(
                s,
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
            );
        }
        let _ = write!(s, "a=ptime:{}\r\na={}\r\n", b.ptime, b.direction.as_str());
    };

    match b.answer_to {
        None => audio(&mut s),
        Some(offer) => {
            for (i, m) in offer.media_lines.iter().enumerate() {
                if i == offer.audio_index {
                    audio(&mut s);
                } else {
                    // Rejected stream (RFC 3264 §6): port 0, same media and transport, at least
                    // one format from the offer.
                    let fmt = m.fmts.first().map(String::as_str).unwrap_or("0");
                    let kind = if m.kind.is_empty() { "audio" } else { &m.kind };
                    let _ = write!(s, "m={kind} 0 {} {fmt}\r\n", m.proto);
                }
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SIPp's built-in uac scenario body with `[media_ip]`/`[media_port]` substituted.
    const SIPP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    /// baresip 3.x offer: opus first, G722, G.711, telephone-event, rtcp-mux, LF endings.
    const BARESIP: &str = "v=0
o=- 1948023452 3108230123 IN IP4 192.168.1.20
s=-
c=IN IP4 192.168.1.20
t=0 0
m=audio 10002 RTP/AVP 96 9 0 8 101
b=AS:128
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp-mux
a=sendrecv
a=label:1
a=ssrc:1436252143 cname:a7b0c3f2-5b0e-4f0d
a=mid:1
";

    /// PJSIP (pjsua) offer: media-level c=, a=rtcp with address, telephone-event at 16k and 8k,
    /// a video m-line, PCMA listed before PCMU.
    const PJSIP: &str = "v=0\r
o=- 3906254745 3906254745 IN IP4 10.0.0.7\r
s=pjmedia\r
b=AS:84\r
t=0 0\r
a=X-nat:0\r
m=audio 4000 RTP/AVP 96 97 98 99 3 8 0 9 120 121\r
c=IN IP4 10.0.0.7\r
b=TIAS:64000\r
a=rtcp:4001 IN IP4 10.0.0.7\r
a=sendrecv\r
a=rtpmap:96 speex/16000\r
a=rtpmap:97 speex/8000\r
a=rtpmap:98 speex/32000\r
a=rtpmap:99 iLBC/8000\r
a=fmtp:99 mode=30\r
a=rtpmap:120 telephone-event/16000\r
a=fmtp:120 0-16\r
a=rtpmap:121 telephone-event/8000\r
a=fmtp:121 0-16\r
a=ssrc:1825148427 cname:6e3c5e4c0a8d1f45\r
m=video 4002 RTP/AVP 97\r
c=IN IP4 10.0.0.7\r
a=rtpmap:97 H264/90000\r
a=fmtp:97 profile-level-id=42e01e; packetization-mode=1\r
a=sendrecv\r
";

    /// Hold re-INVITE, RFC 3264 style.
    const HOLD_SENDONLY: &str = "v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 30000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";

    /// Hold re-INVITE, RFC 2543 style (c=0.0.0.0), no direction attribute.
    const HOLD_ZERO: &str = "v=0\r\no=- 1 3 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";

    #[test]
    fn sipp_default_offer() {
        let m = parse_offer(SIPP).unwrap();
        assert_eq!(m.rtp.0, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(m.rtcp.0, "127.0.0.1:6001".parse().unwrap());
        assert_eq!(m.origin_version, Some(2353687637));
        assert_eq!(m.payloads.len(), 1);
        assert_eq!(m.payloads[0].name, "PCMU");
        assert_eq!(m.direction, Direction::SendRecv);
        assert!(!m.is_hold());
        assert_eq!(m.telephone_event, None);
        assert_eq!(negotiate(&m).unwrap(), vec![Codec::G711(G711::Pcmu)]);
    }

    #[test]
    fn baresip_offer() {
        let m = parse_offer(BARESIP).unwrap();
        assert_eq!(m.rtp.0, "192.168.1.20:10002".parse().unwrap());
        assert!(m.rtcp_mux);
        assert_eq!(m.rtcp.0, m.rtp.0);
        let names: Vec<_> = m
            .payloads
            .iter()
            .map(|p| (p.pt, p.name.as_str(), p.clock_rate, p.channels))
            .collect();
        assert_eq!(
            names,
            vec![
                (96, "opus", 48000, 2),
                (9, "G722", 8000, 1),
                (0, "PCMU", 8000, 1),
                (8, "PCMA", 8000, 1),
                (101, "telephone-event", 8000, 1)
            ]
        );
        assert_eq!(m.telephone_event, Some(101));
        assert_eq!(m.ptime, None);
        assert_eq!(
            negotiate(&m).unwrap(),
            vec![
                Codec::G711(G711::Pcmu),
                Codec::G711(G711::Pcma),
                Codec::TelephoneEvent(101)
            ]
        );
    }

    #[test]
    fn pjsip_offer_and_answer_layout() {
        let m = parse_offer(PJSIP).unwrap();
        assert_eq!(m.rtp.0, "10.0.0.7:4000".parse().unwrap());
        assert_eq!(m.rtcp.0, "10.0.0.7:4001".parse().unwrap());
        assert!(!m.rtcp_mux);
        // telephone-event/16000 (120) is skipped in favour of the 8 kHz one.
        assert_eq!(m.telephone_event, Some(121));
        assert_eq!(m.media_lines.len(), 2);
        assert_eq!(m.audio_index, 0);
        assert_eq!(m.media_lines[1].kind, "video");
        let codecs = negotiate(&m).unwrap();
        assert_eq!(
            codecs,
            vec![
                Codec::G711(G711::Pcma),
                Codec::G711(G711::Pcmu),
                Codec::TelephoneEvent(121)
            ]
        );

        let (audio, te) = split_codecs(&codecs);
        let answer = build_sdp(&BuildSdp {
            session_id: 42,
            version: 1,
            addr: "203.0.113.5".parse().unwrap(),
            port: 20000,
            codecs: &audio[..1],
            telephone_event: te,
            direction: m.direction.reversed(),
            ptime: 20,
            answer_to: Some(&m),
        })
        .unwrap();
        assert!(
            answer.contains("m=audio 20000 RTP/AVP 8 121\r\n"),
            "{answer}"
        );
        assert!(answer.contains("m=video 0 RTP/AVP 97\r\n"), "{answer}");
        assert!(answer.find("m=audio").unwrap() < answer.find("m=video").unwrap());
        // Our own answer parses back, and the caller's codec is what the answer picked.
        let back = parse_offer(&answer).unwrap();
        assert_eq!(back.media_lines.len(), 2);
        assert_eq!(answer_codec(&m, &back), Some(G711::Pcma));
    }

    #[test]
    fn hold_detection() {
        let m = parse_offer(HOLD_SENDONLY).unwrap();
        assert_eq!(m.direction, Direction::SendOnly);
        assert!(m.is_hold());
        assert_eq!(m.direction.reversed(), Direction::RecvOnly);
        let m = parse_offer(HOLD_ZERO).unwrap();
        assert_eq!(m.direction, Direction::SendRecv);
        assert!(m.is_hold());
        // Session-level direction applies when the media section has none; media level wins.
        let s = "v=0\nc=IN IP4 192.0.2.1\na=inactive\nm=audio 5 RTP/AVP 0\n";
        assert_eq!(parse_offer(s).unwrap().direction, Direction::Inactive);
        let s = "v=0\nc=IN IP4 192.0.2.1\na=inactive\nm=audio 5 RTP/AVP 0\na=recvonly\n";
        let m = parse_offer(s).unwrap();
        assert_eq!(m.direction, Direction::RecvOnly);
        assert!(!m.is_hold());
    }

    #[test]
    fn build_offer_text() {
        let s = build_sdp(&BuildSdp {
            session_id: 7,
            version: 3,
            addr: "203.0.113.5".parse().unwrap(),
            port: 20002,
            codecs: &[G711::Pcmu, G711::Pcma],
            telephone_event: Some(101),
            direction: Direction::SendRecv,
            ptime: 20,
            answer_to: None,
        })
        .unwrap();
        assert_eq!(
            s,
            "v=0\r\no=callgate 7 3 IN IP4 203.0.113.5\r\ns=callgate\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
             m=audio 20002 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        let v6 = build_sdp(&BuildSdp {
            addr: "2001:db8::5".parse().unwrap(),
            ..BuildSdp {
                session_id: 1,
                version: 1,
                addr: "0.0.0.0".parse().unwrap(),
                port: 1,
                codecs: &[G711::Pcma],
                telephone_event: None,
                direction: Direction::SendOnly,
                ptime: 20,
                answer_to: None,
            }
        })
        .unwrap();
        assert!(v6.contains("c=IN IP6 2001:db8::5\r\n") && v6.contains("a=sendonly\r\n"));
        let back = parse_offer(&v6).unwrap();
        assert_eq!(back.rtp.0, "[2001:db8::5]:1".parse().unwrap());
        assert_eq!(back.direction, Direction::SendOnly);
        assert_eq!(
            build_sdp(&BuildSdp {
                codecs: &[],
                ..BuildSdp {
                    session_id: 1,
                    version: 1,
                    addr: "0.0.0.0".parse().unwrap(),
                    port: 1,
                    codecs: &[],
                    telephone_event: None,
                    direction: Direction::SendRecv,
                    ptime: 20,
                    answer_to: None
                }
            }),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn no_common_codec_is_488() {
        let s = "v=0\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n";
        let m = parse_offer(s).unwrap();
        let e = negotiate(&m).unwrap_err();
        assert_eq!(e, SdpError::NoCommonCodec);
        assert_eq!(e.sip_status(), 488);
        // PT 0 relabelled by rtpmap is not PCMU.
        let s = "v=0\nc=IN IP4 192.0.2.1\nm=audio 4000 RTP/AVP 0\na=rtpmap:0 G729/8000\n";
        assert_eq!(
            negotiate(&parse_offer(s).unwrap()),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn errors_and_odd_inputs() {
        assert_eq!(parse_offer(""), Err(SdpError::NoAudio));
        assert_eq!(
            parse_offer("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5 RTP/AVP 96\r\n"),
            Err(SdpError::NoAudio)
        );
        assert_eq!(
            parse_offer("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n"),
            Err(SdpError::NoAudio)
        );
        let e = parse_offer("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/SAVP 0\r\n").unwrap_err();
        assert_eq!(e, SdpError::UnsupportedTransport("RTP/SAVP".into()));
        assert_eq!(e.sip_status(), 488);
        assert_eq!(
            parse_offer("v=0\r\nm=audio 5 RTP/AVP 0\r\n"),
            Err(SdpError::MissingConnection)
        );
        assert_eq!(
            parse_offer("v=0\r\nc=IN IP4 pbx.example\r\nm=audio 5 RTP/AVP 0\r\n"),
            Err(SdpError::BadConnection)
        );
        assert_eq!(
            parse_offer("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n"),
            Err(SdpError::BadMediaLine("port is not a number"))
        );
        assert_eq!(
            parse_offer(&"a".repeat(MAX_SDP_LEN + 1)),
            Err(SdpError::TooLarge(MAX_SDP_LEN + 1))
        );
        // A second audio stream on SRTP before a plain one: the plain one is chosen.
        let s = "v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/SAVP 0\nm=audio 7 RTP/AVP 8\n";
        let m = parse_offer(s).unwrap();
        assert_eq!((m.audio_index, m.rtp.0.port()), (1, 7));
        // Extra whitespace, tabs, port count, multicast TTL, decimal ptime, media-level c= wins.
        let s = "  v=0  \r\n c=IN IP4 9.9.9.9\r\nm=audio  6000/2   RTP/AVP   8  0 \r\nc=IN IP4 224.2.1.1/127\r\na=ptime:20.0\r\n\r\n";
        let m = parse_offer(s).unwrap();
        assert_eq!(m.rtp.0, "224.2.1.1:6000".parse().unwrap());
        assert_eq!(m.ptime, Some(20));
        assert_eq!(m.g711_codecs(), vec![G711::Pcma, G711::Pcmu]);
        // Port 65535 with no a=rtcp does not overflow.
        let m = parse_offer("c=IN IP4 1.2.3.4\nm=audio 65535 RTP/AVP 0\n").unwrap();
        assert_eq!(m.rtcp.0.port(), 65535);
        // Debug output of a parsed offer does not leak the peer address.
        assert!(!format!("{m:?}").contains("1.2.3.4"));
    }
}
