use super::*;
use crate::sip::message::{parse, response};

fn peer() -> Peer {
    Peer { addr: "127.0.0.1:5060".parse().unwrap(), transport: Transport::Udp }
}

fn request(method: &str, branch: &str, cseq: u32) -> Request {
    let text = format!(
        "{method} sip:2001@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n\
From: <sip:a@127.0.0.1>;tag=f1\r\n\
To: <sip:2001@127.0.0.1>\r\n\
Call-ID: cid-1\r\n\
CSeq: {cseq} {method}\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n"
    );
    match parse(text.as_bytes(), 16384).unwrap() {
        SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

fn drain(t: &mut Transactions) -> (Vec<Transmit>, Vec<TxEvent>) {
    (std::iter::from_fn(|| t.poll_transmit()).collect(), std::iter::from_fn(|| t.poll_event()).collect())
}

fn status_of(bytes: &[u8]) -> u16 {
    match parse(bytes, 16384).unwrap() {
        SipMessage::Response(r) => r.status_code.code(),
        SipMessage::Request(r) => panic!("expected response, got {}", r.method),
    }
}

#[test]
fn invite_retransmission_replays_last_response_and_is_not_a_new_event() {
    let now = Instant::now();
    let mut t = Transactions::new();
    let inv = request("INVITE", "z9hG4bK-a", 1);
    t.handle_incoming(now, SipMessage::Request(inv.clone()), peer());
    let (tx, ev) = drain(&mut t);
    assert!(tx.is_empty());
    let key = match &ev[..] {
        [TxEvent::Request { key, .. }] => key.clone(),
        other => panic!("{other:?}"),
    };
    t.send_response(now, &key, response(&inv, 183, Some("t"), vec![], None));
    drain(&mut t);
    t.handle_incoming(now, SipMessage::Request(inv), peer());
    let (tx, ev) = drain(&mut t);
    assert!(ev.is_empty());
    assert_eq!(tx.len(), 1);
    assert_eq!(status_of(&tx[0].bytes), 183);
}

#[test]
fn ok_to_invite_is_retransmitted_until_ack_then_ack_reaches_the_tu() {
    let t0 = Instant::now();
    let mut t = Transactions::new();
    let inv = request("INVITE", "z9hG4bK-b", 7);
    t.handle_incoming(t0, SipMessage::Request(inv.clone()), peer());
    let key = TxKey { branch: "z9hG4bK-b".into(), method: Method::Invite };
    drain(&mut t);
    t.send_response(t0, &key, response(&inv, 200, Some("t"), vec![], None));
    assert_eq!(drain(&mut t).0.len(), 1);
    // T1, then 2·T1 later: two retransmissions.
    assert_eq!(t.poll_timeout(), Some(t0 + T1));
    t.handle_timeout(t0 + T1);
    assert_eq!(drain(&mut t).0.len(), 1);
    t.handle_timeout(t0 + T1 * 2);
    assert_eq!(drain(&mut t).0.len(), 0, "not yet: interval doubled");
    t.handle_timeout(t0 + T1 * 3);
    assert_eq!(drain(&mut t).0.len(), 1);
    // The ACK (new branch, same Call-ID and CSeq number) stops them and reaches the TU.
    let ack = request("ACK", "z9hG4bK-ack", 7);
    t.handle_incoming(t0 + T1 * 4, SipMessage::Request(ack.clone()), peer());
    let (_, ev) = drain(&mut t);
    assert!(matches!(&ev[..], [TxEvent::AckFor2xx { invite, .. }] if *invite == key));
    t.handle_timeout(t0 + T1 * 10);
    assert!(drain(&mut t).0.is_empty());
    // A retransmitted ACK is absorbed.
    t.handle_incoming(t0 + T1 * 11, SipMessage::Request(ack), peer());
    assert!(drain(&mut t).1.is_empty());
}

#[test]
fn unacknowledged_ok_times_out() {
    let t0 = Instant::now();
    let mut t = Transactions::new();
    let inv = request("INVITE", "z9hG4bK-c", 1);
    t.handle_incoming(t0, SipMessage::Request(inv.clone()), peer());
    let key = TxKey { branch: "z9hG4bK-c".into(), method: Method::Invite };
    t.send_response(t0, &key, response(&inv, 200, Some("t"), vec![], None));
    drain(&mut t);
    while let Some(now) = t.poll_timeout() {
        t.handle_timeout(now);
        if now > t0 + TIMEOUT * 2 {
            break;
        }
    }
    let (tx, ev) = drain(&mut t);
    assert!(tx.len() >= 6, "retransmissions: {}", tx.len());
    assert!(ev.iter().any(|e| matches!(e, TxEvent::AckTimeout { invite } if *invite == key)));
    assert!(t.is_empty());
}

#[test]
fn cancel_of_pending_invite_gets_200_and_tells_the_tu() {
    let now = Instant::now();
    let mut t = Transactions::new();
    t.handle_incoming(now, SipMessage::Request(request("INVITE", "z9hG4bK-d", 1)), peer());
    drain(&mut t);
    t.handle_incoming(now, SipMessage::Request(request("CANCEL", "z9hG4bK-d", 1)), peer());
    let (tx, ev) = drain(&mut t);
    assert_eq!(status_of(&tx[0].bytes), 200);
    assert!(matches!(&ev[..], [TxEvent::Cancelled { .. }]));
    // Unknown transaction: 481.
    t.handle_incoming(now, SipMessage::Request(request("CANCEL", "z9hG4bK-zz", 1)), peer());
    let (tx, ev) = drain(&mut t);
    assert_eq!(status_of(&tx[0].bytes), 481);
    assert!(ev.is_empty());
}

#[test]
fn client_invite_retransmits_until_provisional_and_times_out_without_answer() {
    let t0 = Instant::now();
    let mut t = Transactions::new();
    let key = t.send_request(t0, request("INVITE", "z9hG4bK-e", 1), peer());
    assert_eq!(drain(&mut t).0.len(), 1);
    t.handle_timeout(t0 + T1);
    t.handle_timeout(t0 + T1 * 3);
    assert_eq!(drain(&mut t).0.len(), 2, "timer A doubles");
    let mut now = t0;
    while let Some(next) = t.poll_timeout() {
        now = next;
        t.handle_timeout(now);
    }
    assert_eq!(now, t0 + TIMEOUT);
    let (_, ev) = drain(&mut t);
    assert!(matches!(&ev[..], [TxEvent::Timeout { key: k }] if *k == key));
}

#[test]
fn client_invite_acks_a_non_2xx_final_and_absorbs_its_retransmission() {
    let t0 = Instant::now();
    let mut t = Transactions::new();
    let inv = request("INVITE", "z9hG4bK-f", 3);
    t.send_request(t0, inv.clone(), peer());
    drain(&mut t);
    let ringing = response(&inv, 180, Some("agent"), vec![], None);
    t.handle_incoming(t0, SipMessage::Response(ringing), peer());
    let (_, ev) = drain(&mut t);
    assert!(matches!(&ev[..], [TxEvent::Response { resp, .. }] if resp.status_code.code() == 180));
    t.handle_timeout(t0 + T1 * 8);
    assert!(drain(&mut t).0.is_empty(), "no retransmission after a provisional");
    let busy = response(&inv, 486, Some("agent"), vec![], None);
    t.handle_incoming(t0, SipMessage::Response(busy.clone()), peer());
    let (tx, ev) = drain(&mut t);
    assert_eq!(ev.len(), 1);
    let ack = String::from_utf8(tx[0].bytes.clone()).unwrap();
    assert!(ack.starts_with("ACK sip:2001@127.0.0.1:5070 SIP/2.0"), "{ack}");
    assert!(ack.contains("branch=z9hG4bK-f") && ack.contains("CSeq: 3 ACK") && ack.contains("tag=agent"));
    // Retransmitted 486: ACK again, no new event.
    t.handle_incoming(t0, SipMessage::Response(busy), peer());
    let (tx, ev) = drain(&mut t);
    assert_eq!((tx.len(), ev.len()), (1, 0));
}

#[test]
fn retransmitted_2xx_is_acked_again_by_the_transaction_layer() {
    let t0 = Instant::now();
    let mut t = Transactions::new();
    let inv = request("INVITE", "z9hG4bK-g", 1);
    let key = t.send_request(t0, inv.clone(), peer());
    drain(&mut t);
    let ok = response(&inv, 200, Some("agent"), vec![], None);
    t.handle_incoming(t0, SipMessage::Response(ok.clone()), peer());
    assert_eq!(drain(&mut t).1.len(), 1);
    t.send_ack_2xx(&key, request("ACK", "z9hG4bK-g2", 1), peer());
    assert_eq!(drain(&mut t).0.len(), 1);
    t.handle_incoming(t0, SipMessage::Response(ok), peer());
    let (tx, ev) = drain(&mut t);
    assert_eq!((tx.len(), ev.len()), (1, 0));
    assert!(String::from_utf8_lossy(&tx[0].bytes).starts_with("ACK "));
}

#[test]
fn tcp_has_no_retransmissions() {
    let t0 = Instant::now();
    let mut t = Transactions::new();
    let p = Peer { addr: "127.0.0.1:5060".parse().unwrap(), transport: Transport::Tcp(1) };
    t.send_request(t0, request("BYE", "z9hG4bK-h", 2), p);
    drain(&mut t);
    t.handle_timeout(t0 + T1 * 4);
    assert!(drain(&mut t).0.is_empty());
    // The transport failing ends the transaction at once.
    t.transport_failed(p);
    assert!(matches!(&drain(&mut t).1[..], [TxEvent::Timeout { .. }]));
}

#[test]
fn non_invite_server_absorbs_retransmissions_then_expires() {
    let t0 = Instant::now();
    let mut t = Transactions::new();
    let bye = request("BYE", "z9hG4bK-i", 2);
    t.handle_incoming(t0, SipMessage::Request(bye.clone()), peer());
    let key = TxKey { branch: "z9hG4bK-i".into(), method: Method::Bye };
    drain(&mut t);
    t.send_response(t0, &key, response(&bye, 200, None, vec![], None));
    drain(&mut t);
    t.handle_incoming(t0 + T1, SipMessage::Request(bye), peer());
    let (tx, ev) = drain(&mut t);
    assert_eq!((tx.len(), ev.len()), (1, 0));
    t.handle_timeout(t0 + TIMEOUT);
    assert!(t.is_empty());
}
