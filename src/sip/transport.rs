//! SIP over UDP and TCP: the socket shell. Received messages go to the signalling task through
//! one bounded channel; the signalling task sends through [`SipSockets::send`].
//!
//! UDP datagrams beyond the channel's capacity are dropped (the peer retransmits, as UDP SIP
//! expects). TCP connections are framed by Content-Length; a connection whose framing breaks
//! gets a 400 when the broken message still names a transaction, then is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

use super::message;
use super::transaction::{Peer, Transmit, Transport};
use crate::pii::PeerAddr;

/// What the transport hands the signalling task.
#[derive(Debug)]
pub enum NetEvent {
    Message { bytes: Vec<u8>, peer: Peer },
    /// A TCP connection closed: its pending transactions fail now.
    Closed { peer: Peer },
}

/// Most TCP connections kept at once; more are refused.
const MAX_TCP_CONNECTIONS: usize = 1024;

type Writers = Arc<Mutex<HashMap<u64, mpsc::Sender<Vec<u8>>>>>;

/// The bound sockets; cheap to clone.
#[derive(Clone)]
pub struct SipSockets {
    udp: Arc<UdpSocket>,
    writers: Writers,
}

impl SipSockets {
    /// Binds UDP and TCP on `listen` (port 0 picks a port free for both).
    pub async fn bind(listen: SocketAddr) -> std::io::Result<(SipSockets, TcpListener, SocketAddr)> {
        let mut last_err = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind(listen).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => {
                    let s = SipSockets { udp: Arc::new(udp), writers: Default::default() };
                    return Ok((s, tcp, addr));
                }
                // With port 0 the TCP side of the UDP port may be taken: try another.
                Err(e) if listen.port() == 0 => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("no port free for UDP and TCP")))
    }

    /// Sends without waiting: a full TCP writer queue drops the message like a lost datagram.
    pub fn send(&self, t: &Transmit) {
        match t.peer.transport {
            Transport::Udp => {
                if let Err(e) = self.udp.try_send_to(&t.bytes, t.peer.addr) {
                    tracing::debug!(peer = %PeerAddr(t.peer.addr), error = %e, "UDP send failed");
                }
            }
            Transport::Tcp(id) => {
                let tx = self.writers.lock().ok().and_then(|w| w.get(&id).cloned());
                match tx {
                    Some(tx) => {
                        let _ = tx.try_send(t.bytes.clone());
                    }
                    None => tracing::debug!(conn = id, "TCP connection gone; message dropped"),
                }
            }
        }
    }

    /// Starts the UDP reader and the TCP acceptor; both stop when `stop` fires.
    pub fn spawn(
        &self,
        tcp: TcpListener,
        events: mpsc::Sender<NetEvent>,
        max_size: usize,
        stop: watch::Receiver<bool>,
    ) {
        tokio::spawn(udp_reader(self.udp.clone(), events.clone(), stop.clone()));
        tokio::spawn(tcp_acceptor(tcp, self.writers.clone(), events, max_size, stop));
    }
}

async fn udp_reader(udp: Arc<UdpSocket>, events: mpsc::Sender<NetEvent>, mut stop: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            r = udp.recv_from(&mut buf) => match r {
                Ok((n, src)) => {
                    let bytes = &buf[..n];
                    // Keep-alives (RFC 5626 CRLF) and empty datagrams are not messages.
                    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    let ev = NetEvent::Message { bytes: bytes.to_vec(), peer: Peer { addr: src, transport: Transport::Udp } };
                    if events.try_send(ev).is_err() {
                        tracing::warn!("signalling queue full: UDP message dropped");
                    }
                }
                // ICMP port unreachable surfaces here on Linux; not fatal for the socket.
                Err(e) => tracing::debug!(error = %e, "UDP receive error"),
            },
            _ = stop.changed() => return,
        }
    }
}

async fn tcp_acceptor(
    listener: TcpListener,
    writers: Writers,
    events: mpsc::Sender<NetEvent>,
    max_size: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_id = 1u64;
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, addr)) = r else { continue };
                let count = writers.lock().map(|w| w.len()).unwrap_or(usize::MAX);
                if count >= MAX_TCP_CONNECTIONS {
                    tracing::warn!("too many SIP TCP connections; refusing one");
                    continue;
                }
                let id = next_id;
                next_id += 1;
                let (tx, rx) = mpsc::channel(64);
                if let Ok(mut w) = writers.lock() {
                    w.insert(id, tx.clone());
                }
                tokio::spawn(tcp_connection(stream, addr, id, tx, rx, writers.clone(), events.clone(), max_size, stop.clone()));
            }
            _ = stop.changed() => return,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn tcp_connection(
    stream: TcpStream,
    addr: SocketAddr,
    id: u64,
    self_tx: mpsc::Sender<Vec<u8>>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    writers: Writers,
    events: mpsc::Sender<NetEvent>,
    max_size: usize,
    mut stop: watch::Receiver<bool>,
) {
    let peer = Peer { addr, transport: Transport::Tcp(id) };
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    'read: loop {
        tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break 'read,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            _ = stop.changed() => break 'read,
        }
        loop {
            // Drop leading CRLF keep-alives.
            let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
            buf.drain(..skip);
            match message::stream_frame_len(&buf, max_size) {
                Ok(Some(len)) => {
                    let bytes: Vec<u8> = buf.drain(..len).collect();
                    if events.send(NetEvent::Message { bytes, peer }).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let (status, reason) = e.status();
                    if let Some(reply) = message::lenient_reply(&buf, status, reason) {
                        let _ = self_tx.send(reply).await;
                    }
                    break 'read;
                }
            }
        }
    }
    if let Ok(mut w) = writers.lock() {
        w.remove(&id);
    }
    drop(self_tx);
    // Let queued replies (a 400) go out before the socket closes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer).await;
    let _ = events.send(NetEvent::Closed { peer }).await;
}
