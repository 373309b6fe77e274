//! The B2BUA call state machine, sans-IO.
//!
//! One [`Call`] per call through the gateway. It knows nothing of SIP bytes, sockets or clocks:
//! the shell feeds it [`Input`]s with the current time and drains [`Command`]s until
//! [`Call::poll_timeout`] says when it next needs `handle_timeout`. SDP bodies pass through as
//! opaque values chosen by the media layer.
//!
//! Flow (default [`AnswerMode::EarlyMedia`]): the caller's INVITE gets 183 with our SDP and the
//! announcement plays as early media while the agent leg is invited in parallel. When both the
//! announcement has finished and the agent has answered, the caller gets 200 and the legs are
//! bridged (recording starts only then). Agent failures map to the caller's final response.
//! With [`AnswerMode::Immediate`] the caller gets 200 first and agent failures end the call with
//! a BYE carrying a `Reason`.

pub mod b2bua;
pub mod consent;
pub mod routing;

use std::time::{Duration, Instant};

use crate::ids::Leg;

/// When the caller's INVITE is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerMode {
    /// 183 + early media for the announcement; 200 when the agent answers.
    EarlyMedia,
    /// 200 at once, announcement after; the caller is answered even if the agent never is.
    Immediate,
}

/// What to do when the announcement cannot be played (fail closed: never record unannounced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnnouncementFailure {
    /// Reject or end the call (503 / BYE).
    Hangup,
    /// Connect the call but do not record it.
    ConnectUnrecorded,
}

/// Which way a call goes. The customer is the caller of an inbound call and the called party of
/// an outbound one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CallDirection {
    /// From the trunk to the agents.
    #[default]
    Inbound,
    /// From an agent's phone or the PBX to the trunk.
    Outbound,
}

impl CallDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Inbound => "inbound",
            CallDirection::Outbound => "outbound",
        }
    }

    /// The SIP leg (ours: `Caller` sent the INVITE) that faces the customer.
    pub fn customer_leg(self) -> Leg {
        match self {
            CallDirection::Inbound => Leg::Caller,
            CallDirection::Outbound => Leg::Agent,
        }
    }
}

/// A route's recording policy (`record = true | false | "on-demand"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordPolicy {
    Always,
    Never,
    /// Not recorded until the agent (keypad) or an API call starts it.
    OnDemand,
}

impl RecordPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordPolicy::Always => "always",
            RecordPolicy::Never => "never",
            RecordPolicy::OnDemand => "on-demand",
        }
    }
}

/// Per-call policy from the route.
#[derive(Clone, Debug)]
pub struct CallPolicy {
    pub direction: CallDirection,
    pub answer: AnswerMode,
    /// An announcement is configured (played to the customer).
    pub announce: bool,
    pub record: RecordPolicy,
    /// Keypad choices after the announcement.
    pub consent: Option<consent::ConsentPolicy>,
    pub on_announcement_failure: AnnouncementFailure,
    /// Give up on an agent that rings this long (maps to 480 / "no-answer").
    pub agent_answer_timeout: Duration,
}

/// Events from the SIP edge and the media task.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The caller's INVITE was accepted for processing (routing, media allocated).
    Start,
    /// The caller ACKed our 2xx.
    CallerAck,
    /// The caller CANCELled its INVITE.
    CallerCancel,
    /// BYE from a leg.
    Bye(Leg),
    /// A provisional response from the agent (180, 183).
    AgentProvisional(u16),
    /// 2xx from the agent.
    AgentAnswered,
    /// A final non-2xx from the agent.
    AgentRejected(u16),
    /// The agent's INVITE transaction timed out or its transport failed (unreachable).
    AgentUnreachable,
    /// A re-INVITE from a leg (hold, unhold, codec change).
    Reinvite(Leg),
    /// The final response to a re-INVITE we forwarded to `Leg`.
    ReinviteAnswered { leg: Leg, status: u16 },
    /// The announcement finished playing in full.
    AnnouncementDone,
    /// The announcement could not be played (file, codec, socket).
    AnnouncementFailed,
    /// A consent key from the customer (only configured keys are ever reported).
    ConsentKey(consent::ConsentKey),
    /// The consent prompt finished playing (the choice window's timeout starts now).
    ConsentPromptDone,
    /// The consent prompt could not be played (handled like a failed announcement).
    ConsentPromptFailed,
    /// A leg stopped sending media for too long.
    MediaTimeout(Leg),
    /// The gateway is shutting down.
    Shutdown,
}

/// What the shell must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Send a provisional response to the caller; `with_sdp` carries our caller-side SDP.
    CallerProvisional { status: u16, with_sdp: bool },
    /// Send 200 with our caller-side SDP.
    AnswerCaller,
    /// Final error response to the caller's INVITE.
    RejectCaller { status: u16 },
    /// Send the INVITE to the route target.
    InviteAgent,
    /// CANCEL the agent's pending INVITE.
    CancelAgent,
    /// ACK the agent's 2xx.
    AckAgent,
    /// End a leg's dialog with BYE; `reason` is a SIP status carried in a `Reason` header.
    Bye { leg: Leg, reason: Option<u16> },
    /// Start playing the announcement toward the caller.
    PlayAnnouncement,
    /// Play ringback toward the caller (announcement over, agent still ringing).
    PlayRingback,
    /// Outbound: a short repeating tone toward the agent while the customer hears the prompts.
    PlayWaitTone,
    /// Play the consent prompt toward the customer (keys are already being listened for).
    PlayConsentPrompt,
    /// Stop the consent prompt (a key decided it).
    StopPrompt,
    /// The customer's consent choice (or the route's default); before any `Bridge`.
    ConsentDecided(consent::ConsentDecision),
    /// On-demand: start recording the bridged call now.
    StartRecording,
    /// Connect the legs' media; `record` says whether to record from the start.
    Bridge { record: bool },
    /// Forward a re-INVITE received on `from` to the other leg.
    ForwardReinvite { from: Leg },
    /// Answer a re-INVITE on `leg` with `status` (200 carries our SDP for that leg).
    AnswerReinvite { leg: Leg, status: u16 },
    /// The call is over; write the record. Always the last command, emitted once.
    Finished(Outcome),
}

/// Why and how a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub cause: HangupCause,
    /// Who ended it; `None` means the gateway.
    pub side: Option<Leg>,
    /// The final status given to the caller when the caller was never answered.
    pub final_status: Option<u16>,
}

/// Hangup causes stored on the call record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HangupCause {
    Normal,
    Busy,
    NoAnswer,
    Unreachable,
    Rejected,
    Cancelled,
    AnnouncementFailed,
    MediaTimeout,
    Shutdown,
}

impl HangupCause {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupCause::Normal => "normal",
            HangupCause::Busy => "busy",
            HangupCause::NoAnswer => "no-answer",
            HangupCause::Unreachable => "unreachable",
            HangupCause::Rejected => "rejected",
            HangupCause::Cancelled => "cancelled",
            HangupCause::AnnouncementFailed => "announcement-failed",
            HangupCause::MediaTimeout => "media-timeout",
            HangupCause::Shutdown => "shutdown",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AgentState {
    /// INVITE sent, no provisional yet.
    Inviting,
    Ringing,
    /// 2xx received and ACKed.
    Answered,
    /// CANCEL sent; waiting for the 487 (or a racing 2xx).
    Cancelling,
    /// No dialog (failed, or never started).
    Gone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnnState {
    NotStarted,
    Playing,
    Done,
    /// Failed and the route says connect unrecorded.
    FailedUnrecorded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallerState {
    /// INVITE pending, nothing final sent.
    Early,
    /// 200 sent (ACK may still be outstanding).
    Answered,
    /// Final error sent, or BYE exchanged.
    Gone,
}

/// Where the consent step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConsentState {
    /// The route offers no choices (or the prompts failed and the call goes unrecorded).
    NotOffered,
    /// The announcement is playing; choice keys already count.
    Listening,
    /// The consent prompt is playing.
    Prompting,
    /// The prompt is over; keys count until the timeout.
    Waiting,
    Decided(consent::ConsentDecision),
}

/// Why an on-demand start was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartRefused {
    #[error("this line records every call from the start")]
    AlwaysRecorded,
    #[error("this line is not recorded (record = false)")]
    NeverRecorded,
    #[error("the customer declined recording")]
    Declined,
    #[error("the call is not connected yet")]
    NotBridged,
    #[error("the call is already being recorded")]
    AlreadyRecording,
    #[error("the announcement was not played, so the call may not be recorded")]
    Unannounced,
    #[error("the call has ended")]
    Ended,
    #[error("no such call")]
    UnknownCall,
}

/// Timers the call keeps; time is an input, so these are deadlines, not sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    AgentAnswer,
    ConsentWindow,
}

/// One call's B2BUA logic.
#[derive(Debug)]
pub struct Call {
    policy: CallPolicy,
    caller: CallerState,
    agent: AgentState,
    ann: AnnState,
    consent: ConsentState,
    bridged: bool,
    /// Recording (from the bridge, or since an on-demand start).
    recording: bool,
    /// A re-INVITE forwarded from this leg awaits the other leg's answer.
    reinvite_pending: Option<Leg>,
    timers: Vec<(Timer, Instant)>,
    out: std::collections::VecDeque<Command>,
    finished: bool,
    started: bool,
}

impl Call {
    pub fn new(policy: CallPolicy) -> Self {
        Call {
            policy,
            caller: CallerState::Early,
            agent: AgentState::Gone,
            ann: AnnState::NotStarted,
            consent: ConsentState::NotOffered,
            bridged: false,
            recording: false,
            reinvite_pending: None,
            timers: Vec::new(),
            out: Default::default(),
            finished: false,
            started: false,
        }
    }

    /// Whether the call has ended (its `Finished` command has been emitted).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether the legs' media is connected.
    pub fn is_bridged(&self) -> bool {
        self.bridged
    }

    /// Next command for the shell.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.pop_front()
    }

    /// The earliest deadline at which `handle_timeout` must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().map(|(_, t)| *t).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, t)| *t <= now)
            .map(|(k, _)| *k)
            .collect();
        self.timers.retain(|(_, t)| *t > now);
        for t in due {
            if self.finished {
                // An earlier timer in this pass ended the call.
                break;
            }
            match t {
                Timer::AgentAnswer => {
                    if matches!(self.agent, AgentState::Inviting | AgentState::Ringing) {
                        self.push(Command::CancelAgent);
                        self.agent = AgentState::Cancelling;
                        self.fail_caller(HangupCause::NoAnswer, Some(Leg::Agent), 480);
                    }
                }
                Timer::ConsentWindow => {
                    if self.consent == ConsentState::Waiting {
                        self.decide(None);
                    }
                }
            }
        }
    }

    /// On-demand recording: starts it now if the route and the customer's choice allow.
    pub fn start_recording(&mut self) -> Result<(), StartRefused> {
        if self.finished {
            return Err(StartRefused::Ended);
        }
        match self.policy.record {
            RecordPolicy::Always => return Err(StartRefused::AlwaysRecorded),
            RecordPolicy::Never => return Err(StartRefused::NeverRecorded),
            RecordPolicy::OnDemand => {}
        }
        if let ConsentState::Decided(d) = self.consent
            && !d.record
        {
            return Err(StartRefused::Declined);
        }
        if self.ann == AnnState::FailedUnrecorded {
            return Err(StartRefused::Unannounced);
        }
        if !self.bridged {
            return Err(StartRefused::NotBridged);
        }
        if self.recording {
            return Err(StartRefused::AlreadyRecording);
        }
        self.recording = true;
        self.push(Command::StartRecording);
        Ok(())
    }

    pub fn handle_input(&mut self, now: Instant, input: Input) {
        if self.finished {
            // Late events after the end (a retransmitted BYE, a racing 2xx) are the SIP layer's
            // business; the one exception is a 2xx racing our CANCEL, which must be closed.
            if input == Input::AgentAnswered && self.agent == AgentState::Cancelling {
                self.agent = AgentState::Gone;
                self.out.push_back(Command::AckAgent);
                self.out.push_back(Command::Bye { leg: Leg::Agent, reason: None });
            }
            return;
        }
        let outbound = self.policy.direction == CallDirection::Outbound;
        match input {
            Input::Start => self.start(now),
            Input::CallerAck => {}
            Input::CallerCancel => {
                if self.caller == CallerState::Early {
                    self.caller = CallerState::Gone;
                    self.push(Command::RejectCaller { status: 487 });
                    self.drop_agent();
                    self.finish(HangupCause::Cancelled, Some(Leg::Caller), Some(487));
                }
                // After our 200 a CANCEL has no effect (RFC 3261 §9.2); the caller will BYE.
            }
            Input::Bye(Leg::Caller) => {
                self.caller = CallerState::Gone;
                self.drop_agent();
                self.finish(HangupCause::Normal, Some(Leg::Caller), None);
            }
            Input::Bye(Leg::Agent) => {
                self.agent = AgentState::Gone;
                if self.bridged || self.caller == CallerState::Answered {
                    self.end_caller(None);
                    self.finish(HangupCause::Normal, Some(Leg::Agent), None);
                } else if outbound {
                    // The customer answered and hung up during the prompts: the agent was
                    // never connected.
                    self.fail_caller(HangupCause::Normal, Some(Leg::Agent), 480);
                } else {
                    // Agent answered then hung up while the caller was still hearing the
                    // announcement as early media: the caller was never answered.
                    self.fail_caller(HangupCause::Rejected, Some(Leg::Agent), 480);
                }
            }
            Input::AgentProvisional(status) => {
                let first = self.agent == AgentState::Inviting;
                if first {
                    self.agent = AgentState::Ringing;
                }
                if outbound {
                    // The agent's phone plays its own ringback while the customer's rings.
                    if first && self.caller == CallerState::Early {
                        self.push(Command::CallerProvisional { status: 180, with_sdp: false });
                    }
                    return;
                }
                // No prompt on this route: pass the agent's ringing to the caller, once.
                if !self.has_prompts() && first && self.caller == CallerState::Early && status == 180 {
                    self.push(Command::CallerProvisional { status: 180, with_sdp: false });
                    return;
                }
                // Ringing is not passed as 180 while the caller hears the announcement: many
                // phones would switch to local ringback and cut the prompt. After the prompts
                // the caller already has an answered media path: ringback is ours.
                if self.has_prompts() && self.prompts_over() {
                    self.push(Command::PlayRingback);
                }
            }
            Input::AgentAnswered => match self.agent {
                AgentState::Inviting | AgentState::Ringing => {
                    self.agent = AgentState::Answered;
                    self.cancel_timer(Timer::AgentAnswer);
                    self.push(Command::AckAgent);
                    if outbound {
                        // The customer answered: now they hear the prompts, the agent a tone.
                        if self.has_prompts() {
                            match self.policy.answer {
                                AnswerMode::EarlyMedia => {
                                    self.push(Command::CallerProvisional { status: 183, with_sdp: true })
                                }
                                AnswerMode::Immediate => {
                                    self.caller = CallerState::Answered;
                                    self.push(Command::AnswerCaller);
                                }
                            }
                            self.push(Command::PlayWaitTone);
                        }
                        self.start_prompts();
                    }
                    self.maybe_bridge();
                }
                AgentState::Cancelling => {
                    // 2xx raced our CANCEL: the agent's dialog exists now and must be closed.
                    self.agent = AgentState::Gone;
                    self.push(Command::AckAgent);
                    self.push(Command::Bye { leg: Leg::Agent, reason: None });
                }
                AgentState::Answered | AgentState::Gone => {}
            },
            Input::AgentRejected(status) => {
                if matches!(self.agent, AgentState::Inviting | AgentState::Ringing) {
                    self.agent = AgentState::Gone;
                    self.cancel_timer(Timer::AgentAnswer);
                    let cause = match status {
                        486 | 600 => HangupCause::Busy,
                        408 | 480 => HangupCause::NoAnswer,
                        _ => HangupCause::Rejected,
                    };
                    self.fail_caller(cause, Some(Leg::Agent), map_agent_status(status));
                } else if self.agent == AgentState::Cancelling {
                    self.agent = AgentState::Gone;
                }
            }
            Input::AgentUnreachable => {
                if matches!(self.agent, AgentState::Inviting | AgentState::Ringing) {
                    self.agent = AgentState::Gone;
                    self.cancel_timer(Timer::AgentAnswer);
                    self.fail_caller(HangupCause::Unreachable, None, 503);
                } else if self.agent == AgentState::Cancelling {
                    self.agent = AgentState::Gone;
                }
            }
            Input::Reinvite(leg) => self.reinvite(leg),
            Input::ReinviteAnswered { leg, status } => {
                if self.reinvite_pending == Some(leg.other()) {
                    self.reinvite_pending = None;
                    self.push(Command::AnswerReinvite { leg: leg.other(), status });
                }
            }
            Input::AnnouncementDone => {
                if self.ann == AnnState::Playing {
                    self.ann = AnnState::Done;
                    if self.consent == ConsentState::Listening {
                        self.consent = ConsentState::Prompting;
                        self.push(Command::PlayConsentPrompt);
                    } else {
                        self.after_prompts();
                    }
                }
            }
            Input::AnnouncementFailed => {
                if self.ann == AnnState::Playing {
                    self.prompt_failed();
                }
            }
            Input::ConsentKey(key) => {
                let open = matches!(
                    self.consent,
                    ConsentState::Listening | ConsentState::Prompting | ConsentState::Waiting
                );
                if open {
                    if self.consent == ConsentState::Prompting {
                        self.push(Command::StopPrompt);
                    }
                    // A key during the announcement decides too; the announcement (the legal
                    // notice) still plays to its end, and the prompt is skipped.
                    self.decide(Some(key));
                }
            }
            Input::ConsentPromptDone => {
                if self.consent == ConsentState::Prompting {
                    self.consent = ConsentState::Waiting;
                    let timeout = self.policy.consent.as_ref().map(|c| c.timeout).unwrap_or_default();
                    self.timers.push((Timer::ConsentWindow, now + timeout));
                }
            }
            Input::ConsentPromptFailed => {
                if self.consent == ConsentState::Prompting {
                    self.prompt_failed();
                }
            }
            Input::MediaTimeout(leg) => {
                self.drop_agent();
                if self.caller == CallerState::Early {
                    self.caller = CallerState::Gone;
                    self.push(Command::RejectCaller { status: 408 });
                } else {
                    self.end_caller(None);
                }
                self.finish(HangupCause::MediaTimeout, Some(leg), None);
            }
            Input::Shutdown => {
                self.drop_agent();
                if self.caller == CallerState::Early {
                    self.caller = CallerState::Gone;
                    self.push(Command::RejectCaller { status: 503 });
                } else {
                    self.end_caller(Some(503));
                }
                self.finish(HangupCause::Shutdown, None, None);
            }
        }
    }

    /// An announcement or consent prompt is configured.
    fn has_prompts(&self) -> bool {
        self.policy.announce || self.policy.consent.is_some()
    }

    /// Announcement and consent step are both behind us.
    fn prompts_over(&self) -> bool {
        matches!(self.ann, AnnState::Done | AnnState::FailedUnrecorded)
            && matches!(self.consent, ConsentState::NotOffered | ConsentState::Decided(_))
    }

    fn start(&mut self, now: Instant) {
        if self.started {
            return;
        }
        self.started = true;
        if self.policy.direction == CallDirection::Inbound {
            match self.policy.answer {
                AnswerMode::EarlyMedia => {
                    // Without a prompt the caller hears the agent's own ringing: 180 is passed
                    // on when the agent sends it (see AgentProvisional), not invented here.
                    if self.has_prompts() {
                        self.push(Command::CallerProvisional { status: 183, with_sdp: true });
                    }
                }
                AnswerMode::Immediate => {
                    self.caller = CallerState::Answered;
                    self.push(Command::AnswerCaller);
                }
            }
            self.start_prompts();
        }
        // Outbound: the prompts start when the customer answers.
        self.agent = AgentState::Inviting;
        self.push(Command::InviteAgent);
        self.timers.push((Timer::AgentAnswer, now + self.policy.agent_answer_timeout));
    }

    /// The customer starts hearing the announcement, then the consent prompt.
    fn start_prompts(&mut self) {
        let consent = self.policy.consent.is_some();
        if self.policy.announce {
            self.ann = AnnState::Playing;
            if consent {
                self.consent = ConsentState::Listening;
            }
            self.push(Command::PlayAnnouncement);
        } else {
            self.ann = AnnState::Done;
            if consent {
                self.consent = ConsentState::Prompting;
                self.push(Command::PlayConsentPrompt);
            }
        }
    }

    /// The announcement or the consent prompt could not be played: never record unannounced.
    fn prompt_failed(&mut self) {
        match self.policy.on_announcement_failure {
            AnnouncementFailure::Hangup => {
                self.drop_agent();
                self.fail_caller(HangupCause::AnnouncementFailed, None, 503);
            }
            AnnouncementFailure::ConnectUnrecorded => {
                self.ann = AnnState::FailedUnrecorded;
                self.consent = ConsentState::NotOffered;
                self.after_prompts();
            }
        }
    }

    fn decide(&mut self, key: Option<consent::ConsentKey>) {
        let Some(policy) = &self.policy.consent else { return };
        let d = policy.decide(key);
        self.consent = ConsentState::Decided(d);
        self.cancel_timer(Timer::ConsentWindow);
        self.push(Command::ConsentDecided(d));
        // Decided during the announcement: the bridge waits for its end.
        if self.ann == AnnState::Done {
            self.after_prompts();
        }
    }

    /// Prompts over: ringback while an inbound agent still rings, else connect.
    fn after_prompts(&mut self) {
        if self.policy.direction == CallDirection::Inbound && self.agent == AgentState::Ringing {
            self.push(Command::PlayRingback);
        }
        self.maybe_bridge();
    }

    fn maybe_bridge(&mut self) {
        if self.bridged || !self.prompts_over() || self.agent != AgentState::Answered {
            return;
        }
        if self.caller == CallerState::Early {
            self.caller = CallerState::Answered;
            self.push(Command::AnswerCaller);
        }
        self.bridged = true;
        let declined = matches!(self.consent, ConsentState::Decided(d) if !d.record);
        let record = self.policy.record == RecordPolicy::Always && self.ann != AnnState::FailedUnrecorded && !declined;
        self.recording = record;
        self.push(Command::Bridge { record });
    }

    fn reinvite(&mut self, leg: Leg) {
        if !self.bridged {
            // Before the bridge each leg is terminated locally: answer with our own SDP.
            self.push(Command::AnswerReinvite { leg, status: 200 });
            return;
        }
        if self.reinvite_pending.is_some() {
            // Glare (RFC 3261 §14.2): one offer/answer at a time across the bridge.
            self.push(Command::AnswerReinvite { leg, status: 491 });
            return;
        }
        self.reinvite_pending = Some(leg);
        self.push(Command::ForwardReinvite { from: leg });
    }

    /// Tear down the agent leg in whatever state it is in.
    fn drop_agent(&mut self) {
        match self.agent {
            AgentState::Inviting | AgentState::Ringing => {
                self.agent = AgentState::Cancelling;
                self.push(Command::CancelAgent);
            }
            AgentState::Answered => {
                self.agent = AgentState::Gone;
                self.push(Command::Bye { leg: Leg::Agent, reason: None });
            }
            AgentState::Cancelling | AgentState::Gone => {}
        }
        self.cancel_timer(Timer::AgentAnswer);
    }

    fn end_caller(&mut self, reason: Option<u16>) {
        if self.caller == CallerState::Answered {
            self.caller = CallerState::Gone;
            self.push(Command::Bye { leg: Leg::Caller, reason });
        }
    }

    /// The agent leg could not be connected: map it to the caller and finish.
    fn fail_caller(&mut self, cause: HangupCause, side: Option<Leg>, status: u16) {
        match self.caller {
            CallerState::Early => {
                self.caller = CallerState::Gone;
                self.push(Command::RejectCaller { status });
            }
            CallerState::Answered => self.end_caller(Some(status)),
            CallerState::Gone => {}
        }
        self.finish(cause, side, Some(status));
    }

    fn finish(&mut self, cause: HangupCause, side: Option<Leg>, final_status: Option<u16>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.timers.clear();
        self.push(Command::Finished(Outcome { cause, side, final_status }));
    }

    fn cancel_timer(&mut self, t: Timer) {
        self.timers.retain(|(k, _)| *k != t);
    }

    fn push(&mut self, c: Command) {
        self.out.push_back(c);
    }
}

/// Which status the caller gets when the agent leg fails with `status`.
fn map_agent_status(status: u16) -> u16 {
    match status {
        // Busy and decline are meaningful to the caller as they are.
        486 | 600 | 603 => status,
        408 | 480 => 480,
        // Authentication or routing trouble toward the PBX is ours, not the caller's.
        401 | 407 | 404 | 484 => 503,
        s if (500..600).contains(&s) => 503,
        s if (400..500).contains(&s) => s,
        _ => 503,
    }
}

#[cfg(test)]
mod tests;
