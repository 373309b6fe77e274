//! The `calls` table: one [`CallRecord`] per call.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};
use crate::ids::{CallId, KeyId, RecordingId};
use crate::pii::PhoneNumber;

/// Values of [`CallRecord::recording_state`].
pub mod recording_state {
    /// The route does not record (or recording has not started yet).
    pub const NONE: &str = "none";
    /// Recording in progress; left behind by a crash if seen at start-up.
    pub const RECORDING: &str = "recording";
    /// Finished and sealed.
    pub const OK: &str = "ok";
    /// The file ends early (crash, disk full); what is there authenticates.
    pub const TRUNCATED: &str = "truncated";
    /// Could not be written; `recording_error` says why.
    pub const FAILED: &str = "failed";
    /// Deliberately not recorded (announcement failed, caller opted out).
    pub const NOT_RECORDED: &str = "not-recorded";
    /// Deleted by retention or erasure: the data key is destroyed and the file removed.
    pub const DELETED: &str = "deleted";
    /// The customer declined recording at the consent prompt: bridged, never recorded.
    pub const DECLINED: &str = "declined";
}

/// Values of [`CallRecord::consent_state`].
pub mod consent_state {
    /// The prompt is playing or the choice window is open.
    pub const OFFERED: &str = "offered";
    /// A key was pressed, or the timeout applied the route's default.
    pub const DECIDED: &str = "decided";
    /// The call ended before the choice was made.
    pub const ABANDONED: &str = "abandoned";
    /// The prompts could not be played and the route connects such calls unrecorded.
    pub const SKIPPED: &str = "skipped";
}

/// Values of [`CallRecord::announcement_state`].
pub mod announcement_state {
    pub const NONE: &str = "none";
    pub const PLAYED: &str = "played";
    pub const FAILED: &str = "failed";
    pub const INTERRUPTED: &str = "interrupted";
}

/// Everything the gateway keeps about one call. Serialised as one object of
/// `callgate calls list --json` (phone numbers in full there: that output is for operators).
///
/// Counts and times are `i64` (Unix milliseconds for times) because that is what both
/// databases store natively.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_id: CallId,
    /// The Call-ID header of the caller leg.
    pub sip_call_id: String,
    /// `"inbound"` (trunk → agents) or `"outbound"` (agents → trunk).
    pub direction: String,
    /// Which SIP leg is the customer: `"caller"` (inbound) or `"called"` (outbound). The
    /// `caller_*` fields and the recording's left track always mean the customer.
    #[serde(default = "default_customer_leg")]
    pub customer_leg: String,
    pub from_number: PhoneNumber,
    pub to_number: PhoneNumber,
    /// The number the caller dialled, as matched against `[[route]] match`.
    pub dialled: PhoneNumber,
    /// The route's `match` value.
    pub route: String,
    /// The route's `target` URI.
    pub target: String,
    pub started_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    pub bridged_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    /// `normal`, `busy`, `no-answer`, `unreachable`, `cancelled`, `rejected`,
    /// `media-timeout`, `shutdown`.
    pub hangup_cause: Option<String>,
    /// `caller`, `agent` or `gateway`.
    pub hangup_side: Option<String>,
    /// SIP status given to the caller when the call was not answered.
    pub final_status: Option<i64>,
    pub caller_codec: Option<String>,
    pub agent_codec: Option<String>,
    pub caller_packets: i64,
    pub caller_lost: i64,
    pub agent_packets: i64,
    pub agent_lost: i64,
    /// Hex SHA-256 of the announcement audio played.
    pub announcement_sha256: Option<String>,
    pub announcement_started_at_ms: Option<i64>,
    pub announcement_ended_at_ms: Option<i64>,
    /// See [`announcement_state`].
    pub announcement_state: String,
    pub announcement_error: Option<String>,
    pub recording_id: Option<RecordingId>,
    /// See [`recording_state`].
    pub recording_state: String,
    pub recording_error: Option<String>,
    pub key_id: Option<KeyId>,
    pub recording_bytes: Option<i64>,
    pub recording_sha256: Option<String>,
    pub recording_location: Option<String>,
    pub audio_ms: Option<i64>,
    /// Keypad-protection pauses on the recording timeline (counts and times, never digits).
    #[serde(default)]
    pub pauses: Vec<PauseSpan>,
    /// The route's recording policy: `always`, `never` or `on-demand`.
    #[serde(default = "default_record_policy")]
    pub record_policy: String,
    /// When the recording started and who started it: `route` (at the bridge), `api:<token>`
    /// or `agent-keys` (on-demand lines).
    #[serde(default)]
    pub recording_started_at_ms: Option<i64>,
    #[serde(default)]
    pub recording_started_by: Option<String>,
    /// Hex SHA-256 of the consent prompt played (`None`: the route offers no choices).
    #[serde(default)]
    pub consent_prompt_sha256: Option<String>,
    /// See [`consent_state`].
    #[serde(default)]
    pub consent_state: Option<String>,
    /// The customer's choices: may the call be recorded, may it be used to train staff.
    #[serde(default)]
    pub consent_recording: Option<bool>,
    #[serde(default)]
    pub consent_training: Option<bool>,
    /// `keypad` or `default` (no key before the timeout).
    #[serde(default)]
    pub consent_source: Option<String>,
    #[serde(default)]
    pub consent_at_ms: Option<i64>,
    /// The gateway that wrote the call (`[database] node`); `None` for rows from before nodes
    /// were recorded.
    #[serde(default)]
    pub node: Option<String>,
}

fn default_customer_leg() -> String {
    "caller".into()
}

fn default_record_policy() -> String {
    "always".into()
}

/// One paused span of a recording, for the call record and the player's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseSpan {
    pub started_ms: i64,
    pub ended_ms: i64,
    /// `agent_keys`, `api`, `caller_digits` or `uncertain`.
    pub trigger: String,
    /// What ended it: `agent_keys`, `api`, `hash`, `digit_count`, `max_pause`, `cleared`,
    /// `idle` or `hangup`.
    pub resumed_by: String,
    /// How many keys were pressed in the span (never which).
    pub digits: u16,
}

impl CallRecord {
    /// A call that has just arrived: inbound, nothing answered, played or recorded yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        call_id: CallId,
        sip_call_id: impl Into<String>,
        from_number: PhoneNumber,
        to_number: PhoneNumber,
        dialled: PhoneNumber,
        route: impl Into<String>,
        target: impl Into<String>,
        started_at_ms: i64,
    ) -> CallRecord {
        CallRecord {
            call_id,
            sip_call_id: sip_call_id.into(),
            direction: "inbound".to_string(),
            customer_leg: default_customer_leg(),
            from_number,
            to_number,
            dialled,
            route: route.into(),
            target: target.into(),
            started_at_ms,
            answered_at_ms: None,
            bridged_at_ms: None,
            ended_at_ms: None,
            hangup_cause: None,
            hangup_side: None,
            final_status: None,
            caller_codec: None,
            agent_codec: None,
            caller_packets: 0,
            caller_lost: 0,
            agent_packets: 0,
            agent_lost: 0,
            announcement_sha256: None,
            announcement_started_at_ms: None,
            announcement_ended_at_ms: None,
            announcement_state: announcement_state::NONE.to_string(),
            announcement_error: None,
            recording_id: None,
            recording_state: recording_state::NONE.to_string(),
            recording_error: None,
            key_id: None,
            recording_bytes: None,
            recording_sha256: None,
            recording_location: None,
            audio_ms: None,
            pauses: Vec::new(),
            record_policy: default_record_policy(),
            recording_started_at_ms: None,
            recording_started_by: None,
            consent_prompt_sha256: None,
            consent_state: None,
            consent_recording: None,
            consent_training: None,
            consent_source: None,
            consent_at_ms: None,
            node: None,
        }
    }
}

/// Column order of every `calls` query; [`bind_call`] binds in exactly this order.
const COLUMNS: [&str; 46] = [
    "call_id",
    "sip_call_id",
    "direction",
    "from_number",
    "to_number",
    "dialled",
    "route",
    "target",
    "started_at_ms",
    "answered_at_ms",
    "bridged_at_ms",
    "ended_at_ms",
    "hangup_cause",
    "hangup_side",
    "final_status",
    "caller_codec",
    "agent_codec",
    "caller_packets",
    "caller_lost",
    "agent_packets",
    "agent_lost",
    "announcement_sha256",
    "announcement_started_at_ms",
    "announcement_ended_at_ms",
    "announcement_state",
    "announcement_error",
    "recording_id",
    "recording_state",
    "recording_error",
    "key_id",
    "recording_bytes",
    "recording_sha256",
    "recording_location",
    "audio_ms",
    "pauses_json",
    "customer_leg",
    "record_policy",
    "recording_started_at_ms",
    "recording_started_by",
    "consent_prompt_sha256",
    "consent_state",
    "consent_recording",
    "consent_training",
    "consent_source",
    "consent_at_ms",
    "node",
];

fn select(rest: &str) -> String {
    format!("SELECT {} FROM calls {rest}", COLUMNS.join(", "))
}

// Built once from `COLUMNS` (never from input): sqlx accepts them as `&'static str`.
static GET_CALL: LazyLock<String> = LazyLock::new(|| select("WHERE call_id = $1"));
static LIST_CALLS: LazyLock<String> =
    LazyLock::new(|| select("ORDER BY started_at_ms DESC, call_id DESC LIMIT $1"));
/// How many number spellings [`Store::calls_by_numbers`] matches at once.
pub const MAX_NUMBER_VARIANTS: usize = 6;
static CALLS_BY_NUMBERS: LazyLock<String> = LazyLock::new(|| {
    let ph: Vec<String> = (1..=MAX_NUMBER_VARIANTS).map(|i| format!("${i}")).collect();
    let ph = ph.join(", ");
    select(&format!(
        "WHERE from_number IN ({ph}) OR to_number IN ({ph}) OR dialled IN ({ph}) \
         ORDER BY started_at_ms, call_id"
    ))
});
/// The portal's search: recorded calls started in `[$1, $2)`; when `$3` is not 0, one of the
/// number spellings `$4..` is the from, to or dialled number; when the tag is not empty, the
/// recording carries it now. Newest first.
static SEARCH_RECORDED: LazyLock<String> = LazyLock::new(|| {
    let n = MAX_NUMBER_VARIANTS;
    let ph: Vec<String> = (4..4 + n).map(|i| format!("${i}")).collect();
    let ph = ph.join(", ");
    let tag = 4 + n;
    let limit = tag + 1;
    select(&format!(
        "WHERE recording_id IS NOT NULL AND started_at_ms >= $1 AND started_at_ms < $2 \
         AND ($3 = 0 OR from_number IN ({ph}) OR to_number IN ({ph}) OR dialled IN ({ph})) \
         AND (${tag} = '' OR recording_id IN (SELECT recording_id FROM recording_tags \
              WHERE tag = ${tag} AND removed_at_ms IS NULL)) \
         ORDER BY started_at_ms DESC, call_id DESC LIMIT ${limit}"
    ))
});

/// What the portal searches recorded calls by (see [`Store::search_recorded_calls`]).
#[derive(Clone, Debug, Default)]
pub struct CallSearch {
    /// Unix ms, inclusive; `None`: no lower bound.
    pub from_ms: Option<i64>,
    /// Unix ms, exclusive; `None`: no upper bound.
    pub to_ms: Option<i64>,
    /// Spellings of one number (at most [`MAX_NUMBER_VARIANTS`]); empty: any number.
    pub numbers: Vec<String>,
    /// A tag in force on the recording; `None`: any.
    pub tag: Option<String>,
    pub limit: u32,
}

static CALLS_IN_STATE: LazyLock<String> =
    LazyLock::new(|| select("WHERE recording_state = $1 ORDER BY started_at_ms, call_id"));

static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let placeholders: Vec<String> = (1..=COLUMNS.len()).map(|i| format!("${i}")).collect();
    let updates: Vec<String> = COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO calls ({}) VALUES ({}) ON CONFLICT (call_id) DO UPDATE SET {}",
        COLUMNS.join(", "),
        placeholders.join(", "),
        updates.join(", ")
    )
});

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind_call<'q>(q: AnyQuery<'q>, c: &'q CallRecord) -> AnyQuery<'q> {
    q.bind(c.call_id.as_str())
        .bind(c.sip_call_id.as_str())
        .bind(c.direction.as_str())
        .bind(c.from_number.expose())
        .bind(c.to_number.expose())
        .bind(c.dialled.expose())
        .bind(c.route.as_str())
        .bind(c.target.as_str())
        .bind(c.started_at_ms)
        .bind(c.answered_at_ms)
        .bind(c.bridged_at_ms)
        .bind(c.ended_at_ms)
        .bind(c.hangup_cause.as_deref())
        .bind(c.hangup_side.as_deref())
        .bind(c.final_status)
        .bind(c.caller_codec.as_deref())
        .bind(c.agent_codec.as_deref())
        .bind(c.caller_packets)
        .bind(c.caller_lost)
        .bind(c.agent_packets)
        .bind(c.agent_lost)
        .bind(c.announcement_sha256.as_deref())
        .bind(c.announcement_started_at_ms)
        .bind(c.announcement_ended_at_ms)
        .bind(c.announcement_state.as_str())
        .bind(c.announcement_error.as_deref())
        .bind(c.recording_id.as_ref().map(|r| r.as_str()))
        .bind(c.recording_state.as_str())
        .bind(c.recording_error.as_deref())
        .bind(c.key_id.as_ref().map(|k| k.as_str()))
        .bind(c.recording_bytes)
        .bind(c.recording_sha256.as_deref())
        .bind(c.recording_location.as_deref())
        .bind(c.audio_ms)
        // Invariant: a Vec of plain structs always serialises.
        .bind(serde_json::to_string(&c.pauses).unwrap_or_else(|_| "[]".into()))
        .bind(c.customer_leg.as_str())
        .bind(c.record_policy.as_str())
        .bind(c.recording_started_at_ms)
        .bind(c.recording_started_by.as_deref())
        .bind(c.consent_prompt_sha256.as_deref())
        .bind(c.consent_state.as_deref())
        .bind(c.consent_recording.map(i64::from))
        .bind(c.consent_training.map(i64::from))
        .bind(c.consent_source.as_deref())
        .bind(c.consent_at_ms)
        .bind(c.node.as_deref())
}

fn call_from_row(r: &AnyRow) -> Result<CallRecord, sqlx::Error> {
    Ok(CallRecord {
        call_id: CallId::from_string(r.try_get::<String, _>("call_id")?),
        sip_call_id: r.try_get("sip_call_id")?,
        direction: r.try_get("direction")?,
        from_number: PhoneNumber::new(r.try_get::<String, _>("from_number")?),
        to_number: PhoneNumber::new(r.try_get::<String, _>("to_number")?),
        dialled: PhoneNumber::new(r.try_get::<String, _>("dialled")?),
        route: r.try_get("route")?,
        target: r.try_get("target")?,
        started_at_ms: r.try_get("started_at_ms")?,
        answered_at_ms: r.try_get("answered_at_ms")?,
        bridged_at_ms: r.try_get("bridged_at_ms")?,
        ended_at_ms: r.try_get("ended_at_ms")?,
        hangup_cause: r.try_get("hangup_cause")?,
        hangup_side: r.try_get("hangup_side")?,
        final_status: r.try_get("final_status")?,
        caller_codec: r.try_get("caller_codec")?,
        agent_codec: r.try_get("agent_codec")?,
        caller_packets: r.try_get("caller_packets")?,
        caller_lost: r.try_get("caller_lost")?,
        agent_packets: r.try_get("agent_packets")?,
        agent_lost: r.try_get("agent_lost")?,
        announcement_sha256: r.try_get("announcement_sha256")?,
        announcement_started_at_ms: r.try_get("announcement_started_at_ms")?,
        announcement_ended_at_ms: r.try_get("announcement_ended_at_ms")?,
        announcement_state: r.try_get("announcement_state")?,
        announcement_error: r.try_get("announcement_error")?,
        recording_id: r
            .try_get::<Option<String>, _>("recording_id")?
            .map(RecordingId::from_string),
        recording_state: r.try_get("recording_state")?,
        recording_error: r.try_get("recording_error")?,
        key_id: r
            .try_get::<Option<String>, _>("key_id")?
            .map(KeyId::from_string),
        recording_bytes: r.try_get("recording_bytes")?,
        recording_sha256: r.try_get("recording_sha256")?,
        recording_location: r.try_get("recording_location")?,
        audio_ms: r.try_get("audio_ms")?,
        pauses: {
            let j: Option<String> = r.try_get("pauses_json")?;
            j.and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default()
        },
        customer_leg: r.try_get("customer_leg")?,
        record_policy: r.try_get("record_policy")?,
        recording_started_at_ms: r.try_get("recording_started_at_ms")?,
        recording_started_by: r.try_get("recording_started_by")?,
        consent_prompt_sha256: r.try_get("consent_prompt_sha256")?,
        consent_state: r.try_get("consent_state")?,
        consent_recording: r.try_get::<Option<i64>, _>("consent_recording")?.map(|v| v != 0),
        consent_training: r.try_get::<Option<i64>, _>("consent_training")?.map(|v| v != 0),
        consent_source: r.try_get("consent_source")?,
        consent_at_ms: r.try_get("consent_at_ms")?,
        node: r.try_get("node")?,
    })
}

impl Store {
    /// Inserts the call, or replaces every field of the stored row with the same `call_id`.
    pub async fn upsert_call(&self, call: &CallRecord) -> Result<(), StoreError> {
        bind_call(sqlx::query(UPSERT.as_str()), call)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query("upsert_call"))?;
        Ok(())
    }

    /// The call with this id, if any.
    pub async fn get_call(&self, call_id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        let row = sqlx::query(GET_CALL.as_str())
            .bind(call_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("get_call"))?;
        row.as_ref()
            .map(call_from_row)
            .transpose()
            .map_err(StoreError::query("get_call"))
    }

    /// The `limit` most recent calls, newest (`started_at_ms`) first; ties by `call_id`, descending.
    pub async fn list_calls(&self, limit: u32) -> Result<Vec<CallRecord>, StoreError> {
        self.fetch_calls(LIST_CALLS.as_str(), "list_calls", |q| {
            q.bind(i64::from(limit))
        })
        .await
    }

    /// Every call whose `recording_state` is `state` (e.g. [`recording_state::RECORDING`] at
    /// start-up: calls a crash left behind), oldest first.
    pub async fn calls_in_state(&self, state: &str) -> Result<Vec<CallRecord>, StoreError> {
        let state = state.to_string();
        self.fetch_calls(CALLS_IN_STATE.as_str(), "calls_in_state", move |q| {
            q.bind(state)
        })
        .await
    }

    /// Every call whose from, to or dialled number is exactly one of `numbers` (at most
    /// [`MAX_NUMBER_VARIANTS`] spellings of one number; more are ignored), oldest first.
    pub async fn calls_by_numbers(&self, numbers: &[String]) -> Result<Vec<CallRecord>, StoreError> {
        let mut vals: Vec<String> = numbers.iter().take(MAX_NUMBER_VARIANTS).cloned().collect();
        if vals.is_empty() {
            return Ok(Vec::new());
        }
        while vals.len() < MAX_NUMBER_VARIANTS {
            // Pad with a repeat: IN (a, b, a) is IN (a, b).
            vals.push(vals[0].clone());
        }
        self.fetch_calls(CALLS_BY_NUMBERS.as_str(), "calls_by_numbers", move |mut q| {
            for v in vals {
                q = q.bind(v);
            }
            q
        })
        .await
    }

    /// Recorded calls matching `q`, newest first (at most `q.limit`).
    pub async fn search_recorded_calls(&self, q: &CallSearch) -> Result<Vec<CallRecord>, StoreError> {
        let mut numbers: Vec<String> = q.numbers.iter().take(MAX_NUMBER_VARIANTS).cloned().collect();
        let any_number = i64::from(!numbers.is_empty());
        let pad = numbers.first().cloned().unwrap_or_default();
        numbers.resize(MAX_NUMBER_VARIANTS, pad);
        let (from, to) = (q.from_ms.unwrap_or(i64::MIN), q.to_ms.unwrap_or(i64::MAX));
        let tag = q.tag.clone().unwrap_or_default();
        let limit = i64::from(q.limit);
        self.fetch_calls(SEARCH_RECORDED.as_str(), "search_recorded_calls", move |mut q| {
            q = q.bind(from).bind(to).bind(any_number);
            for v in numbers {
                q = q.bind(v);
            }
            q.bind(tag).bind(limit)
        })
        .await
    }

    async fn fetch_calls(
        &self,
        sql: &'static str,
        op: &'static str,
        bind: impl FnOnce(AnyQuery<'static>) -> AnyQuery<'static>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let rows = bind(sqlx::query(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(op))?;
        rows.iter()
            .map(call_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::query(op))
    }
}

/// The consent choices on the call that made a recording (see [`CallRecord`]'s `consent_*`
/// fields): what [`crate::retention::service::tag_add`] checks before a `training` tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallConsent {
    pub call_id: CallId,
    /// Hex SHA-256 of the consent prompt played (`None`: the route offers no choices).
    pub prompt_sha256: Option<String>,
    /// See [`consent_state`].
    pub state: Option<String>,
    pub recording: Option<bool>,
    pub training: Option<bool>,
    /// `keypad` or `default`.
    pub source: Option<String>,
    pub at_ms: Option<i64>,
}

/// Calls linked to a recording: by the call row's `recording_id`, or as the call named on the
/// recording's own row (the gateway writes the two rows separately).
const CONSENT_OF_RECORDING: &str = "SELECT call_id, consent_prompt_sha256, consent_state, \
     consent_recording, consent_training, consent_source, consent_at_ms FROM calls \
     WHERE recording_id = $1 \
     OR call_id IN (SELECT call_id FROM recordings WHERE recording_id = $1) \
     ORDER BY started_at_ms, call_id";

fn consent_from_row(r: &AnyRow) -> Result<CallConsent, sqlx::Error> {
    Ok(CallConsent {
        call_id: CallId::from_string(r.try_get::<String, _>("call_id")?),
        prompt_sha256: r.try_get("consent_prompt_sha256")?,
        state: r.try_get("consent_state")?,
        recording: r.try_get::<Option<i64>, _>("consent_recording")?.map(|v| v != 0),
        training: r.try_get::<Option<i64>, _>("consent_training")?.map(|v| v != 0),
        source: r.try_get("consent_source")?,
        at_ms: r.try_get("consent_at_ms")?,
    })
}

async fn q_consent_of_recording(
    c: &mut sqlx::AnyConnection,
    rec: &RecordingId,
) -> Result<Option<CallConsent>, StoreError> {
    let op = "consent_of_recording";
    let rows = sqlx::query(CONSENT_OF_RECORDING)
        .bind(rec.as_str())
        .fetch_all(&mut *c)
        .await
        .map_err(StoreError::query(op))?;
    let all = rows
        .iter()
        .map(consent_from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::query(op))?;
    // One call per recording in practice; should two rows name it, a refusal wins.
    Ok(all
        .iter()
        .find(|c| c.training == Some(false))
        .or(all.first())
        .cloned())
}

impl Store {
    /// The consent choices of the call that made recording `rec`; `None` if no call row is
    /// linked to it.
    pub async fn consent_of_recording(
        &self,
        rec: &RecordingId,
    ) -> Result<Option<CallConsent>, StoreError> {
        let mut c = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::query("consent_of_recording"))?;
        q_consent_of_recording(&mut c, rec).await
    }
}

impl super::AuditTx {
    /// [`Store::consent_of_recording`], read inside the transaction.
    pub async fn consent_of_recording(
        &mut self,
        rec: &RecordingId,
    ) -> Result<Option<CallConsent>, StoreError> {
        q_consent_of_recording(self.conn(), rec).await
    }
}
