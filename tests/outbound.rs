//! Outbound calls with real media: an agent's phone calls a customer through the gateway.
//!
//! The agent's phone (the SIP caller here) dials 07700900123; the route (`direction =
//! "outbound"`, a target without a user part) sends the call to the trunk side, where a simulated
//! customer phone answers. The customer then hears the recording notice while the agent hears
//! the wait tone (early media); only after the notice is the agent answered and the call bridged.
//! The recording puts the customer on the left, as for inbound calls.

mod common;

use std::time::Duration;

use callgate::serve;
use common::audio::{self, received_audio};
use common::phone::{AgentAnswer, AgentPhone, CallerPhone};
use common::{GatewayEnv, GatewayOpts, SIP_WAIT, dtmf};

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn corr(reference: &[i16], heard: &[i16], max_lag: usize) -> f64 {
    audio::best_alignment_correlation(reference, heard, max_lag).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_calls_out_customer_hears_the_notice_and_is_recorded_on_the_left() {
    let run = async {
        let ann_16k = audio::announcement_at(16_000, 1.0);
        let env = GatewayEnv::new(&ann_16k);
        // The customer's phone on the trunk side.
        let customer = AgentPhone::start(AgentAnswer::After(Duration::from_millis(300))).await;
        let trunk = format!("sip:{}", customer.sip_addr);
        let opts = GatewayOpts { rtp_ports: (41_300, 41_399), target: &trunk, trusted: &["127.0.0.0/8"] };
        // Loopback is both the trunk's and the agents' network here: the routes decide, the
        // first (inbound, 2001) does not match 0770…, the outbound one does.
        let route = format!(
            "[[route]]\nmatch = \"07*\"\ndirection = \"outbound\"\ntarget = \"{trunk}\"\nannouncement = \"{}\"\n\n[recording]",
            env.announcement.display()
        );
        let text = env
            .config_text(&opts)
            .replace("trusted = [\"127.0.0.0/8\"]", "trusted = [\"127.0.0.0/8\"]\nagents = [\"127.0.0.0/8\"]")
            .replacen("[recording]", &route, 1);
        let config = callgate::config::Config::parse(&text, std::path::Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let gw = serve::start(config).await.expect("gateway starts");

        let mut agent = CallerPhone::new(gw.sip_addr, "3001").await;
        agent.invite("07700900123").await;
        ok(agent.wait_invite_response(SIP_WAIT, "180 while the customer rings", |m| m.status() == Some(180)).await);
        ok(customer.wait_until(SIP_WAIT, "INVITE to the customer", |s| s.invite.is_some()).await);
        let invite = customer.state().invite.unwrap();
        let ruri = invite.msg.request_uri().unwrap_or_default().to_string();
        assert!(ruri.starts_with("sip:07700900123@"), "the dialled number is the trunk's request-URI user: {ruri}");
        let early = ok(agent.wait_invite_response(SIP_WAIT, "183 once the customer answered", |m| m.status() == Some(183) && m.sdp().is_some()).await);
        let fin = ok(agent.wait_final(Duration::from_secs(10)).await);
        assert_eq!(fin.status(), Some(200), "{}", agent.summary());
        let answered = agent.answered_at.expect("answered");
        ok(customer.wait_until(SIP_WAIT, "ACK to the customer", |s| s.acked.is_some()).await);
        assert!(answered.duration_since(early.at) >= Duration::from_millis(900), "the agent is connected only after the 1 s notice");

        // The customer heard the notice before the bridge.
        let notice: Vec<_> = customer.rtp.received().into_iter().filter(|p| p.at < answered).collect();
        let ann_8k = audio::announcement_at(8000, 1.0);
        let c = corr(&ann_8k, &received_audio(&notice), 4000);
        assert!(c >= 0.9, "the customer heard the notice: correlation {c:.3}");
        // The agent heard the wait tone (440 Hz pips), not the notice.
        let waiting = received_audio(&agent.rtp.received().into_iter().filter(|p| p.at < answered).collect::<Vec<_>>());
        assert!(!waiting.is_empty(), "the agent heard something while waiting");
        let (g440, g1k) = (dtmf::goertzel(&waiting, 440.0), dtmf::goertzel(&waiting, 1000.0));
        assert!(g440 > 10.0 * g1k, "wait tone at 440 Hz, not the notice: {g440:.1} vs {g1k:.1}");

        // Both talk: the agent sends A, the customer B.
        let a = audio::signal_a(2.0);
        let b = audio::signal_b(2.0);
        let (ta, tb) = (ok(agent.start_audio(a.clone())), ok(customer.start_audio(b.clone())));
        let _ = (ta.await, tb.await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        ok(agent.bye(SIP_WAIT).await);
        ok(customer.wait_until(SIP_WAIT, "BYE to the customer", |s| s.bye_received.is_some()).await);
        gw.shutdown();
        gw.join().await.expect("drains");

        let calls = env.calls().await;
        let rec = &calls[0];
        assert_eq!((rec.direction.as_str(), rec.customer_leg.as_str()), ("outbound", "called"), "{rec:?}");
        assert_eq!(rec.recording_state, "ok");
        assert_eq!(rec.announcement_state, "played");
        // Roles, not SIP legs: the staff member (the SIP caller) hung up.
        assert_eq!(rec.hangup_side.as_deref(), Some("agent"));
        assert!(rec.caller_packets > 50 && rec.agent_packets > 50, "{rec:?}");
        let (left, right) = env.decrypt_recording(rec).await;
        let (l_b, l_a) = (corr(&b, &left, 8000), corr(&a, &left, 8000));
        let (r_a, r_b) = (corr(&a, &right, 8000), corr(&b, &right, 8000));
        assert!(l_b >= 0.95 && l_a < 0.5, "left = customer: corr with B {l_b:.3}, with A {l_a:.3}");
        assert!(r_a >= 0.95 && r_b < 0.5, "right = agent: corr with A {r_a:.3}, with B {r_b:.3}");
    };
    tokio::time::timeout(Duration::from_secs(40), run).await.expect("test finished in time");
}
