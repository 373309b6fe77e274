//! Minimal SIP text for the simulated phones.
//!
//! Every message a phone receives is first checked by the gateway's own strict parser
//! (`callgate::sip::message::parse`, rsipstack underneath), so a malformed message from the
//! gateway is a test failure, not something a lenient test parser quietly accepts. Header access
//! after that is plain text handling: the phones need a handful of headers, not a SIP stack.

use std::net::{IpAddr, SocketAddr};

/// Largest message the phones accept (the gateway's own default limit is 16 KiB).
pub const MAX_MESSAGE: usize = 65_535;

/// A fresh RFC 3261 branch (magic cookie prefix).
pub fn new_branch() -> String {
    format!("z9hG4bK{}", callgate::ids::random_hex(8))
}

/// A fresh From/To tag.
pub fn new_tag() -> String {
    callgate::ids::random_hex(6)
}

/// A fresh Call-ID.
pub fn new_call_id() -> String {
    format!("{}@simphone", callgate::ids::random_hex(10))
}

/// One received SIP message, checked and split into start line, headers and body.
#[derive(Clone, Debug)]
pub struct SipMsg {
    pub first_line: String,
    /// In order received; names as written.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Compact header forms (RFC 3261 §7.3.3) to full lowercase names.
fn canonical(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        other => return other.to_string(),
    }
    .to_string()
}

impl SipMsg {
    /// Checks `bytes` with the gateway's strict parser, then splits the text.
    pub fn parse(bytes: &[u8]) -> Result<SipMsg, String> {
        callgate::sip::message::parse(bytes, MAX_MESSAGE)
            .map_err(|e| format!("{e}: {:?}", String::from_utf8_lossy(bytes)))?;
        let text = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], &text[i + 4..]),
            None => (text.as_str(), ""),
        };
        let mut lines = head.split("\r\n");
        let first_line = lines.next().unwrap_or_default().to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                // Folded continuation line.
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok(SipMsg {
            first_line,
            headers,
            body: body.to_string(),
        })
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.first_line.strip_prefix("SIP/2.0 ")?;
        rest.split(' ').next()?.parse().ok()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.first_line.starts_with("SIP/2.0") {
            return None;
        }
        self.first_line.split(' ').next()
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&str> {
        self.method()?;
        self.first_line.split(' ').nth(1)
    }

    /// First value of a header (compact forms understood).
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = canonical(name);
        self.headers
            .iter()
            .find(|(n, _)| canonical(n) == want)
            .map(|(_, v)| v.as_str())
    }

    /// Every header line of that name, in order (values not split on commas).
    pub fn header_lines(&self, name: &str) -> Vec<(String, String)> {
        let want = canonical(name);
        self.headers
            .iter()
            .filter(|(n, _)| canonical(n) == want)
            .cloned()
            .collect()
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> (u32, String) {
        let v = self.header("cseq").unwrap_or_default();
        let mut it = v.split_whitespace();
        let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (n, it.next().unwrap_or_default().to_string())
    }

    pub fn call_id(&self) -> &str {
        self.header("call-id").unwrap_or_default()
    }

    /// The branch of the top Via.
    pub fn top_branch(&self) -> Option<String> {
        let via = self.header("via")?;
        let top = via.split(',').next()?;
        param(top, "branch")
    }

    pub fn to_tag(&self) -> Option<String> {
        param(self.header("to")?, "tag")
    }

    pub fn from_tag(&self) -> Option<String> {
        param(self.header("from")?, "tag")
    }

    /// The Contact URI (inside `<>` if bracketed).
    pub fn contact_uri(&self) -> Option<String> {
        self.header("contact").map(uri_of)
    }

    /// Where the Contact URI points (`host:port`, default port 5060).
    pub fn contact_addr(&self) -> Option<SocketAddr> {
        uri_addr(&self.contact_uri()?)
    }

    /// The SDP body, when there is one.
    pub fn sdp(&self) -> Option<Sdp> {
        let ct = self.header("content-type")?.to_ascii_lowercase();
        if !ct.contains("application/sdp") || self.body.trim().is_empty() {
            return None;
        }
        Sdp::parse(&self.body)
    }

    /// Does this response belong to the request with this CSeq number and method?
    pub fn answers(&self, seq: u32, method: &str) -> bool {
        self.status().is_some() && self.cseq() == (seq, method.to_string())
    }
}

/// `;name=value` parameter of a header value (outside `<>`).
pub fn param(value: &str, name: &str) -> Option<String> {
    let after_uri = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    after_uri.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
    })
}

/// The URI of a name-addr or addr-spec header value.
pub fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if b > a => value[a + 1..b].to_string(),
        _ => value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// `sip:user@host:port;params` → socket address (IP literals only; port default 5060).
pub fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri.strip_prefix("sip:")?;
    let hostport = rest.rsplit('@').next()?;
    let hostport = hostport.split([';', '?']).next()?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (hostport, 5060),
    };
    let ip: IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// The parts of an SDP body the phones use: where to send audio and which payload types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sdp {
    pub addr: SocketAddr,
    pub payload_types: Vec<u8>,
}

impl Sdp {
    pub fn parse(body: &str) -> Option<Sdp> {
        let mut session_c: Option<IpAddr> = None;
        let mut media_c: Option<IpAddr> = None;
        let mut media: Option<(u16, Vec<u8>)> = None;
        for line in body.lines().map(str::trim) {
            if let Some(c) = line.strip_prefix("c=") {
                let ip: Option<IpAddr> = c.split_whitespace().nth(2).and_then(|a| a.parse().ok());
                if media.is_some() {
                    media_c = ip
                } else {
                    session_c = ip
                }
            } else if let Some(m) = line.strip_prefix("m=audio ") {
                let mut it = m.split_whitespace();
                let port = it.next()?.parse().ok()?;
                let _proto = it.next()?;
                media = Some((port, it.filter_map(|p| p.parse().ok()).collect()));
            }
        }
        let (port, payload_types) = media?;
        Some(Sdp {
            addr: SocketAddr::new(media_c.or(session_c)?, port),
            payload_types,
        })
    }

    /// The first G.711 payload type of the answer, which both sides then send.
    pub fn g711(&self) -> Option<callgate::media::g711::G711> {
        self.payload_types
            .iter()
            .find_map(|&pt| callgate::media::g711::G711::from_payload_type(pt))
    }
}

/// An SDP body for a phone: `pts` in preference order, with rtpmaps (101 = telephone-event).
pub fn sdp_body(user: &str, rtp: SocketAddr, pts: &[u8]) -> String {
    let ip = rtp.ip();
    let list: Vec<String> = pts.iter().map(|p| p.to_string()).collect();
    let mut s = format!(
        "v=0\r\no={user} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {}\r\n",
        rtp.port(),
        list.join(" ")
    );
    for pt in pts {
        match pt {
            0 => s.push_str("a=rtpmap:0 PCMU/8000\r\n"),
            8 => s.push_str("a=rtpmap:8 PCMA/8000\r\n"),
            101 => s.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"),
            _ => {}
        }
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s
}

/// Builds a request. `headers` are complete header lines without CRLF; Max-Forwards,
/// Content-Type (when `body` is SDP) and Content-Length are added.
pub fn request(method: &str, uri: &str, headers: &[String], sdp: Option<&str>) -> Vec<u8> {
    let mut s = format!("{method} {uri} SIP/2.0\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("Max-Forwards: 70\r\nUser-Agent: callgate-simphone\r\n");
    finish(s, sdp)
}

/// Builds a response to `req` (RFC 3261 §8.2.6): Via lines, From, To (our tag added when absent),
/// Call-ID and CSeq copied; `extra` header lines appended.
pub fn response(
    req: &SipMsg,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[String],
    sdp: Option<&str>,
) -> Vec<u8> {
    let mut s = format!("SIP/2.0 {status} {reason}\r\n");
    for (n, v) in req.header_lines("via") {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(f) = req.header("from") {
        s.push_str(&format!("From: {f}\r\n"));
    }
    if let Some(t) = req.header("to") {
        match (to_tag, param(t, "tag")) {
            (Some(tag), None) => s.push_str(&format!("To: {t};tag={tag}\r\n")),
            _ => s.push_str(&format!("To: {t}\r\n")),
        }
    }
    s.push_str(&format!("Call-ID: {}\r\n", req.call_id()));
    if let Some(c) = req.header("cseq") {
        s.push_str(&format!("CSeq: {c}\r\n"));
    }
    for h in extra {
        s.push_str(h);
        s.push_str("\r\n");
    }
    finish(s, sdp)
}

/// Builds a request with a body of any type (`content_type`), e.g. an INFO carrying
/// `application/dtmf-relay`. Max-Forwards, Content-Type and Content-Length are added.
pub fn request_with_body(
    method: &str,
    uri: &str,
    headers: &[String],
    content_type: &str,
    body: &str,
) -> Vec<u8> {
    let mut s = format!("{method} {uri} SIP/2.0\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("Max-Forwards: 70\r\nUser-Agent: callgate-simphone\r\n");
    s.push_str(&format!(
        "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.into_bytes()
}

/// The payload type an SDP body maps to `telephone-event/8000` (`a=rtpmap:N telephone-event/8000`).
pub fn telephone_event_pt(sdp_body: &str) -> Option<u8> {
    sdp_body.lines().map(str::trim).find_map(|l| {
        let rest = l.strip_prefix("a=rtpmap:")?;
        let (pt, enc) = rest.split_once(' ')?;
        enc.to_ascii_lowercase()
            .starts_with("telephone-event/8000")
            .then(|| pt.trim().parse().ok())
            .flatten()
    })
}

fn finish(mut s: String, sdp: Option<&str>) -> Vec<u8> {
    match sdp {
        Some(body) => {
            s.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        None => s.push_str("Content-Length: 0\r\n\r\n"),
    }
    s.into_bytes()
}
