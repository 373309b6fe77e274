//! Dialog state of each leg and the requests built from it (RFC 3261 §12).
//!
//! Plain data and pure builders: no IO, no clock.

use std::net::{IpAddr, SocketAddr};

use rsipstack::sip::{self as rsip, Header, HeadersExt, Method, Request};

use super::message;
use super::transaction::{Peer, Transport};
use crate::ids::random_hex;

/// Our own SIP identity toward peers.
#[derive(Clone, Debug)]
pub struct Local {
    pub advertise: IpAddr,
    pub port: u16,
}

impl Local {
    pub fn via(&self, transport: Transport) -> (Header, String) {
        let branch = format!("z9hG4bK{}", random_hex(10));
        let t = match transport {
            Transport::Udp => "UDP",
            Transport::Tcp(_) => "TCP",
        };
        let v = format!("SIP/2.0/{t} {}:{};branch={branch};rport", self.host(), self.port);
        (Header::Via(rsip::Via::new(v)), branch)
    }

    pub fn contact(&self, transport: Transport) -> Header {
        let t = if matches!(transport, Transport::Tcp(_)) { ";transport=tcp" } else { "" };
        Header::Contact(rsip::Contact::new(format!("<sip:callgate@{}:{}{t}>", self.host(), self.port)))
    }

    fn host(&self) -> String {
        match self.advertise {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }
    }
}

/// One side of a dialog as seen by us: everything needed to send requests in it.
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: String,
    /// Our From (UAC) / To (UAS) header value, with our tag.
    pub local: String,
    /// Their header value, with their tag once known.
    pub remote: String,
    /// Request-URI for in-dialog requests (their Contact).
    pub remote_target: String,
    /// Route headers to put on in-dialog requests, in order.
    pub route_set: Vec<String>,
    /// Our next CSeq number.
    pub local_cseq: u32,
    /// Where requests go.
    pub peer: Peer,
}

impl Dialog {
    /// The dialog we hold with the caller, created by answering its INVITE with `our_tag`.
    pub fn uas(invite: &Request, our_tag: &str, peer: Peer) -> Dialog {
        let to = invite.to_header().map(|t| t.value().to_string()).unwrap_or_default();
        let from = invite.from_header().map(|f| f.value().to_string()).unwrap_or_default();
        Dialog {
            call_id: message::call_id(invite),
            local: format!("{to};tag={our_tag}"),
            remote: from,
            remote_target: message::contact_uri(invite)
                .map(|u| u.to_string())
                .unwrap_or_else(|| invite.uri.to_string()),
            route_set: message::record_routes(invite),
            local_cseq: 1,
            peer,
        }
    }

    /// Builds an in-dialog request (BYE, re-INVITE, INFO) and advances our CSeq.
    pub fn request(&mut self, local: &Local, method: Method, extra: Vec<Header>, sdp: Option<&str>) -> (Request, String) {
        let seq = self.local_cseq;
        self.local_cseq += 1;
        self.build(local, method, seq, extra, sdp)
    }

    /// The ACK for a 2xx to our INVITE with CSeq `seq` (a new transaction-less request).
    pub fn ack(&self, local: &Local, seq: u32) -> Request {
        self.build(local, Method::Ack, seq, vec![], None).0
    }

    fn build(&self, local: &Local, method: Method, seq: u32, extra: Vec<Header>, sdp: Option<&str>) -> (Request, String) {
        let (via, branch) = local.via(self.peer.transport);
        let mut headers = rsip::Headers::default();
        headers.push(via);
        headers.push(Header::MaxForwards(rsip::MaxForwards::new("70")));
        for r in &self.route_set {
            headers.push(Header::Route(rsip::Route::new(r.clone())));
        }
        headers.push(Header::From(rsip::From::new(self.local.clone())));
        headers.push(Header::To(rsip::To::new(self.remote.clone())));
        headers.push(Header::CallId(rsip::CallId::new(self.call_id.clone())));
        headers.push(Header::CSeq(rsip::CSeq::new(format!("{seq} {method}"))));
        if matches!(method, Method::Invite) {
            headers.push(local.contact(self.peer.transport));
        }
        headers.push(Header::UserAgent(rsip::UserAgent::new("callgate")));
        let body = message::finish_headers(&mut headers, extra, sdp);
        let uri = rsip::Uri::try_from(self.remote_target.as_str())
            .unwrap_or_else(|_| rsip::Uri::try_from("sip:invalid").unwrap_or_default());
        (Request { method, uri, version: rsip::Version::V2, headers, body }, branch)
    }
}

/// The agent leg before and after it answers.
#[derive(Clone, Debug)]
pub struct UacInvite {
    pub dialog: Dialog,
    /// The INVITE as sent (CANCEL copies its Request-URI, Via, From, To, Call-ID and CSeq).
    pub invite: Request,
    pub invite_seq: u32,
}

impl UacInvite {
    /// A new INVITE to `target` presenting the caller's number as the From user; `extra`
    /// headers are added (e.g. the gateway's call id for the agent's desktop).
    pub fn new(local: &Local, target: &str, from_user: &str, peer: Peer, sdp: &str, extra: Vec<Header>) -> UacInvite {
        let our_tag = random_hex(6);
        let user = sanitize_user(from_user);
        let host = local.host();
        let mut dialog = Dialog {
            call_id: format!("{}@callgate", random_hex(12)),
            local: format!("<sip:{user}@{host}>;tag={our_tag}"),
            remote: format!("<{target}>"),
            remote_target: target.to_string(),
            route_set: vec![],
            local_cseq: 1,
            peer,
        };
        let (invite, _) = dialog.request(local, Method::Invite, extra, Some(sdp));
        UacInvite { dialog, invite, invite_seq: 1 }
    }

    /// CANCEL for the pending INVITE (RFC 3261 §9.1).
    pub fn cancel(&self) -> Request {
        let mut headers = rsip::Headers::default();
        for h in self.invite.headers.iter() {
            match h {
                Header::Via(_) if !headers.iter().any(|x| matches!(x, Header::Via(_))) => headers.push(h.clone()),
                Header::From(_) | Header::To(_) | Header::CallId(_) | Header::MaxForwards(_) | Header::Route(_) => {
                    headers.push(h.clone())
                }
                _ => {}
            }
        }
        headers.push(Header::CSeq(rsip::CSeq::new(format!("{} CANCEL", self.invite_seq))));
        headers.push(Header::ContentLength(rsip::ContentLength::new("0")));
        Request { method: Method::Cancel, uri: self.invite.uri.clone(), version: rsip::Version::V2, headers, body: vec![] }
    }

    /// Completes the dialog from the agent's 2xx: their tag, Contact and Record-Route.
    pub fn confirm(&mut self, resp: &rsip::Response) {
        if let Ok(to) = resp.to_header() {
            self.dialog.remote = to.value().to_string();
        }
        if let Some(c) = message::contact_uri(resp) {
            self.dialog.remote_target = c.to_string();
        }
        let mut rr = message::record_routes(resp);
        rr.reverse();
        self.dialog.route_set = rr;
    }
}

/// Keeps only characters valid in a SIP user part; anything else would break the From header.
fn sanitize_user(user: &str) -> String {
    let u: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+-_.!~*'()&=$,;?/".contains(*c))
        .take(64)
        .collect();
    if u.is_empty() { "anonymous".into() } else { u }
}

/// The socket address of a `sip:` URI when its host is an IP literal (default port 5060).
pub fn uri_socket_addr(uri: &str) -> Option<SocketAddr> {
    let u = rsip::Uri::try_from(uri).ok()?;
    let ip: IpAddr = match &u.host_with_port.host {
        rsip::Host::IpAddr(ip) => *ip,
        rsip::Host::Domain(d) => d.to_string().parse().ok()?,
    };
    let port = u.host_with_port.port.map(|p| u16::from(p)).unwrap_or(5060);
    Some(SocketAddr::new(ip, port))
}

/// Host and port of a `sip:` URI, for DNS resolution at start-up.
pub fn uri_host_port(uri: &str) -> Option<(String, u16)> {
    let u = rsip::Uri::try_from(uri).ok()?;
    let host = match &u.host_with_port.host {
        rsip::Host::IpAddr(ip) => ip.to_string(),
        rsip::Host::Domain(d) => d.to_string(),
    };
    let port = u.host_with_port.port.map(|p| u16::from(p)).unwrap_or(5060);
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;
    use rsipstack::sip::SipMessage;

    fn local() -> Local {
        Local { advertise: "127.0.0.1".parse().unwrap(), port: 5070 }
    }
    fn peer() -> Peer {
        Peer { addr: "127.0.0.1:5081".parse().unwrap(), transport: Transport::Udp }
    }

    #[test]
    fn invite_cancel_ack_and_bye_are_well_formed() {
        let mut uac = UacInvite::new(&local(), "sip:agent@127.0.0.1:5081", "07700900123", peer(), "v=0\r\n", vec![]);
        let inv = uac.invite.to_bytes();
        let SipMessage::Request(parsed) = parse(&inv, 16384).unwrap() else { panic!() };
        assert_eq!(parsed.method, Method::Invite);
        assert_eq!(message::from_user(&parsed), "07700900123");
        assert!(message::sdp_body(&parsed).is_some());

        let cancel = uac.cancel();
        let SipMessage::Request(c) = parse(&cancel.to_bytes(), 16384).unwrap() else { panic!() };
        assert_eq!(message::branch(&c), message::branch(&parsed), "CANCEL reuses the INVITE's branch");
        assert_eq!(message::cseq(&c), (1, Method::Cancel));

        // The agent answers with a tag and Contact.
        let resp = message::response(
            &parsed,
            200,
            Some("agenttag"),
            vec![Header::Contact(rsip::Contact::new("<sip:agent@127.0.0.1:5099>"))],
            Some("v=0\r\n"),
        );
        uac.confirm(&resp);
        let ack = uac.dialog.ack(&local(), uac.invite_seq);
        let SipMessage::Request(a) = parse(&ack.to_bytes(), 16384).unwrap() else { panic!() };
        assert_eq!(message::cseq(&a), (1, Method::Ack));
        assert_eq!(message::to_tag(&a).as_deref(), Some("agenttag"));
        assert_eq!(a.uri.to_string(), "sip:agent@127.0.0.1:5099");
        assert_ne!(message::branch(&a), message::branch(&parsed), "ACK for 2xx is a new transaction");

        let (bye, _) = uac.dialog.request(&local(), Method::Bye, vec![], None);
        let SipMessage::Request(b) = parse(&bye.to_bytes(), 16384).unwrap() else { panic!() };
        assert_eq!(message::cseq(&b), (2, Method::Bye));
    }

    #[test]
    fn uas_dialog_swaps_from_and_to() {
        let text = "INVITE sip:2001@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n\
From: <sip:caller@127.0.0.1:5060>;tag=abc\r\n\
To: <sip:2001@127.0.0.1:5070>\r\n\
Call-ID: cid\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:5060>\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Request(inv) = parse(text.as_bytes(), 16384).unwrap() else { panic!() };
        let mut d = Dialog::uas(&inv, "ours", peer());
        let (bye, _) = d.request(&local(), Method::Bye, vec![], None);
        let SipMessage::Request(b) = parse(&bye.to_bytes(), 16384).unwrap() else { panic!() };
        assert_eq!(message::from_tag(&b).as_deref(), Some("ours"));
        assert_eq!(message::to_tag(&b).as_deref(), Some("abc"));
        assert_eq!(b.uri.to_string(), "sip:caller@127.0.0.1:5060");
    }

    #[test]
    fn uri_addresses() {
        assert_eq!(uri_socket_addr("sip:a@127.0.0.1:5081"), Some("127.0.0.1:5081".parse().unwrap()));
        assert_eq!(uri_socket_addr("sip:a@127.0.0.1"), Some("127.0.0.1:5060".parse().unwrap()));
        assert_eq!(uri_socket_addr("sip:queue@pbx.example:5060"), None);
        assert_eq!(uri_host_port("sip:queue@pbx.example:5060"), Some(("pbx.example".into(), 5060)));
        assert_eq!(sanitize_user("07700 900123\r\nX: y"), "07700900123Xy");
    }
}
