//! Deterministic tests of the call state machine: every path, the races, time as input.

use super::consent::{ConsentDecision, ConsentKey, ConsentKeys, ConsentPolicy, ConsentSource};
use super::*;
use Command::*;

fn policy(answer: AnswerMode) -> CallPolicy {
    CallPolicy {
        direction: CallDirection::Inbound,
        answer,
        announce: true,
        record: RecordPolicy::Always,
        consent: None,
        on_announcement_failure: AnnouncementFailure::Hangup,
        agent_answer_timeout: Duration::from_secs(30),
    }
}

struct Rig {
    call: Call,
    t0: Instant,
}

impl Rig {
    fn new(p: CallPolicy) -> Self {
        let mut r = Rig { call: Call::new(p), t0: Instant::now() };
        r.call.handle_input(r.t0, Input::Start);
        r
    }
    fn early() -> Self {
        Self::new(policy(AnswerMode::EarlyMedia))
    }
    fn immediate() -> Self {
        Self::new(policy(AnswerMode::Immediate))
    }
    fn at(&mut self, ms: u64, i: Input) -> Vec<Command> {
        self.call.handle_input(self.t0 + Duration::from_millis(ms), i);
        self.drain()
    }
    fn drain(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.call.poll_command()).collect()
    }
}

fn outcome(cause: HangupCause, side: Option<Leg>, final_status: Option<u16>) -> Command {
    Finished(Outcome { cause, side, final_status })
}

#[test]
fn early_media_start_plays_prompt_and_invites_agent_in_parallel() {
    let mut r = Rig::early();
    assert_eq!(
        r.drain(),
        vec![CallerProvisional { status: 183, with_sdp: true }, PlayAnnouncement, InviteAgent]
    );
}

#[test]
fn happy_path_agent_answers_after_prompt() {
    let mut r = Rig::early();
    r.drain();
    assert_eq!(r.at(100, Input::AgentProvisional(180)), vec![]);
    assert_eq!(r.at(3000, Input::AnnouncementDone), vec![PlayRingback]);
    assert_eq!(r.at(5000, Input::AgentAnswered), vec![AckAgent, AnswerCaller, Bridge { record: true }]);
    assert!(r.call.is_bridged());
    assert_eq!(r.at(5010, Input::CallerAck), vec![]);
    assert_eq!(
        r.at(60_000, Input::Bye(Leg::Caller)),
        vec![Bye { leg: Leg::Agent, reason: None }, outcome(HangupCause::Normal, Some(Leg::Caller), None)]
    );
    assert!(r.call.is_finished());
}

#[test]
fn agent_answers_while_announcement_still_playing_waits_for_the_prompt() {
    let mut r = Rig::early();
    r.drain();
    // Answered mid-prompt: ACK at once, but nothing connects and nothing is recorded yet.
    assert_eq!(r.at(500, Input::AgentAnswered), vec![AckAgent]);
    assert!(!r.call.is_bridged());
    assert_eq!(r.at(3000, Input::AnnouncementDone), vec![AnswerCaller, Bridge { record: true }]);
}

#[test]
fn agent_hangs_up_at_the_end_of_a_bridged_call() {
    let mut r = Rig::early();
    r.drain();
    r.at(1, Input::AnnouncementDone);
    r.at(2, Input::AgentAnswered);
    assert_eq!(
        r.at(9000, Input::Bye(Leg::Agent)),
        vec![Bye { leg: Leg::Caller, reason: None }, outcome(HangupCause::Normal, Some(Leg::Agent), None)]
    );
}

#[test]
fn agent_busy_maps_to_486_for_the_caller() {
    let mut r = Rig::early();
    r.drain();
    assert_eq!(
        r.at(50, Input::AgentRejected(486)),
        vec![RejectCaller { status: 486 }, outcome(HangupCause::Busy, Some(Leg::Agent), Some(486))]
    );
    // Late prompt completion changes nothing.
    assert_eq!(r.at(3000, Input::AnnouncementDone), vec![]);
}

#[test]
fn agent_failures_map_sensibly() {
    for (agent, caller, cause) in [
        (486, 486, HangupCause::Busy),
        (600, 600, HangupCause::Busy),
        (603, 603, HangupCause::Rejected),
        (480, 480, HangupCause::NoAnswer),
        (408, 480, HangupCause::NoAnswer),
        (404, 503, HangupCause::Rejected),
        (407, 503, HangupCause::Rejected),
        (500, 503, HangupCause::Rejected),
        (488, 488, HangupCause::Rejected),
    ] {
        let mut r = Rig::early();
        r.drain();
        assert_eq!(
            r.at(10, Input::AgentRejected(agent)),
            vec![RejectCaller { status: caller }, outcome(cause, Some(Leg::Agent), Some(caller))],
            "agent {agent}"
        );
    }
}

#[test]
fn unreachable_agent_gives_503() {
    let mut r = Rig::early();
    r.drain();
    assert_eq!(
        r.at(32_000, Input::AgentUnreachable),
        vec![RejectCaller { status: 503 }, outcome(HangupCause::Unreachable, None, Some(503))]
    );
}

#[test]
fn no_answer_timer_cancels_agent_and_gives_480() {
    let mut r = Rig::early();
    r.drain();
    r.at(100, Input::AgentProvisional(180));
    assert_eq!(r.call.poll_timeout(), Some(r.t0 + Duration::from_secs(30)));
    r.call.handle_timeout(r.t0 + Duration::from_millis(29_999));
    assert_eq!(r.drain(), vec![]);
    r.call.handle_timeout(r.t0 + Duration::from_secs(30));
    assert_eq!(
        r.drain(),
        vec![CancelAgent, RejectCaller { status: 480 }, outcome(HangupCause::NoAnswer, Some(Leg::Agent), Some(480))]
    );
    assert_eq!(r.call.poll_timeout(), None);
    // The agent's 487 after our CANCEL is absorbed.
    assert_eq!(r.at(30_010, Input::AgentRejected(487)), vec![]);
}

#[test]
fn answer_stops_the_no_answer_timer() {
    let mut r = Rig::early();
    r.drain();
    r.at(10, Input::AgentAnswered);
    assert_eq!(r.call.poll_timeout(), None);
}

#[test]
fn cancel_before_answer_cancels_agent_and_gives_487() {
    let mut r = Rig::early();
    r.drain();
    r.at(100, Input::AgentProvisional(180));
    assert_eq!(
        r.at(1500, Input::CallerCancel),
        vec![RejectCaller { status: 487 }, CancelAgent, outcome(HangupCause::Cancelled, Some(Leg::Caller), Some(487))]
    );
}

#[test]
fn cancel_racing_agent_200_closes_the_agent_dialog() {
    let mut r = Rig::early();
    r.drain();
    r.at(100, Input::CallerCancel);
    // The agent's 2xx crossed our CANCEL on the wire.
    assert_eq!(r.at(110, Input::AgentAnswered), vec![AckAgent, Bye { leg: Leg::Agent, reason: None }]);
    // A second 2xx retransmission does not produce a second BYE.
    assert_eq!(r.at(120, Input::AgentAnswered), vec![]);
}

#[test]
fn cancel_after_agent_answered_but_before_bridge_byes_agent() {
    let mut r = Rig::early();
    r.drain();
    r.at(500, Input::AgentAnswered);
    assert_eq!(
        r.at(600, Input::CallerCancel),
        vec![
            RejectCaller { status: 487 },
            Bye { leg: Leg::Agent, reason: None },
            outcome(HangupCause::Cancelled, Some(Leg::Caller), Some(487))
        ]
    );
}

#[test]
fn cancel_after_caller_answered_has_no_effect() {
    let mut r = Rig::immediate();
    assert_eq!(r.drain(), vec![AnswerCaller, PlayAnnouncement, InviteAgent]);
    assert_eq!(r.at(10, Input::CallerCancel), vec![]);
    assert!(!r.call.is_finished());
}

#[test]
fn immediate_mode_bye_during_announcement() {
    let mut r = Rig::immediate();
    r.drain();
    r.at(10, Input::AgentProvisional(180));
    assert_eq!(
        r.at(1000, Input::Bye(Leg::Caller)),
        vec![CancelAgent, outcome(HangupCause::Normal, Some(Leg::Caller), None)]
    );
    // The announcement task reporting later changes nothing.
    assert_eq!(r.at(3000, Input::AnnouncementDone), vec![]);
}

#[test]
fn immediate_mode_agent_busy_ends_caller_with_reason() {
    let mut r = Rig::immediate();
    r.drain();
    assert_eq!(
        r.at(10, Input::AgentRejected(486)),
        vec![Bye { leg: Leg::Caller, reason: Some(486) }, outcome(HangupCause::Busy, Some(Leg::Agent), Some(486))]
    );
}

#[test]
fn immediate_mode_bridges_without_a_second_answer() {
    let mut r = Rig::immediate();
    r.drain();
    r.at(10, Input::AgentAnswered);
    assert_eq!(r.at(3000, Input::AnnouncementDone), vec![Bridge { record: true }]);
}

#[test]
fn announcement_failure_fails_closed_by_default() {
    let mut r = Rig::early();
    r.drain();
    r.at(100, Input::AgentProvisional(180));
    assert_eq!(
        r.at(200, Input::AnnouncementFailed),
        vec![CancelAgent, RejectCaller { status: 503 }, outcome(HangupCause::AnnouncementFailed, None, Some(503))]
    );
}

#[test]
fn announcement_failure_can_connect_unrecorded() {
    let mut p = policy(AnswerMode::EarlyMedia);
    p.on_announcement_failure = AnnouncementFailure::ConnectUnrecorded;
    let mut r = Rig::new(p);
    r.drain();
    r.at(10, Input::AnnouncementFailed);
    assert_eq!(r.at(20, Input::AgentAnswered), vec![AckAgent, AnswerCaller, Bridge { record: false }]);
}

#[test]
fn no_announcement_route_rings_and_bridges_on_answer() {
    let mut p = policy(AnswerMode::EarlyMedia);
    p.announce = false;
    let mut r = Rig::new(p);
    assert_eq!(r.drain(), vec![InviteAgent]);
    // The agent's 180 is passed on once; a second one (or a 183) is not repeated.
    assert_eq!(r.at(5, Input::AgentProvisional(180)), vec![CallerProvisional { status: 180, with_sdp: false }]);
    assert_eq!(r.at(6, Input::AgentProvisional(180)), vec![]);
    assert_eq!(r.at(10, Input::AgentAnswered), vec![AckAgent, AnswerCaller, Bridge { record: true }]);
}

#[test]
fn reinvite_is_carried_across_and_glare_gets_491() {
    let mut r = Rig::early();
    r.drain();
    r.at(1, Input::AnnouncementDone);
    r.at(2, Input::AgentAnswered);
    assert_eq!(r.at(10_000, Input::Reinvite(Leg::Caller)), vec![ForwardReinvite { from: Leg::Caller }]);
    assert_eq!(r.at(10_001, Input::Reinvite(Leg::Agent)), vec![AnswerReinvite { leg: Leg::Agent, status: 491 }]);
    assert_eq!(
        r.at(10_050, Input::ReinviteAnswered { leg: Leg::Agent, status: 200 }),
        vec![AnswerReinvite { leg: Leg::Caller, status: 200 }]
    );
    // A stray answer with nothing pending is ignored.
    assert_eq!(r.at(10_060, Input::ReinviteAnswered { leg: Leg::Agent, status: 200 }), vec![]);
}

#[test]
fn reinvite_before_bridge_is_answered_locally() {
    let mut r = Rig::immediate();
    r.drain();
    assert_eq!(r.at(500, Input::Reinvite(Leg::Caller)), vec![AnswerReinvite { leg: Leg::Caller, status: 200 }]);
}

#[test]
fn media_timeout_ends_both_legs() {
    let mut r = Rig::early();
    r.drain();
    r.at(1, Input::AnnouncementDone);
    r.at(2, Input::AgentAnswered);
    assert_eq!(
        r.at(40_000, Input::MediaTimeout(Leg::Caller)),
        vec![
            Bye { leg: Leg::Agent, reason: None },
            Bye { leg: Leg::Caller, reason: None },
            outcome(HangupCause::MediaTimeout, Some(Leg::Caller), None)
        ]
    );
}

#[test]
fn shutdown_rejects_early_calls_and_byes_bridged_ones() {
    let mut r = Rig::early();
    r.drain();
    assert_eq!(
        r.at(5, Input::Shutdown),
        vec![CancelAgent, RejectCaller { status: 503 }, outcome(HangupCause::Shutdown, None, None)]
    );
    let mut r = Rig::early();
    r.drain();
    r.at(1, Input::AnnouncementDone);
    r.at(2, Input::AgentAnswered);
    assert_eq!(
        r.at(5, Input::Shutdown),
        vec![
            Bye { leg: Leg::Agent, reason: None },
            Bye { leg: Leg::Caller, reason: Some(503) },
            outcome(HangupCause::Shutdown, None, None)
        ]
    );
}

#[test]
fn finished_is_emitted_exactly_once_whatever_follows() {
    // Arbitrary input sequences (a small deterministic PRNG): never two Finished, nothing after it
    // except closing a racing agent dialog, and no panic.
    let inputs = [
        Input::CallerAck,
        Input::CallerCancel,
        Input::Bye(Leg::Caller),
        Input::Bye(Leg::Agent),
        Input::AgentProvisional(180),
        Input::AgentAnswered,
        Input::AgentRejected(486),
        Input::AgentRejected(487),
        Input::AgentUnreachable,
        Input::Reinvite(Leg::Caller),
        Input::Reinvite(Leg::Agent),
        Input::ReinviteAnswered { leg: Leg::Agent, status: 200 },
        Input::AnnouncementDone,
        Input::AnnouncementFailed,
        Input::ConsentKey(ConsentKey::DeclineRecording),
        Input::ConsentKey(ConsentKey::AllowTraining),
        Input::ConsentPromptDone,
        Input::ConsentPromptFailed,
        Input::MediaTimeout(Leg::Agent),
        Input::Shutdown,
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let variants = [
        policy(AnswerMode::EarlyMedia),
        policy(AnswerMode::Immediate),
        consent_policy(CallDirection::Inbound),
        consent_policy(CallDirection::Outbound),
        CallPolicy { record: RecordPolicy::OnDemand, ..outbound_policy() },
    ];
    for p in variants {
        for _ in 0..2000 {
            let mut r = Rig::new(p.clone());
            let mut all = r.drain();
            for step in 0..12u64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = inputs[(seed % inputs.len() as u64) as usize].clone();
                all.extend(r.at(step * 1000, i));
                r.call.handle_timeout(r.t0 + Duration::from_millis(step * 5000));
                all.extend(r.drain());
            }
            let finished = all.iter().filter(|c| matches!(c, Finished(_))).count();
            assert!(finished <= 1, "{all:?}");
            if let Some(pos) = all.iter().position(|c| matches!(c, Finished(_))) {
                for c in &all[pos + 1..] {
                    assert!(
                        matches!(c, AckAgent | Bye { leg: Leg::Agent, reason: None }),
                        "after Finished: {c:?} in {all:?}"
                    );
                }
            }
            // At most one final answer to the caller's INVITE.
            let finals = all.iter().filter(|c| matches!(c, AnswerCaller | RejectCaller { .. })).count();
            assert!(finals <= 1, "{all:?}");
            // One consent decision at most, and never a recording after a decline.
            let decisions: Vec<_> = all.iter().filter_map(|c| match c { ConsentDecided(d) => Some(*d), _ => None }).collect();
            assert!(decisions.len() <= 1, "{all:?}");
            if decisions.first().is_some_and(|d| !d.record) {
                assert!(!all.contains(&Bridge { record: true }), "{all:?}");
            }
        }
    }
}

// ---- outbound calls ----------------------------------------------------------------------------

fn outbound_policy() -> CallPolicy {
    CallPolicy { direction: CallDirection::Outbound, ..policy(AnswerMode::EarlyMedia) }
}

#[test]
fn outbound_rings_the_customer_then_announces_to_them_while_the_agent_hears_a_tone() {
    let mut r = Rig::new(outbound_policy());
    // Nothing is played before the customer answers; the agent's own phone rings back.
    assert_eq!(r.drain(), vec![InviteAgent]);
    assert_eq!(r.at(100, Input::AgentProvisional(183)), vec![CallerProvisional { status: 180, with_sdp: false }]);
    assert_eq!(r.at(200, Input::AgentProvisional(180)), vec![]);
    assert_eq!(
        r.at(4000, Input::AgentAnswered),
        vec![AckAgent, CallerProvisional { status: 183, with_sdp: true }, PlayWaitTone, PlayAnnouncement]
    );
    assert!(!r.call.is_bridged());
    // The agent is answered and connected only once the customer has heard the notice.
    assert_eq!(r.at(6000, Input::AnnouncementDone), vec![AnswerCaller, Bridge { record: true }]);
    assert_eq!(
        r.at(9000, Input::Bye(Leg::Agent)),
        vec![Bye { leg: Leg::Caller, reason: None }, outcome(HangupCause::Normal, Some(Leg::Agent), None)]
    );
}

#[test]
fn outbound_without_a_prompt_connects_on_answer() {
    let mut r = Rig::new(CallPolicy { announce: false, record: RecordPolicy::Never, ..outbound_policy() });
    assert_eq!(r.drain(), vec![InviteAgent]);
    assert_eq!(r.at(10, Input::AgentAnswered), vec![AckAgent, AnswerCaller, Bridge { record: false }]);
}

#[test]
fn outbound_failures_reach_the_agent_and_the_customer_hanging_up_during_the_notice_ends_it() {
    let mut r = Rig::new(outbound_policy());
    r.drain();
    assert_eq!(
        r.at(100, Input::AgentRejected(486)),
        vec![RejectCaller { status: 486 }, outcome(HangupCause::Busy, Some(Leg::Agent), Some(486))]
    );
    let mut r = Rig::new(outbound_policy());
    r.drain();
    r.at(100, Input::AgentAnswered);
    assert_eq!(
        r.at(500, Input::Bye(Leg::Agent)),
        vec![RejectCaller { status: 480 }, outcome(HangupCause::Normal, Some(Leg::Agent), Some(480))]
    );
    // The agent gives up while the customer's phone rings: CANCEL toward the trunk.
    let mut r = Rig::new(outbound_policy());
    r.drain();
    assert_eq!(
        r.at(100, Input::CallerCancel),
        vec![RejectCaller { status: 487 }, CancelAgent, outcome(HangupCause::Cancelled, Some(Leg::Caller), Some(487))]
    );
}

// ---- consent ---------------------------------------------------------------------------------

fn consent_policy(direction: CallDirection) -> CallPolicy {
    CallPolicy {
        direction,
        consent: Some(ConsentPolicy {
            prompt: "consent.wav".into(),
            keys: ConsentKeys { decline: crate::pci::Digit::from_char('9'), training: crate::pci::Digit::from_char('1') },
            timeout: Duration::from_secs(5),
            record_by_default: true,
            training_by_default: false,
        }),
        ..policy(AnswerMode::EarlyMedia)
    }
}

/// An inbound consent call with the agent already answered, just past the announcement.
fn at_the_prompt() -> Rig {
    let mut r = Rig::new(consent_policy(CallDirection::Inbound));
    r.drain();
    assert_eq!(r.at(500, Input::AgentAnswered), vec![AckAgent]);
    assert_eq!(r.at(3000, Input::AnnouncementDone), vec![PlayConsentPrompt]);
    r
}

const DECLINED: ConsentDecision = ConsentDecision { record: false, training: Some(false), source: ConsentSource::Keypad };
const TRAINING: ConsentDecision = ConsentDecision { record: true, training: Some(true), source: ConsentSource::Keypad };
const DEFAULTED: ConsentDecision = ConsentDecision { record: true, training: Some(false), source: ConsentSource::Default };

#[test]
fn pressing_decline_during_the_prompt_bridges_unrecorded() {
    let mut r = at_the_prompt();
    assert_eq!(
        r.at(3500, Input::ConsentKey(ConsentKey::DeclineRecording)),
        vec![StopPrompt, ConsentDecided(DECLINED), AnswerCaller, Bridge { record: false }]
    );
    // A second key changes nothing.
    assert_eq!(r.at(3600, Input::ConsentKey(ConsentKey::AllowTraining)), vec![]);
}

#[test]
fn pressing_training_after_the_prompt_records_for_training() {
    let mut r = at_the_prompt();
    assert_eq!(r.at(4000, Input::ConsentPromptDone), vec![]);
    assert_eq!(
        r.at(6000, Input::ConsentKey(ConsentKey::AllowTraining)),
        vec![ConsentDecided(TRAINING), AnswerCaller, Bridge { record: true }]
    );
}

#[test]
fn no_key_before_the_timeout_takes_the_routes_default() {
    let mut r = at_the_prompt();
    r.at(4000, Input::ConsentPromptDone);
    // The window runs from the end of the prompt, not from its start.
    assert_eq!(r.call.poll_timeout(), Some(r.t0 + Duration::from_millis(9000)));
    r.call.handle_timeout(r.t0 + Duration::from_millis(8999));
    assert_eq!(r.drain(), vec![]);
    r.call.handle_timeout(r.t0 + Duration::from_millis(9000));
    assert_eq!(r.drain(), vec![ConsentDecided(DEFAULTED), AnswerCaller, Bridge { record: true }]);
    // A key after the window is too late.
    assert_eq!(r.at(9500, Input::ConsentKey(ConsentKey::DeclineRecording)), vec![]);
}

#[test]
fn a_key_during_the_announcement_counts_and_skips_the_prompt() {
    let mut r = Rig::new(consent_policy(CallDirection::Inbound));
    r.drain();
    assert_eq!(r.at(800, Input::ConsentKey(ConsentKey::DeclineRecording)), vec![ConsentDecided(DECLINED)]);
    assert_eq!(r.at(1000, Input::AgentAnswered), vec![AckAgent]);
    // The notice still plays to its end; no prompt follows; connected unrecorded.
    assert!(!r.call.is_bridged());
    assert_eq!(r.at(3000, Input::AnnouncementDone), vec![AnswerCaller, Bridge { record: false }]);
}

#[test]
fn caller_hanging_up_during_the_prompt_ends_the_call_undecided() {
    let mut r = at_the_prompt();
    let out = r.at(3200, Input::Bye(Leg::Caller));
    assert_eq!(out, vec![Bye { leg: Leg::Agent, reason: None }, outcome(HangupCause::Normal, Some(Leg::Caller), None)]);
    assert!(!out.iter().any(|c| matches!(c, ConsentDecided(_))));
    assert_eq!(r.call.poll_timeout(), None);
}

#[test]
fn consent_waits_for_a_ringing_agent_with_ringback_after_the_choice() {
    let mut r = Rig::new(consent_policy(CallDirection::Inbound));
    r.drain();
    assert_eq!(r.at(100, Input::AgentProvisional(180)), vec![]);
    assert_eq!(r.at(3000, Input::AnnouncementDone), vec![PlayConsentPrompt]);
    // Ringback never cuts the consent prompt.
    assert_eq!(r.at(3100, Input::AgentProvisional(180)), vec![]);
    assert_eq!(r.at(3500, Input::ConsentKey(ConsentKey::AllowTraining)), vec![StopPrompt, ConsentDecided(TRAINING), PlayRingback]);
    assert_eq!(r.at(9000, Input::AgentAnswered), vec![AckAgent, AnswerCaller, Bridge { record: true }]);
}

#[test]
fn a_consent_prompt_that_cannot_play_fails_closed() {
    let mut r = at_the_prompt();
    assert_eq!(
        r.at(3100, Input::ConsentPromptFailed),
        vec![Bye { leg: Leg::Agent, reason: None }, RejectCaller { status: 503 }, outcome(HangupCause::AnnouncementFailed, None, Some(503))]
    );
    let mut p = consent_policy(CallDirection::Inbound);
    p.on_announcement_failure = AnnouncementFailure::ConnectUnrecorded;
    let mut r = Rig::new(p);
    r.drain();
    r.at(500, Input::AgentAnswered);
    r.at(3000, Input::AnnouncementDone);
    assert_eq!(r.at(3100, Input::ConsentPromptFailed), vec![AnswerCaller, Bridge { record: false }]);
}

#[test]
fn outbound_consent_is_the_called_customers() {
    let mut r = Rig::new(consent_policy(CallDirection::Outbound));
    assert_eq!(r.drain(), vec![InviteAgent]);
    // Keys before the customer answered are nobody's choice.
    assert_eq!(r.at(50, Input::ConsentKey(ConsentKey::DeclineRecording)), vec![]);
    r.at(100, Input::AgentAnswered);
    assert_eq!(r.at(2000, Input::AnnouncementDone), vec![PlayConsentPrompt]);
    assert_eq!(
        r.at(2500, Input::ConsentKey(ConsentKey::DeclineRecording)),
        vec![StopPrompt, ConsentDecided(DECLINED), AnswerCaller, Bridge { record: false }]
    );
}

// ---- on-demand recording ---------------------------------------------------------------------

#[test]
fn on_demand_starts_only_when_asked_once_bridged_and_never_after_a_decline() {
    let mut r = Rig::new(CallPolicy { record: RecordPolicy::OnDemand, ..policy(AnswerMode::EarlyMedia) });
    r.drain();
    r.at(500, Input::AgentAnswered);
    assert_eq!(r.call.start_recording(), Err(StartRefused::NotBridged));
    assert_eq!(r.at(3000, Input::AnnouncementDone), vec![AnswerCaller, Bridge { record: false }]);
    assert_eq!(r.call.start_recording(), Ok(()));
    assert_eq!(r.drain(), vec![StartRecording]);
    assert_eq!(r.call.start_recording(), Err(StartRefused::AlreadyRecording));
    r.at(9000, Input::Bye(Leg::Caller));
    assert_eq!(r.call.start_recording(), Err(StartRefused::Ended));

    let mut p = consent_policy(CallDirection::Inbound);
    p.record = RecordPolicy::OnDemand;
    let mut r = Rig::new(p);
    r.drain();
    r.at(100, Input::ConsentKey(ConsentKey::DeclineRecording));
    r.at(500, Input::AgentAnswered);
    r.at(3000, Input::AnnouncementDone);
    assert!(r.call.is_bridged());
    assert_eq!(r.call.start_recording(), Err(StartRefused::Declined));
    assert_eq!(r.drain(), vec![]);

    for (record, why) in [(RecordPolicy::Always, StartRefused::AlwaysRecorded), (RecordPolicy::Never, StartRefused::NeverRecorded)] {
        let mut r = Rig::new(CallPolicy { record, ..policy(AnswerMode::EarlyMedia) });
        r.at(500, Input::AgentAnswered);
        r.at(3000, Input::AnnouncementDone);
        assert_eq!(r.call.start_recording(), Err(why));
    }
}
