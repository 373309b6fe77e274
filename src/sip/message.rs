//! SIP message helpers on top of rsipstack's message model and parser.
//!
//! Parsing is strict (rsipstack's parser); anything it refuses, or a request missing a mandatory
//! header, gets a `400` built leniently from whatever header lines can be found, so a broken
//! peer learns what went wrong and no call is disturbed.

use rsipstack::sip::{self as rsip, HasHeaders, Header, HeadersExt, Method, SipMessage, ToTypedHeader};

/// Why a datagram or stream message was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MalformedSip {
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("unparseable SIP message")]
    Unparseable,
    #[error("missing or invalid mandatory header {0}")]
    MissingHeader(&'static str),
    #[error("unsupported method")]
    UnknownMethod,
}

impl MalformedSip {
    /// The status code a request with this problem gets.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            MalformedSip::TooLarge(_) => (513, "Message Too Large"),
            MalformedSip::UnknownMethod => (501, "Not Implemented"),
            _ => (400, "Bad Request"),
        }
    }
}

/// Parses bytes into a message and checks the headers every transaction needs.
pub fn parse(bytes: &[u8], max_size: usize) -> Result<SipMessage, MalformedSip> {
    if bytes.len() > max_size {
        return Err(MalformedSip::TooLarge(bytes.len()));
    }
    // rsipstack's parser has been seen to accept trailing garbage and odd line endings; the checks
    // below are what we rely on.
    let msg = SipMessage::try_from(bytes).map_err(|_| {
        if looks_like_unknown_method(bytes) {
            MalformedSip::UnknownMethod
        } else {
            MalformedSip::Unparseable
        }
    })?;
    check_mandatory(&msg)?;
    Ok(msg)
}

fn check_mandatory(msg: &SipMessage) -> Result<(), MalformedSip> {
    let via = msg.via_header().map_err(|_| MalformedSip::MissingHeader("Via"))?;
    let typed = via.typed().map_err(|_| MalformedSip::MissingHeader("Via"))?;
    if typed.branch().is_none() {
        return Err(MalformedSip::MissingHeader("Via branch"));
    }
    msg.from_header().map_err(|_| MalformedSip::MissingHeader("From"))?;
    msg.to_header().map_err(|_| MalformedSip::MissingHeader("To"))?;
    let call_id = msg.call_id_header().map_err(|_| MalformedSip::MissingHeader("Call-ID"))?;
    if call_id.value().trim().is_empty() {
        return Err(MalformedSip::MissingHeader("Call-ID"));
    }
    let cseq = msg.cseq_header().map_err(|_| MalformedSip::MissingHeader("CSeq"))?;
    cseq_of(cseq).ok_or(MalformedSip::MissingHeader("CSeq"))?;
    if let SipMessage::Request(r) = msg {
        // CSeq method must match the request method (RFC 3261 §8.1.1.5).
        let (_, m) = cseq_of(cseq).ok_or(MalformedSip::MissingHeader("CSeq"))?;
        if m != r.method {
            return Err(MalformedSip::MissingHeader("CSeq"));
        }
    }
    Ok(())
}

fn cseq_of(h: &rsip::CSeq) -> Option<(u32, Method)> {
    let t = h.typed().ok()?;
    Some((t.seq, t.method))
}

/// The CSeq number and method of a checked message.
pub fn cseq(msg: &impl HeadersExt) -> (u32, Method) {
    // Invariant: callers pass messages that went through `parse`, which checked CSeq.
    msg.cseq_header().ok().and_then(cseq_of).unwrap_or((0, Method::Options))
}

/// The top Via branch of a checked message.
pub fn branch(msg: &impl HeadersExt) -> String {
    msg.via_header()
        .ok()
        .and_then(|v| v.typed().ok())
        .and_then(|v| v.branch().map(|b| b.to_string()))
        .unwrap_or_default()
}

/// The Call-ID value.
pub fn call_id(msg: &impl HeadersExt) -> String {
    msg.call_id_header().map(|c| c.value().trim().to_string()).unwrap_or_default()
}

/// The From tag, if any.
pub fn from_tag(msg: &impl HeadersExt) -> Option<String> {
    msg.from_header().ok()?.tag().ok()?.map(|t| t.value().to_string())
}

/// The To tag, if any.
pub fn to_tag(msg: &impl HeadersExt) -> Option<String> {
    msg.to_header().ok()?.tag().ok()?.map(|t| t.value().to_string())
}

/// The user part of the Request-URI (the dialled number).
pub fn request_user(req: &rsip::Request) -> String {
    req.uri.auth.as_ref().map(|a| a.user.clone()).unwrap_or_default()
}

/// The user part of the From URI (the calling number).
pub fn from_user(msg: &impl HeadersExt) -> String {
    msg.from_header()
        .ok()
        .and_then(|f| f.uri().ok())
        .and_then(|u| u.auth.map(|a| a.user))
        .unwrap_or_default()
}

/// The first Contact URI, as text.
pub fn contact_uri(msg: &impl HeadersExt) -> Option<rsip::Uri> {
    msg.contact_header().ok()?.typed().ok().map(|c| c.uri)
}

/// Record-Route values in the order received.
pub fn record_routes(msg: &impl HeadersExt) -> Vec<String> {
    msg.record_route_headers()
        .iter()
        .flat_map(|h| split_header_list(h.value()))
        .collect()
}

/// Splits a comma-separated header list, respecting `<...>` and quotes.
fn split_header_list(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut cur) = (0i32, false, String::new());
    for c in v.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The message body as text when it is SDP.
pub fn sdp_body(msg: &impl HasBody) -> Option<String> {
    let body = msg.body_bytes();
    if body.is_empty() {
        return None;
    }
    let is_sdp = msg
        .header_list()
        .iter()
        .any(|h| matches!(h, Header::ContentType(ct) if ct.value().to_ascii_lowercase().contains("application/sdp")));
    if !is_sdp {
        return None;
    }
    String::from_utf8(body.to_vec()).ok()
}

/// Access to a message's body and headers for both requests and responses.
pub trait HasBody {
    fn body_bytes(&self) -> &[u8];
    fn header_list(&self) -> &[Header];
}

impl HasBody for rsip::Request {
    fn body_bytes(&self) -> &[u8] {
        &self.body
    }
    fn header_list(&self) -> &[Header] {
        &self.headers().0
    }
}

impl HasBody for rsip::Response {
    fn body_bytes(&self) -> &[u8] {
        &self.body
    }
    fn header_list(&self) -> &[Header] {
        &self.headers().0
    }
}

/// Builds a response to `req` (RFC 3261 §8.2.6): Via, From, To (adding `to_tag` when the
/// request had none), Call-ID, CSeq copied; `extra` headers and an optional SDP body appended.
pub fn response(
    req: &rsip::Request,
    status: u16,
    to_tag: Option<&str>,
    extra: Vec<Header>,
    sdp: Option<&str>,
) -> rsip::Response {
    let mut headers = rsip::Headers::default();
    for h in req.headers().iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(to) => {
                let mut to = to.clone();
                if let Some(tag) = to_tag {
                    if to.tag().ok().flatten().is_none() {
                        to = rsip::To::new(format!("{};tag={tag}", to.value()));
                    }
                }
                headers.push(Header::To(to));
            }
            _ => {}
        }
    }
    headers.push(Header::Server(rsip::Server::new("callgate")));
    let body = finish_headers(&mut headers, extra, sdp);
    rsip::Response {
        status_code: rsip::StatusCode::from(status),
        wire_reason: None,
        version: rsip::Version::V2,
        headers,
        body,
    }
}

/// Appends `extra`, then Content-Type (when there is an SDP body) and Content-Length; returns
/// the body. Every message we build ends its headers this way.
pub(crate) fn finish_headers(headers: &mut rsip::Headers, extra: Vec<Header>, sdp: Option<&str>) -> Vec<u8> {
    for h in extra {
        headers.push(h);
    }
    let body = sdp.map(|s| s.as_bytes().to_vec()).unwrap_or_default();
    if !body.is_empty() {
        headers.push(Header::ContentType(rsip::ContentType::new("application/sdp")));
    }
    headers.push(Header::ContentLength(rsip::ContentLength::new(body.len().to_string())));
    body
}

/// A minimal response to bytes the strict parser refused: the header lines a client needs to
/// match it (Via, From, To, Call-ID, CSeq) are copied verbatim when present. Returns `None`
/// when the bytes are not a request (responses are never answered) or lack a Via.
pub fn lenient_reply(bytes: &[u8], status: u16, reason: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let first = lines.next()?;
    if first.starts_with("SIP/") || !first.ends_with("SIP/2.0") {
        return None;
    }
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    let mut has_via = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        let keep = matches!(name.as_str(), "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq");
        if keep {
            has_via |= name == "via" || name == "v";
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if !has_via {
        return None;
    }
    out.push_str("Server: callgate\r\nContent-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

fn looks_like_unknown_method(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    let first = text.split("\r\n").next().unwrap_or("");
    let mut parts = first.split(' ');
    let (Some(m), Some(_uri), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    v == "SIP/2.0"
        && !m.is_empty()
        && m.chars().all(|c| c.is_ascii_uppercase())
        && !["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK", "REGISTER",
             "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"]
            .contains(&m)
}

/// For TCP: given buffered bytes, the length of the first complete message (headers + body by
/// Content-Length), `Ok(None)` when more bytes are needed, `Err` when the framing is broken.
pub fn stream_frame_len(buf: &[u8], max_size: usize) -> Result<Option<usize>, MalformedSip> {
    // Skip CRLF keep-alives (RFC 5626 §3.5.1) at the front.
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > max_size {
            return Err(MalformedSip::TooLarge(buf.len()));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut content_length = None;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim().to_ascii_lowercase();
        if name == "content-length" || name == "l" {
            content_length =
                Some(value.trim().parse::<usize>().map_err(|_| MalformedSip::MissingHeader("Content-Length"))?);
        }
    }
    // Over a stream Content-Length is mandatory (RFC 3261 §18.3).
    let body = content_length.ok_or(MalformedSip::MissingHeader("Content-Length"))?;
    let total = end + 4 + body;
    if total > max_size {
        return Err(MalformedSip::TooLarge(total));
    }
    Ok(if buf.len() >= total { Some(total) } else { None })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Encodes a message for the wire, with a correct Content-Length.
pub fn to_bytes(msg: &SipMessage) -> Vec<u8> {
    msg.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:2001@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport\r\n\
From: \"Alice\" <sip:07700900123@127.0.0.1:5060>;tag=abc\r\n\
To: <sip:2001@127.0.0.1:5070>\r\n\
Call-ID: 1-xyz@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5060>\r\n\
Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n\
Max-Forwards: 70\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn parses_an_invite_and_reads_its_parts() {
        let SipMessage::Request(r) = parse(INVITE.as_bytes(), 16384).unwrap() else { panic!() };
        assert_eq!(request_user(&r), "2001");
        assert_eq!(from_user(&r), "07700900123");
        assert_eq!(from_tag(&r).as_deref(), Some("abc"));
        assert_eq!(to_tag(&r), None);
        assert_eq!(branch(&r), "z9hG4bK-1");
        assert_eq!(call_id(&r), "1-xyz@127.0.0.1");
        assert_eq!(cseq(&r), (1, Method::Invite));
        assert_eq!(record_routes(&r), vec!["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
        assert_eq!(sdp_body(&r).as_deref(), Some("v=0\n"));
        assert_eq!(contact_uri(&r).unwrap().to_string(), "sip:alice@127.0.0.1:5060");
    }

    #[test]
    fn response_copies_the_matching_headers_and_adds_a_tag() {
        let SipMessage::Request(r) = parse(INVITE.as_bytes(), 16384).unwrap() else { panic!() };
        let resp = response(&r, 183, Some("gw1"), vec![], Some("v=0\r\n"));
        let text = String::from_utf8(resp.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 183"), "{text}");
        assert!(text.contains("branch=z9hG4bK-1"));
        assert!(text.contains(";tag=gw1"));
        assert!(text.contains("Content-Length: 5"));
        // It parses back.
        let back = parse(&resp.to_bytes(), 16384).unwrap();
        assert!(matches!(back, SipMessage::Response(_)));
    }

    #[test]
    fn missing_headers_are_rejected_with_400() {
        for header in ["Via", "From", "To", "Call-ID", "CSeq"] {
            let broken: String = INVITE
                .split("\r\n")
                .filter(|l| !l.starts_with(&format!("{header}:")))
                .collect::<Vec<_>>()
                .join("\r\n");
            let e = parse(broken.as_bytes(), 16384).unwrap_err();
            assert_eq!(e.status().0, 400, "{header}: {e:?}");
        }
        let mismatched = INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
        assert_eq!(parse(mismatched.as_bytes(), 16384).unwrap_err().status().0, 400);
    }

    #[test]
    fn lenient_reply_answers_garbage_that_still_names_a_transaction() {
        let garbage = "INVITE sip:2001@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-9\r\nCSeq: banana\r\n\r\n";
        assert!(parse(garbage.as_bytes(), 16384).is_err());
        let reply = String::from_utf8(lenient_reply(garbage.as_bytes(), 400, "Bad Request").unwrap()).unwrap();
        assert!(reply.starts_with("SIP/2.0 400 Bad Request\r\n"));
        assert!(reply.contains("branch=z9hG4bK-9"));
        // Pure junk and responses get no reply.
        assert_eq!(lenient_reply(b"\x00\x01hello", 400, "Bad Request"), None);
        assert_eq!(lenient_reply(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", 400, "Bad Request"), None);
    }

    #[test]
    fn unknown_methods_get_501_and_oversize_513() {
        let m = INVITE.replace("INVITE sip", "FROBNICATE sip").replace("1 INVITE", "1 FROBNICATE");
        assert_eq!(parse(m.as_bytes(), 16384).unwrap_err().status().0, 501);
        assert_eq!(parse(INVITE.as_bytes(), 100).unwrap_err().status().0, 513);
    }

    #[test]
    fn stream_framing() {
        let two = format!("{INVITE}{INVITE}");
        let n = stream_frame_len(two.as_bytes(), 16384).unwrap().unwrap();
        assert_eq!(n, INVITE.len());
        assert_eq!(stream_frame_len(&INVITE.as_bytes()[..INVITE.len() - 2], 16384).unwrap(), None);
        let no_len = INVITE.replace("Content-Length: 4\r\n", "");
        assert!(stream_frame_len(no_len.as_bytes(), 16384).is_err());
    }

    #[test]
    fn no_input_panics_the_parser_path() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let base = INVITE.as_bytes();
        for i in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = base.to_vec();
            let pos = (seed as usize) % b.len();
            match i % 3 {
                0 => b[pos] = (seed >> 32) as u8,
                1 => b.truncate(pos),
                _ => b.insert(pos, b"\r\n:;<>\"@"[(seed >> 40) as usize % 8]),
            }
            if let Err(e) = parse(&b, 16384) {
                let _ = lenient_reply(&b, e.status().0, "x");
            }
            let _ = stream_frame_len(&b, 16384);
        }
    }
}
