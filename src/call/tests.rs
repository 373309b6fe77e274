//! Deterministic tests of the call state machine: every path, the races, time as input.

use super::*;
use Command::*;

fn policy(answer: AnswerMode) -> CallPolicy {
    CallPolicy {
        answer,
        announce: true,
        record: true,
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
        Input::MediaTimeout(Leg::Agent),
        Input::Shutdown,
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for mode in [AnswerMode::EarlyMedia, AnswerMode::Immediate] {
        for _ in 0..2000 {
            let mut r = Rig::new(policy(mode));
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
        }
    }
}
