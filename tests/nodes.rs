//! Two gateways sharing one database (`[database] node`): a gateway starting up marks only its
//! own interrupted calls truncated, never a call live on another gateway; after a crash, the
//! gateway that owned the call recovers it at its next start.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::audio;
use common::phone::{AgentAnswer, AgentPhone};
use common::process::GatewayProc;
use common::{GatewayEnv, GatewayOpts, only_call, talk};

/// The shared test config for one node (its own RTP ports), same database, keys and storage.
fn node_config(env: &GatewayEnv, node: &str, rtp_ports: (u16, u16), target: &str) -> PathBuf {
    let text = env.config_text(&GatewayOpts {
        rtp_ports,
        target,
        trusted: &["127.0.0.0/8"],
    });
    assert!(
        text.trim_end()
            .ends_with(&format!("url = \"{}\"", env.db_url)),
        "the shared config ends with [database]"
    );
    let path = env.dir.path().join(format!("{node}.toml"));
    std::fs::write(&path, format!("{text}node = \"{node}\"\n")).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_gateway_leaves_another_gateways_live_call_alone() {
    let run = async {
        let env = GatewayEnv::new(&audio::announcement_at(16_000, 0.3));
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(100))).await;
        let cfg_a = node_config(&env, "gw-a", (43_400, 43_449), &agent.uri());
        let cfg_b = node_config(&env, "gw-b", (43_450, 43_499), &agent.uri());

        let gw_a = GatewayProc::start(&cfg_a).await;
        let (_a, _b, caller) = talk(gw_a.sip_addr, &agent, 1.0, false).await;
        let call = only_call(&env).await;
        assert_eq!(call.recording_state, "recording", "{call:?}");
        assert_eq!(call.node.as_deref(), Some("gw-a"));

        // Another gateway starts on the same database while the call is live on gw-a.
        let gw_b = GatewayProc::start(&cfg_b).await;
        let call = only_call(&env).await;
        assert_eq!(
            (call.recording_state.as_str(), call.hangup_cause.as_deref()),
            ("recording", None),
            "gw-b must not touch gw-a's live call"
        );
        gw_b.stop().await;

        // gw-a crashes; at its next start it recovers its own call.
        gw_a.kill();
        drop(caller);
        let gw_a = GatewayProc::start(&cfg_a).await;
        let call = only_call(&env).await;
        assert_eq!(call.recording_state, "truncated", "{call:?}");
        assert_eq!(call.hangup_cause.as_deref(), Some("gateway-restart"));
        gw_a.stop().await;
    };
    if tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .is_err()
    {
        panic!("test exceeded 90 s");
    }
}
