//! SIP transactions (RFC 3261 §17), sans-IO.
//!
//! Feed received messages with [`Transactions::handle_incoming`] and requests/responses the TU
//! wants to send with `send_*`; drain [`Transactions::poll_transmit`] and
//! [`Transactions::poll_event`]; call [`Transactions::handle_timeout`] at
//! [`Transactions::poll_timeout`]. Retransmission timers run only for UDP.
//!
//! Beyond the RFC's transaction layer this also absorbs what a UAS core would otherwise do:
//! retransmitting our 2xx to an INVITE until the ACK arrives (§13.3.1.4) and re-sending our ACK
//! when the peer retransmits its 2xx (§13.2.2.4).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsipstack::sip::{Method, Request, Response, SipMessage};

use super::message;

pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
/// 64·T1: transaction timeout (timers B, F, H, J).
pub const TIMEOUT: Duration = Duration::from_secs(32);

/// How a message travels; TCP connections are named by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp(u64),
}

impl Transport {
    fn reliable(self) -> bool {
        matches!(self, Transport::Tcp(_))
    }
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub bytes: Vec<u8>,
}

/// Identifies a transaction: top Via branch and method (ACK and CANCEL map as the RFC says).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TxKey {
    pub branch: String,
    pub method: Method,
}

/// What the TU hears.
#[derive(Debug)]
pub enum TxEvent {
    /// A new request (not a retransmission): the TU must answer it via `respond`.
    Request { key: TxKey, req: Request, peer: Peer },
    /// CANCEL for a pending INVITE server transaction; the CANCEL itself was answered 200.
    Cancelled { invite: TxKey },
    /// The ACK for a 2xx we sent (matched by Call-ID and CSeq number).
    AckFor2xx { invite: TxKey, req: Request },
    /// A response to a request we sent (retransmitted finals are filtered).
    Response { key: TxKey, resp: Response },
    /// No final response in time, or the transport failed (timer B / F).
    Timeout { key: TxKey },
    /// Our 2xx to an INVITE was never ACKed (timer H equivalent): the dialog must be ended.
    AckTimeout { invite: TxKey },
}

#[derive(Debug)]
struct ServerTx {
    peer: Peer,
    method: Method,
    /// Last response sent; re-sent on request retransmission.
    last: Option<Vec<u8>>,
    final_status: Option<u16>,
    /// (Call-ID, CSeq number) to match an ACK for a 2xx, which has a new branch.
    dialog_cseq: (String, u32),
    retransmit_at: Option<Instant>,
    interval: Duration,
    expires_at: Option<Instant>,
    acked: bool,
}

#[derive(Debug)]
struct ClientTx {
    peer: Peer,
    request: Vec<u8>,
    method: Method,
    /// Set once any response arrived (stops timer A/E retransmission for INVITE).
    proceeding: bool,
    final_status: Option<u16>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    timeout_at: Option<Instant>,
    /// ACK we sent for a final response, re-sent when the final is retransmitted.
    ack: Option<Vec<u8>>,
    /// Needed to build the ACK for a non-2xx final (RFC 3261 §17.1.1.3).
    invite: Option<Request>,
}

/// The transaction table.
#[derive(Debug, Default)]
pub struct Transactions {
    servers: HashMap<TxKey, ServerTx>,
    clients: HashMap<TxKey, ClientTx>,
    /// (Call-ID, CSeq) of INVITEs we answered with 2xx → their server key.
    awaiting_ack: HashMap<(String, u32), TxKey>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
}

impl Transactions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live transactions (for limits and tests).
    pub fn len(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// A message that went through `message::parse`.
    pub fn handle_incoming(&mut self, now: Instant, msg: SipMessage, peer: Peer) {
        match msg {
            SipMessage::Request(req) => self.incoming_request(now, req, peer),
            SipMessage::Response(resp) => self.incoming_response(now, resp),
        }
    }

    fn incoming_request(&mut self, now: Instant, req: Request, peer: Peer) {
        let branch = message::branch(&req);
        let (cseq, _) = message::cseq(&req);
        match req.method {
            Method::Ack => {
                // ACK for a non-2xx final shares the INVITE's branch.
                let key = TxKey { branch: branch.clone(), method: Method::Invite };
                if let Some(tx) = self.servers.get_mut(&key) {
                    if tx.final_status.is_some_and(|s| s >= 300) {
                        tx.acked = true;
                        tx.retransmit_at = None;
                        // Timer I: absorb ACK retransmissions briefly.
                        tx.expires_at = Some(now + if peer.transport.reliable() { Duration::ZERO } else { T2 });
                        return;
                    }
                }
                let dialog = (message::call_id(&req), cseq);
                if let Some(invite) = self.awaiting_ack.remove(&dialog) {
                    if let Some(tx) = self.servers.get_mut(&invite) {
                        tx.acked = true;
                        tx.retransmit_at = None;
                        tx.expires_at = Some(now + TIMEOUT);
                    }
                    self.events.push_back(TxEvent::AckFor2xx { invite, req });
                }
                // Other ACKs (retransmitted, or for unknown dialogs) are dropped silently.
            }
            Method::Cancel => {
                let invite = TxKey { branch: branch.clone(), method: Method::Invite };
                let status = match self.servers.get(&invite) {
                    Some(tx) if tx.final_status.is_none() => {
                        self.events.push_back(TxEvent::Cancelled { invite });
                        200
                    }
                    // Already answered: the CANCEL has no effect but is acknowledged.
                    Some(_) => 200,
                    None => 481,
                };
                let key = TxKey { branch, method: Method::Cancel };
                if let Some(tx) = self.servers.get(&key) {
                    if let Some(last) = &tx.last {
                        self.transmits.push_back(Transmit { peer: tx.peer, bytes: last.clone() });
                    }
                    return;
                }
                let resp = message::response(&req, status, None, vec![], None);
                self.servers.insert(key.clone(), new_server(peer, &req, cseq));
                self.send_response(now, &key, resp);
            }
            method => {
                let key = TxKey { branch, method: method.clone() };
                if let Some(tx) = self.servers.get(&key) {
                    // Retransmission: repeat the last response, if any.
                    if let Some(last) = &tx.last {
                        self.transmits.push_back(Transmit { peer: tx.peer, bytes: last.clone() });
                    }
                    return;
                }
                self.servers.insert(key.clone(), new_server(peer, &req, cseq));
                self.events.push_back(TxEvent::Request { key, req, peer });
            }
        }
    }

    fn incoming_response(&mut self, now: Instant, resp: Response) {
        let (_, method) = message::cseq(&resp);
        let key = TxKey { branch: message::branch(&resp), method };
        let Some(tx) = self.clients.get_mut(&key) else {
            return; // stray or late response
        };
        let status: u16 = resp.status_code.code();
        tx.proceeding = true;
        if status < 200 {
            if tx.final_status.is_none() {
                if tx.method == Method::Invite {
                    tx.retransmit_at = None; // timer A stops on a provisional
                } else if tx.retransmit_at.is_some() {
                    tx.interval = T2;
                }
                self.events.push_back(TxEvent::Response { key, resp });
            }
            return;
        }
        if let Some(prev) = tx.final_status {
            // Retransmitted final: re-send our ACK (2xx: the TU's ACK; non-2xx: ours).
            let _ = prev;
            if let Some(ack) = &tx.ack {
                self.transmits.push_back(Transmit { peer: tx.peer, bytes: ack.clone() });
            }
            return;
        }
        tx.final_status = Some(status);
        tx.retransmit_at = None;
        tx.timeout_at = None;
        if tx.method == Method::Invite {
            if status >= 300 {
                // §17.1.1.3: the transaction ACKs non-2xx finals itself.
                if let Some(invite) = &tx.invite {
                    let ack = ack_for_non_2xx(invite, &resp);
                    tx.ack = Some(ack.clone());
                    self.transmits.push_back(Transmit { peer: tx.peer, bytes: ack });
                }
            }
            // Keep the transaction to absorb final retransmissions (timer D / M).
            tx.timeout_at = Some(now + TIMEOUT);
        } else {
            tx.timeout_at = Some(now + if tx.peer.transport.reliable() { Duration::ZERO } else { T2 * 2 });
        }
        self.events.push_back(TxEvent::Response { key, resp });
    }

    /// Sends a response on a server transaction.
    pub fn send_response(&mut self, now: Instant, key: &TxKey, resp: Response) {
        let Some(tx) = self.servers.get_mut(key) else { return };
        if tx.final_status.is_some() {
            return; // one final response per transaction
        }
        let status = resp.status_code.code();
        let bytes = resp.to_bytes();
        self.transmits.push_back(Transmit { peer: tx.peer, bytes: bytes.clone() });
        tx.last = Some(bytes);
        if status < 200 {
            return;
        }
        tx.final_status = Some(status);
        let reliable = tx.peer.transport.reliable();
        if tx.method == Method::Invite {
            if status < 300 {
                // §13.3.1.4: retransmit 2xx until ACK, even over TCP for the timeout.
                self.awaiting_ack.insert(tx.dialog_cseq.clone(), key.clone());
            }
            tx.interval = T1;
            tx.retransmit_at = (!reliable).then_some(now + T1);
            tx.expires_at = Some(now + TIMEOUT);
        } else {
            // Timer J: absorb request retransmissions.
            tx.expires_at = Some(now + if reliable { Duration::ZERO } else { TIMEOUT });
        }
    }

    /// Sends a request as a new client transaction; returns its key.
    pub fn send_request(&mut self, now: Instant, req: Request, peer: Peer) -> TxKey {
        let key = TxKey { branch: message::branch(&req), method: req.method.clone() };
        let bytes = req.to_bytes();
        self.transmits.push_back(Transmit { peer, bytes: bytes.clone() });
        let reliable = peer.transport.reliable();
        let invite = (req.method == Method::Invite).then(|| req.clone());
        self.clients.insert(
            key.clone(),
            ClientTx {
                peer,
                request: bytes,
                method: req.method.clone(),
                proceeding: false,
                final_status: None,
                retransmit_at: (!reliable).then_some(now + T1),
                interval: T1,
                timeout_at: Some(now + TIMEOUT),
                ack: None,
                invite,
            },
        );
        key
    }

    /// Sends an ACK for a 2xx (a request without a transaction) and remembers it so a
    /// retransmitted 2xx is ACKed again.
    pub fn send_ack_2xx(&mut self, invite: &TxKey, ack: Request, peer: Peer) {
        let bytes = ack.to_bytes();
        self.transmits.push_back(Transmit { peer, bytes: bytes.clone() });
        if let Some(tx) = self.clients.get_mut(invite) {
            tx.ack = Some(bytes);
        }
    }

    /// Sends a stateless message (e.g. a 400 to something that never became a transaction).
    pub fn send_raw(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { peer, bytes });
    }

    /// The transport to `peer` failed: fail its pending client transactions now.
    pub fn transport_failed(&mut self, peer: Peer) {
        let failed: Vec<TxKey> = self
            .clients
            .iter()
            .filter(|(_, tx)| tx.peer == peer && tx.final_status.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for key in failed {
            self.clients.remove(&key);
            self.events.push_back(TxEvent::Timeout { key });
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let s = self.servers.values().flat_map(|t| [t.retransmit_at, t.expires_at]);
        let c = self.clients.values().flat_map(|t| [t.retransmit_at, t.timeout_at]);
        s.chain(c).flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired_servers = Vec::new();
        for (key, tx) in self.servers.iter_mut() {
            if tx.retransmit_at.is_some_and(|t| t <= now) {
                if let Some(last) = &tx.last {
                    self.transmits.push_back(Transmit { peer: tx.peer, bytes: last.clone() });
                }
                tx.interval = (tx.interval * 2).min(T2);
                tx.retransmit_at = Some(now + tx.interval);
            }
            if tx.expires_at.is_some_and(|t| t <= now) {
                expired_servers.push(key.clone());
            }
        }
        for key in expired_servers {
            if let Some(tx) = self.servers.remove(&key) {
                let ok_unacked = tx.method == Method::Invite
                    && tx.final_status.is_some_and(|s| s < 300)
                    && !tx.acked;
                self.awaiting_ack.remove(&tx.dialog_cseq);
                if ok_unacked {
                    self.events.push_back(TxEvent::AckTimeout { invite: key });
                }
            }
        }
        let mut expired_clients = Vec::new();
        for (key, tx) in self.clients.iter_mut() {
            if tx.retransmit_at.is_some_and(|t| t <= now) {
                self.transmits.push_back(Transmit { peer: tx.peer, bytes: tx.request.clone() });
                tx.interval = if tx.method == Method::Invite { tx.interval * 2 } else { (tx.interval * 2).min(T2) };
                tx.retransmit_at = Some(now + tx.interval);
            }
            if tx.timeout_at.is_some_and(|t| t <= now) {
                expired_clients.push((key.clone(), tx.final_status.is_none()));
            }
        }
        for (key, timed_out) in expired_clients {
            self.clients.remove(&key);
            if timed_out {
                self.events.push_back(TxEvent::Timeout { key });
            }
        }
    }
}

fn new_server(peer: Peer, req: &Request, cseq: u32) -> ServerTx {
    ServerTx {
        peer,
        method: req.method.clone(),
        last: None,
        final_status: None,
        dialog_cseq: (message::call_id(req), cseq),
        retransmit_at: None,
        interval: T1,
        expires_at: None,
        acked: false,
    }
}

/// ACK for a non-2xx final: same Request-URI, Call-ID, From, CSeq number and top Via as the
/// INVITE, To from the response (RFC 3261 §17.1.1.3).
fn ack_for_non_2xx(invite: &Request, resp: &Response) -> Vec<u8> {
    use rsipstack::sip::{Header, HasHeaders};
    let mut headers = rsipstack::sip::Headers::default();
    let (seq, _) = message::cseq(invite);
    for h in invite.headers().iter() {
        match h {
            Header::Via(_) => {
                // Only the top Via.
                if !headers.iter().any(|x| matches!(x, Header::Via(_))) {
                    headers.push(h.clone());
                }
            }
            Header::From(_) | Header::CallId(_) | Header::MaxForwards(_) | Header::Route(_) => {
                headers.push(h.clone())
            }
            _ => {}
        }
    }
    for h in resp.headers().iter() {
        if let Header::To(_) = h {
            headers.push(h.clone());
        }
    }
    headers.push(Header::CSeq(rsipstack::sip::CSeq::from(format!("{seq} ACK"))));
    headers.push(Header::ContentLength(rsipstack::sip::ContentLength::from("0")));
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: rsipstack::sip::Version::V2,
        headers,
        body: vec![],
    }
    .to_bytes()
}

#[cfg(test)]
mod tests;
