//! TOML configuration, checked when loaded.
//!
//! Every error names the file and the key. Every field has a default, so an empty file (or no
//! file at all) gives the embedded development defaults: SQLite under `data/`, recordings under
//! `recordings/`, a development KEK created on first start.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::call::routing::{NoRoute, NumberPattern, Routable, Sources};
use crate::call::consent::{ConsentKeys, ConsentPolicy};
use crate::call::{AnnouncementFailure, AnswerMode, CallDirection, RecordPolicy};

/// Configuration problems; each names the file and, where it can, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("config file {file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("config file {file}: key `{key}`: {message}")]
    Invalid { file: PathBuf, key: String, message: String },
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was loaded from (for messages).
    pub file: PathBuf,
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub routes: Vec<Route>,
    pub recording: RecordingConfig,
    pub keys: KeysConfig,
    pub database: DatabaseConfig,
    pub call: CallConfig,
    pub portal: PortalConfig,
    /// Keypad protection: pause triggers, masking, timing.
    pub pci: crate::pci::PciConfig,
    /// Parsed for forward compatibility; enforced by later features.
    pub retention: RetentionConfig,
}

/// The built-in recording tags (DESIGN.md); `[retention] custom_tags` adds more.
pub const BUILTIN_TAGS: [&str; 4] = ["training", "complaint", "evidence", "abusive"];

/// How long a tag keeps a recording (`[retention] tags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagRetention {
    /// Kept at least this long after the recording was made.
    Period(Duration),
    /// `"until-released"`: kept while the tag is on the recording (an open investigation),
    /// then for `[retention] grace` after it is removed.
    UntilReleased,
}

/// `[retention]`: see `docs/retention.md`. The longest applicable rule wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Recordings with no longer rule are kept this long after they were made. Default `183d`.
    pub default: Duration,
    /// Kept this long after a legal hold is released or an until-released tag removed.
    /// Default `30d`.
    pub grace: Duration,
    /// Per-tag rules. Default: `abusive` and `evidence` until released. A tag without a rule
    /// does not change retention.
    pub tags: std::collections::BTreeMap<String, TagRetention>,
    /// Tags allowed beyond [`BUILTIN_TAGS`] (e.g. `["threatening"]`). Default none.
    pub custom_tags: Vec<String>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            default: Duration::from_secs(183 * 86_400),
            grace: Duration::from_secs(30 * 86_400),
            tags: [
                ("abusive".to_string(), TagRetention::UntilReleased),
                ("evidence".to_string(), TagRetention::UntilReleased),
            ]
            .into_iter()
            .collect(),
            custom_tags: Vec::new(),
        }
    }
}

impl RetentionConfig {
    /// Whether `tag` may be put on a recording (built in or listed in `custom_tags`).
    pub fn is_known_tag(&self, tag: &str) -> bool {
        BUILTIN_TAGS.contains(&tag) || self.custom_tags.iter().any(|t| t == tag)
    }
}

#[derive(Debug, Clone)]
pub struct SipConfig {
    /// UDP and TCP listen address. Default `0.0.0.0:5060`.
    pub listen: SocketAddr,
    /// Address put in Via/Contact; default: the listen IP, or 127.0.0.1 when that is unspecified.
    pub advertise: IpAddr,
    /// Trunk ACL: requests from other sources get 403. Default: loopback only.
    pub trusted: Vec<ipnet::IpNet>,
    /// Agents' phones and the PBX: calls from these networks are outbound (to the trunk) and
    /// take `direction = "outbound"` routes. Default: none (no outbound calls).
    pub agents: Vec<ipnet::IpNet>,
    /// Largest SIP message accepted, bytes. Default 16 KiB.
    pub max_message_size: usize,
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Inclusive RTP port range; even ports carry RTP, odd RTCP. Default `20000-29999`.
    pub rtp_ports: (u16, u16),
    /// Address written into SDP. Default: the SIP advertise address.
    pub advertise: IpAddr,
    /// End the call when a bridged leg sends no RTP for this long. Default `60s`.
    pub timeout: Duration,
    /// Real-time (`SCHED_FIFO`) priority of the media threads, 1..=99; `None` (key absent or 0,
    /// the default): normal scheduling. Needs CAP_SYS_NICE or a `LimitRTPRIO` at least as high.
    pub realtime_priority: Option<u8>,
    /// Admission control: new calls get 503 while the media thread that would take them has
    /// been busy at least this share of the time (percent, 1..=100; 100 = never refuse on load).
    /// Default 90.
    pub max_load_percent: u8,
    /// Each media thread receives every call's RTP (and RTCP) on one port pair, the first
    /// pairs of `rtp_ports`, and finds the call by the datagram's source: the address the
    /// peer's SDP gave. Peers must send from that address (no NAT between them and the
    /// gateway). Default false: a port pair per call leg, latched to whoever sends.
    pub shared_ports: bool,
}

/// One line of the routing table; first match wins (see `call::routing`).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The `match` text as configured (shown on call records).
    pub matches: String,
    /// Called-number pattern (`*`, `2001`, `0800*`).
    pub called: NumberPattern,
    /// Optional calling-number pattern (`from`).
    pub calling: Option<NumberPattern>,
    /// `inbound` (default) or `outbound`: which calls the route is for (by source network).
    pub direction: CallDirection,
    /// Where the call goes. A target without a user part (`sip:trunk.example:5060`) takes the
    /// dialled number as its user.
    pub target: String,
    pub announcement: Option<PathBuf>,
    /// `record = true | false | "on-demand"` (default true).
    pub record: RecordPolicy,
    /// Keypad choices after the announcement (`[route.consent]`), if any.
    pub consent: Option<ConsentPolicy>,
    pub answer: AnswerMode,
    pub on_announcement_failure: AnnouncementFailure,
}

impl Routable for Route {
    fn called(&self) -> &NumberPattern {
        &self.called
    }
    fn calling(&self) -> Option<&NumberPattern> {
        self.calling.as_ref()
    }
    fn direction(&self) -> CallDirection {
        self.direction
    }
}

#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// Directory (default `recordings`) or `s3://bucket/prefix`, as written.
    pub storage: String,
    /// Set when `storage` is an `s3://` URL.
    pub s3: Option<S3Config>,
    /// Seal and flush a chunk this often. Default `1s`.
    pub flush: Duration,
}

/// `[recording] storage = "s3://bucket/prefix"` and its companions. Credentials are never in
/// the config file: they come from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or the instance's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `[recording] s3_endpoint`: an S3-compatible server (`http://` allowed, for a server on
    /// the same host or network). Default: AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// `[recording] s3_region`. Default: `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// `[recording] spool` (default `data/spool`): recordings are written here while the call
    /// lasts (a crash loses at most `flush` of audio), then uploaded and removed.
    pub spool: PathBuf,
    /// `[recording] upload_retry` (default `30s`): how often the spool is scanned for
    /// recordings whose upload failed (server away) or was never announced (a crash).
    pub upload_retry: Duration,
}

/// Parses `s3://bucket[/prefix]`: `Ok(None)` for anything that is not an `s3://` URL.
pub fn parse_s3_url(s: &str) -> Result<Option<(String, String)>, String> {
    let Some(rest) = s
        .get(..5)
        .filter(|scheme| scheme.eq_ignore_ascii_case("s3://"))
        .map(|_| &s[5..])
    else {
        return Ok(None);
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // S3's bucket naming rules (the subset every S3-compatible server accepts).
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if !bucket_ok {
        return Err(format!(
            "`{s}`: bucket name `{bucket}` must be 3-63 characters of a-z, 0-9, `.` and `-`"
        ));
    }
    let prefix = prefix.trim_matches('/');
    let prefix_ok = prefix.is_empty()
        || prefix.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !prefix_ok {
        return Err(format!(
            "`{s}`: the prefix `{prefix}` may hold only A-Z a-z 0-9 - _ . and single `/` between parts"
        ));
    }
    Ok(Some((bucket.to_owned(), prefix.to_owned())))
}

#[derive(Debug, Clone)]
pub struct KeysConfig {
    /// Default `data/kek.key`; created with a warning on first start when missing.
    pub kek_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Default `sqlite://data/callgate.db?mode=rwc`.
    pub url: String,
    /// This gateway's name among those sharing the database: call rows carry it, so that at
    /// start a gateway marks only its own interrupted calls truncated. Default: the host name.
    pub node: String,
}

/// The host name (`/etc/hostname`, else `$HOSTNAME`, else `localhost`).
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| valid_node(h))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| valid_node(h)))
        .unwrap_or_else(|| "localhost".into())
}

fn valid_node(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(Debug, Clone)]
pub struct CallConfig {
    /// Concurrent calls accepted; more get 503. Default 2000.
    pub max_calls: usize,
    /// Ringing agent given up after this long (480 to the caller). Default `60s`.
    pub agent_answer_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// HTTP API (and later the portal). Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Hashes of API tokens (`callgate api token create`). Default `data/api-tokens`.
    pub api_tokens_file: PathBuf,
}

// ---- raw serde shapes: strings first, checked into the types above ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    sip: RawSip,
    #[serde(default)]
    media: RawMedia,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    recording: RawRecording,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    call: RawCall,
    #[serde(default)]
    portal: RawPortal,
    #[serde(default)]
    pci: toml::Table,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    default: Option<String>,
    grace: Option<String>,
    tags: Option<std::collections::BTreeMap<String, String>>,
    custom_tags: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSip {
    listen: Option<String>,
    advertise: Option<String>,
    trusted: Option<Vec<String>>,
    agents: Option<Vec<String>>,
    max_message_size: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    rtp_ports: Option<String>,
    advertise: Option<String>,
    timeout: Option<String>,
    realtime_priority: Option<i64>,
    max_load: Option<i64>,
    shared_ports: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match")]
    matches: String,
    from: Option<String>,
    direction: Option<String>,
    target: String,
    announcement: Option<String>,
    record: Option<toml::Value>,
    answer: Option<AnswerMode>,
    on_announcement_failure: Option<AnnouncementFailure>,
    consent: Option<RawConsent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    prompt: String,
    decline_digit: Option<String>,
    training_digit: Option<String>,
    timeout: Option<String>,
    record_by_default: Option<bool>,
    training_by_default: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRecording {
    storage: Option<String>,
    flush: Option<String>,
    spool: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    upload_retry: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    kek_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    node: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCall {
    max_calls: Option<usize>,
    agent_answer_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPortal {
    listen: Option<String>,
    api_tokens_file: Option<String>,
}

/// Parses `"20ms"`, `"1s"`, `"10m"`, `"2h"`, `"183d"`, `"2y"` (365 d).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 20ms, 1s, 10m, 183d, 2y)"))?;
    let secs = |mult: u64| Duration::from_secs(n.saturating_mul(mult));
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "y" => secs(365 * 86_400),
        _ => return Err(format!("`{s}` has an unknown unit (use ms, s, m, h, d or y)")),
    })
}

impl Config {
    /// Loads `path`; a missing file at the default path gives the embedded defaults.
    pub fn load(path: &Path, allow_missing: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if allow_missing && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ConfigError::Read { file: path.to_owned(), source }),
        };
        Self::parse(&text, path)
    }

    /// Parses and checks config text; `file` is used in messages and to resolve nothing else.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key: key.to_owned(),
            message,
        };
        let dur = |key: &str, v: &Option<String>, default: Duration| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => parse_duration(s).map_err(|m| invalid(key, m)),
            }
        };

        let listen: SocketAddr = raw
            .sip
            .listen
            .as_deref()
            .unwrap_or("0.0.0.0:5060")
            .parse()
            .map_err(|_| invalid("sip.listen", "expected IP:port, e.g. \"0.0.0.0:5060\"".into()))?;
        let advertise: IpAddr = match &raw.sip.advertise {
            Some(s) => s
                .parse()
                .map_err(|_| invalid("sip.advertise", format!("`{s}` is not an IP address")))?,
            None if listen.ip().is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            None => listen.ip(),
        };
        let nets = |key: &str, list: &[String]| {
            list.iter()
                .map(|s| {
                    s.parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| invalid(key, format!("`{s}` is not a CIDR network")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let trusted = nets(
            "sip.trusted",
            &raw.sip.trusted.unwrap_or_else(|| vec!["127.0.0.0/8".into(), "::1/128".into()]),
        )?;
        let agents = nets("sip.agents", &raw.sip.agents.unwrap_or_default())?;
        let max_message_size = raw.sip.max_message_size.unwrap_or(16 * 1024);
        if !(1024..=65_535).contains(&max_message_size) {
            return Err(invalid("sip.max_message_size", "must be 1024..=65535".into()));
        }

        let rtp_ports = parse_port_range(raw.media.rtp_ports.as_deref().unwrap_or("20000-29999"))
            .map_err(|m| invalid("media.rtp_ports", m))?;
        let media_advertise: IpAddr = match &raw.media.advertise {
            Some(s) => s
                .parse()
                .map_err(|_| invalid("media.advertise", format!("`{s}` is not an IP address")))?,
            None => advertise,
        };

        let realtime_priority = match raw.media.realtime_priority.unwrap_or(0) {
            0 => None,
            p @ 1..=99 => Some(p as u8),
            p => {
                return Err(invalid(
                    "media.realtime_priority",
                    format!("{p} is not a real-time priority: 1..=99, or 0 for normal scheduling"),
                ));
            }
        };

        let max_load_percent = match raw.media.max_load.unwrap_or(90) {
            p @ 1..=100 => p as u8,
            p => {
                return Err(invalid(
                    "media.max_load",
                    format!("{p} is not a share of a media thread's time: 1..=100 (percent; 100 = off)"),
                ));
            }
        };

        let mut routes = Vec::new();
        for (i, r) in raw.route.into_iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            if !r.target.starts_with("sip:") {
                return Err(invalid(&key("target"), format!("`{}` is not a sip: URI", r.target)));
            }
            let called = NumberPattern::parse(&r.matches).map_err(|e| invalid(&key("match"), e.to_string()))?;
            let calling = match &r.from {
                Some(f) => Some(NumberPattern::parse(f).map_err(|e| invalid(&key("from"), e.to_string()))?),
                None => None,
            };
            let direction = match r.direction.as_deref() {
                None | Some("inbound") => CallDirection::Inbound,
                Some("outbound") => CallDirection::Outbound,
                Some(other) => {
                    return Err(invalid(&key("direction"), format!("`{other}`: use \"inbound\" or \"outbound\"")));
                }
            };
            let record = match &r.record {
                None | Some(toml::Value::Boolean(true)) => RecordPolicy::Always,
                Some(toml::Value::Boolean(false)) => RecordPolicy::Never,
                Some(toml::Value::String(s)) if s == "on-demand" => RecordPolicy::OnDemand,
                Some(other) => {
                    return Err(invalid(&key("record"), format!("`{other}`: use true, false or \"on-demand\"")));
                }
            };
            let consent = match r.consent {
                None => None,
                Some(c) => Some(parse_consent(c, record).map_err(|(k, m)| invalid(&key(&format!("consent.{k}")), m))?),
            };
            routes.push(Route {
                matches: r.matches,
                called,
                calling,
                direction,
                target: r.target,
                announcement: r.announcement.map(PathBuf::from),
                record,
                consent,
                answer: r.answer.unwrap_or(AnswerMode::EarlyMedia),
                on_announcement_failure: r
                    .on_announcement_failure
                    .unwrap_or(AnnouncementFailure::Hangup),
            });
        }
        if routes.iter().any(|r| r.direction == CallDirection::Outbound) && agents.is_empty() {
            return Err(invalid(
                "sip.agents",
                "outbound routes need the agents' networks here (calls from them are outbound)".into(),
            ));
        }

        let flush = dur("recording.flush", &raw.recording.flush, Duration::from_secs(1))?;
        if flush < Duration::from_millis(100) || flush > Duration::from_secs(60) {
            return Err(invalid("recording.flush", "must be between 100ms and 60s".into()));
        }

        let storage = raw.recording.storage.clone().unwrap_or_else(|| "recordings".into());
        if storage.trim().is_empty() {
            return Err(invalid("recording.storage", "must name a directory or an s3:// URL".into()));
        }
        let s3 = match parse_s3_url(&storage).map_err(|m| invalid("recording.storage", m))? {
            None => {
                for (key, v) in [
                    ("recording.spool", &raw.recording.spool),
                    ("recording.s3_endpoint", &raw.recording.s3_endpoint),
                    ("recording.s3_region", &raw.recording.s3_region),
                    ("recording.upload_retry", &raw.recording.upload_retry),
                ] {
                    if v.is_some() {
                        return Err(invalid(key, format!("only applies when recording.storage is an s3:// URL (it is `{storage}`)")));
                    }
                }
                None
            }
            Some((bucket, prefix)) => {
                if let Some(e) = &raw.recording.s3_endpoint {
                    let scheme_ok = ["http://", "https://"].iter().any(|p| e.len() > p.len() && e[..p.len()].eq_ignore_ascii_case(p));
                    if !scheme_ok || e.chars().any(char::is_whitespace) {
                        return Err(invalid("recording.s3_endpoint", format!("`{e}` is not an http:// or https:// URL")));
                    }
                }
                if let Some(r) = &raw.recording.s3_region
                    && (r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                {
                    return Err(invalid("recording.s3_region", format!("`{r}` is not a region name (e.g. eu-west-2)")));
                }
                let spool = PathBuf::from(raw.recording.spool.clone().unwrap_or_else(|| "data/spool".into()));
                if spool.as_os_str().is_empty() {
                    return Err(invalid("recording.spool", "must name a local directory".into()));
                }
                let upload_retry = dur("recording.upload_retry", &raw.recording.upload_retry, Duration::from_secs(30))?;
                if upload_retry < Duration::from_secs(1) || upload_retry > Duration::from_secs(3600) {
                    return Err(invalid("recording.upload_retry", "must be between 1s and 1h".into()));
                }
                Some(S3Config {
                    bucket,
                    prefix,
                    endpoint: raw.recording.s3_endpoint.clone(),
                    region: raw.recording.s3_region.clone(),
                    spool,
                    upload_retry,
                })
            }
        };

        let portal_listen = raw
            .portal
            .listen
            .as_deref()
            .unwrap_or("127.0.0.1:8080")
            .parse()
            .map_err(|_| invalid("portal.listen", "expected IP:port".into()))?;

        let retention = parse_retention(raw.retention).map_err(|(k, m)| invalid(&k, m))?;

        Ok(Config {
            file: file.to_owned(),
            sip: SipConfig { listen, advertise, trusted, agents, max_message_size },
            media: MediaConfig {
                rtp_ports,
                advertise: media_advertise,
                timeout: dur("media.timeout", &raw.media.timeout, Duration::from_secs(60))?,
                realtime_priority,
                max_load_percent,
                shared_ports: raw.media.shared_ports.unwrap_or(false),
            },
            routes,
            recording: RecordingConfig {
                storage,
                s3,
                flush,
            },
            keys: KeysConfig {
                kek_file: PathBuf::from(raw.keys.kek_file.unwrap_or_else(|| "data/kek.key".into())),
            },
            database: DatabaseConfig {
                url: raw
                    .database
                    .url
                    .unwrap_or_else(|| "sqlite://data/callgate.db?mode=rwc".into()),
                node: match raw.database.node {
                    None => host_name(),
                    Some(n) if valid_node(&n) => n,
                    Some(_) => {
                        return Err(invalid(
                            "database.node",
                            "1-64 characters of A-Z a-z 0-9 . _ -".into(),
                        ));
                    }
                },
            },
            call: CallConfig {
                max_calls: raw.call.max_calls.unwrap_or(2000),
                agent_answer_timeout: dur(
                    "call.agent_answer_timeout",
                    &raw.call.agent_answer_timeout,
                    Duration::from_secs(60),
                )?,
            },
            portal: PortalConfig {
                listen: portal_listen,
                api_tokens_file: PathBuf::from(raw.portal.api_tokens_file.unwrap_or_else(|| "data/api-tokens".into())),
            },
            pci: crate::pci::PciConfig::from_table(&raw.pci)
                .map_err(|e| invalid(&format!("pci.{}", e.key), e.message))?,
            retention,
        })
    }

    /// The route a call from `source` to `dialled` takes (see `call::routing`).
    pub fn route_for(&self, source: IpAddr, dialled: &str, calling: &str) -> Result<&Route, NoRoute> {
        crate::call::routing::select(&self.routes, self.sources(source), dialled, calling)
    }

    /// Which ways a call from `ip` may go: from the trunk (inbound), from the agents' side
    /// (outbound), both (a shared network: the routes decide) or neither (refused).
    pub fn sources(&self, ip: IpAddr) -> Sources {
        Sources {
            inbound: self.sip.trusted.iter().any(|n| n.contains(&ip)),
            outbound: self.sip.agents.iter().any(|n| n.contains(&ip)),
        }
    }
}

/// Checks `[route.consent]`; errors are (key, message).
fn parse_consent(c: RawConsent, record: RecordPolicy) -> Result<ConsentPolicy, (String, String)> {
    if record == RecordPolicy::Never {
        return Err(("prompt".into(), "a route with record = false records nothing to consent to".into()));
    }
    let digit = |k: &str, v: &Option<String>| -> Result<Option<crate::pci::Digit>, (String, String)> {
        match v {
            None => Ok(None),
            Some(s) => {
                let mut chars = s.trim().chars();
                match (chars.next().and_then(crate::pci::Digit::from_char), chars.next()) {
                    (Some(d), None) => Ok(Some(d)),
                    _ => Err((k.into(), format!("`{s}` is not one keypad key (0-9, *, #)"))),
                }
            }
        }
    };
    let decline_digit = digit("decline_digit", &c.decline_digit)?;
    let training_digit = digit("training_digit", &c.training_digit)?;
    if decline_digit.is_none() && training_digit.is_none() {
        return Err(("decline_digit".into(), "a consent prompt needs decline_digit, training_digit or both".into()));
    }
    if decline_digit.is_some() && decline_digit == training_digit {
        return Err(("training_digit".into(), "must differ from decline_digit".into()));
    }
    let timeout = match &c.timeout {
        None => Duration::from_secs(5),
        Some(s) => parse_duration(s).map_err(|m| ("timeout".to_string(), m))?,
    };
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(60) {
        return Err(("timeout".into(), "must be between 1s and 60s".into()));
    }
    Ok(ConsentPolicy {
        prompt: PathBuf::from(c.prompt),
        keys: ConsentKeys { decline: decline_digit, training: training_digit },
        timeout,
        record_by_default: c.record_by_default.unwrap_or(true),
        training_by_default: c.training_by_default.unwrap_or(false),
    })
}

/// Checks `[retention]`; errors are (key, message).
fn parse_retention(raw: RawRetention) -> Result<RetentionConfig, (String, String)> {
    let defaults = RetentionConfig::default();
    // Longer than this is certainly a typo (and would overflow millisecond arithmetic sooner or later).
    const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);
    let dur = |key: &str, v: &str, min: Duration| -> Result<Duration, (String, String)> {
        let d = parse_duration(v).map_err(|m| (key.to_string(), m))?;
        if d < min || d > MAX {
            return Err((
                key.to_string(),
                format!("`{v}` is out of range ({}..=100y)", if min.is_zero() { "0s" } else { "1s" }),
            ));
        }
        Ok(d)
    };
    let default = match &raw.default {
        Some(v) => dur("retention.default", v, Duration::from_secs(1))?,
        None => defaults.default,
    };
    let grace = match &raw.grace {
        Some(v) => dur("retention.grace", v, Duration::ZERO)?,
        None => defaults.grace,
    };
    let custom_tags = raw.custom_tags.unwrap_or_default();
    for (i, t) in custom_tags.iter().enumerate() {
        if !valid_tag_name(t) {
            return Err((
                format!("retention.custom_tags[{i}]"),
                format!("`{t}` is not a tag name (1-32 characters of a-z 0-9 -, starting with a letter)"),
            ));
        }
        if BUILTIN_TAGS.contains(&t.as_str()) || custom_tags[..i].contains(t) {
            return Err((
                format!("retention.custom_tags[{i}]"),
                format!("`{t}` is listed twice (or is a built-in tag)"),
            ));
        }
    }
    let tags = match raw.tags {
        None => defaults.tags,
        Some(map) => {
            let mut tags = std::collections::BTreeMap::new();
            for (name, v) in map {
                let key = format!("retention.tags.{name}");
                if !BUILTIN_TAGS.contains(&name.as_str()) && !custom_tags.contains(&name) {
                    return Err((
                        key,
                        format!(
                            "unknown tag `{name}` (built in: {}; add others to retention.custom_tags)",
                            BUILTIN_TAGS.join(", ")
                        ),
                    ));
                }
                let rule = if v == "until-released" {
                    TagRetention::UntilReleased
                } else {
                    TagRetention::Period(dur(&key, &v, Duration::from_secs(1)).map_err(|(k, m)| {
                        (k, format!("{m}; expected a duration like \"365d\" or \"until-released\""))
                    })?)
                };
                tags.insert(name, rule);
            }
            tags
        }
    };
    Ok(RetentionConfig { default, grace, tags, custom_tags })
}

/// Tag names: `[a-z][a-z0-9-]{0,31}`.
pub fn valid_tag_name(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{s}` is not a port range like \"20000-29999\"");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a < 1024 || b < a || b - a < 3 {
        return Err(format!("`{s}`: need at least 4 ports, all ≥ 1024, low-high"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_embedded_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.sip.listen, "0.0.0.0:5060".parse().unwrap());
        assert_eq!(c.media.rtp_ports, (20000, 29999));
        assert_eq!(c.recording.storage, "recordings");
        assert_eq!(c.recording.flush, Duration::from_secs(1));
        assert_eq!(c.database.url, "sqlite://data/callgate.db?mode=rwc");
        assert_eq!(c.keys.kek_file, PathBuf::from("data/kek.key"));
        assert!(c.routes.is_empty());
    }

    #[test]
    fn the_documented_example_parses() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/callgate.toml"))
            .unwrap();
        let c = parse(&text).unwrap();
        assert!(!c.routes.is_empty());
        assert!(c.route_for(LO, "0800123456", "07700900123").is_ok());
    }

    #[test]
    fn database_node_defaults_to_the_host_name_and_is_checked() {
        assert_eq!(parse("").unwrap().database.node, host_name());
        assert_eq!(parse("[database]\nnode = \"gw-2.site\"").unwrap().database.node, "gw-2.site");
        for bad in ["", "a b", "x/y"] {
            let e = parse(&format!("[database]\nnode = \"{bad}\"")).unwrap_err().to_string();
            assert!(e.contains("database.node"), "{e}");
        }
    }

    #[test]
    fn s3_storage_is_parsed_with_its_companion_keys() {
        let c = parse(
            "[recording]\nstorage = \"s3://calls-eu.example/site-1/rec/\"\n\
             s3_endpoint = \"http://127.0.0.1:9000\"\ns3_region = \"eu-west-2\"\nspool = \"/var/spool/callgate\"\n\
             upload_retry = \"5s\"",
        )
        .unwrap();
        assert_eq!(
            c.recording.s3,
            Some(S3Config {
                bucket: "calls-eu.example".into(),
                prefix: "site-1/rec".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("eu-west-2".into()),
                spool: PathBuf::from("/var/spool/callgate"),
                upload_retry: Duration::from_secs(5),
            })
        );
        let c = parse("[recording]\nstorage = \"S3://calls\"").unwrap();
        let s3 = c.recording.s3.unwrap();
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("calls", ""));
        assert_eq!(s3.spool, PathBuf::from("data/spool"));
        assert_eq!(s3.upload_retry, Duration::from_secs(30));
        assert!(parse("").unwrap().recording.s3.is_none());
    }

    #[test]
    fn bad_s3_settings_name_the_key() {
        for (text, key) in [
            ("storage = \"s3://\"", "recording.storage"),
            ("storage = \"s3://Calls\"", "recording.storage"),
            ("storage = \"s3://calls/a/../b\"", "recording.storage"),
            ("storage = \"s3://calls/a//b\"", "recording.storage"),
            ("storage = \"\"", "recording.storage"),
            ("storage = \"s3://calls\"\ns3_endpoint = \"ftp://x\"", "recording.s3_endpoint"),
            ("storage = \"s3://calls\"\ns3_region = \"eu west\"", "recording.s3_region"),
            ("storage = \"s3://calls\"\nspool = \"\"", "recording.spool"),
            ("storage = \"s3://calls\"\nupload_retry = \"100ms\"", "recording.upload_retry"),
            ("storage = \"recordings\"\nupload_retry = \"5s\"", "recording.upload_retry"),
            ("storage = \"recordings\"\ns3_region = \"eu-west-2\"", "recording.s3_region"),
            ("storage = \"recordings\"\nspool = \"x\"", "recording.spool"),
        ] {
            let e = parse(&format!("[recording]\n{text}")).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("test.toml"), "{text}: {e}");
        }
    }

    const LO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn routes_first_match_wins() {
        let c = parse(
            r#"
            [[route]]
            match = "2001"
            target = "sip:a@127.0.0.1:5081"
            [[route]]
            match = "*"
            target = "sip:b@127.0.0.1:5082"
            record = false
            answer = "immediate"
            "#,
        )
        .unwrap();
        assert_eq!(c.route_for(LO, "2001", "1").unwrap().target, "sip:a@127.0.0.1:5081");
        let other = c.route_for(LO, "999", "1").unwrap();
        assert_eq!(other.target, "sip:b@127.0.0.1:5082");
        assert_eq!(other.record, RecordPolicy::Never);
        assert_eq!(other.answer, AnswerMode::Immediate);
    }

    #[test]
    fn outbound_routes_record_policies_and_consent() {
        let c = parse(
            r#"
            [sip]
            trusted = ["127.0.0.2"]
            agents = ["127.0.0.3/32"]
            [[route]]
            match = "07*"
            direction = "outbound"
            target = "sip:127.0.0.1:5090"
            record = "on-demand"
            [[route]]
            match = "2001"
            target = "sip:rent@127.0.0.1:5081"
            announcement = "a.wav"
            [route.consent]
            prompt = "consent.wav"
            decline_digit = "9"
            training_digit = "1"
            timeout = "4s"
            "#,
        )
        .unwrap();
        let trunk: IpAddr = "127.0.0.2".parse().unwrap();
        let agent: IpAddr = "127.0.0.3".parse().unwrap();
        let out = c.route_for(agent, "07700900123", "3001").unwrap();
        assert_eq!(out.direction, CallDirection::Outbound);
        assert_eq!(out.record, RecordPolicy::OnDemand);
        assert!(out.consent.is_none());
        assert_eq!(c.route_for(trunk, "07700900123", "1"), Err(NoRoute::NoMatch));
        assert_eq!(c.route_for(LO, "2001", "1"), Err(NoRoute::UntrustedSource));
        let rent = c.route_for(trunk, "2001", "1").unwrap();
        let consent = rent.consent.as_ref().unwrap();
        assert_eq!(consent.timeout, Duration::from_secs(4));
        assert!(consent.record_by_default && !consent.training_by_default);
        assert_eq!(consent.keys.key_for(crate::pci::Digit::from_char('9').unwrap()), Some(crate::call::consent::ConsentKey::DeclineRecording));
    }

    #[test]
    fn bad_direction_record_and_consent_values_name_their_key() {
        let route = |extra: &str| format!("[sip]\nagents = [\"10.0.0.0/8\"]\n[[route]]\nmatch = \"*\"\ntarget = \"sip:a@b\"\n{extra}");
        for (extra, key) in [
            ("direction = \"sideways\"", "route[0].direction"),
            ("record = \"sometimes\"", "route[0].record"),
            ("record = 1", "route[0].record"),
            ("[route.consent]\nprompt = \"p.wav\"", "route[0].consent.decline_digit"),
            ("[route.consent]\nprompt = \"p.wav\"\ndecline_digit = \"99\"", "route[0].consent.decline_digit"),
            ("[route.consent]\nprompt = \"p.wav\"\ndecline_digit = \"9\"\ntraining_digit = \"9\"", "route[0].consent.training_digit"),
            ("[route.consent]\nprompt = \"p.wav\"\ndecline_digit = \"9\"\ntimeout = \"2m\"", "route[0].consent.timeout"),
            ("record = false\n[route.consent]\nprompt = \"p.wav\"\ndecline_digit = \"9\"", "route[0].consent.prompt"),
        ] {
            let e = parse(&route(extra)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("test.toml"), "{extra}: {e}");
        }
        // Outbound routes without agent networks could never be taken.
        let e = parse("[[route]]\nmatch = \"*\"\ndirection = \"outbound\"\ntarget = \"sip:a@b\"").unwrap_err().to_string();
        assert!(e.contains("sip.agents"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let e = parse("[media]\nrtp_ports = \"30000\"").unwrap_err().to_string();
        assert!(e.contains("media.rtp_ports") && e.contains("test.toml"), "{e}");
        for bad in ["100", "-1"] {
            let e = parse(&format!("[media]\nrealtime_priority = {bad}")).unwrap_err().to_string();
            assert!(e.contains("media.realtime_priority") && e.contains("test.toml"), "{e}");
        }
        assert_eq!(parse("[media]\nrealtime_priority = 0").unwrap().media.realtime_priority, None);
        assert_eq!(parse("[media]\nrealtime_priority = 20").unwrap().media.realtime_priority, Some(20));
        for bad in ["0", "101", "-5"] {
            let e = parse(&format!("[media]\nmax_load = {bad}")).unwrap_err().to_string();
            assert!(e.contains("media.max_load") && e.contains("test.toml"), "{e}");
        }
        assert_eq!(parse("").unwrap().media.max_load_percent, 90);
        assert_eq!(parse("[media]\nmax_load = 100").unwrap().media.max_load_percent, 100);
        assert!(!parse("").unwrap().media.shared_ports);
        assert!(parse("[media]\nshared_ports = true").unwrap().media.shared_ports);
        let e = parse("[media]\nshared_ports = \"yes\"").unwrap_err().to_string();
        assert!(e.contains("shared_ports") && e.contains("test.toml"), "{e}");
        let e = parse("[recording]\nflush = \"1 fortnight\"").unwrap_err().to_string();
        assert!(e.contains("recording.flush"), "{e}");
        let e = parse("[sip]\ntrusted = [\"10.0.0.0/33\"]").unwrap_err().to_string();
        assert!(e.contains("sip.trusted"), "{e}");
        let e = parse("[[route]]\nmatch = \"*\"\ntarget = \"http://x\"").unwrap_err().to_string();
        assert!(e.contains("route[0].target"), "{e}");
        let e = parse("[[route]]\nmatch = \"08*00\"\ntarget = \"sip:a@b\"").unwrap_err().to_string();
        assert!(e.contains("route[0].match"), "{e}");
        let e = parse("[[route]]\nmatch = \"*\"\nfrom = \"x y#\"\ntarget = \"sip:a@b\"").unwrap_err().to_string();
        assert!(e.contains("route[0].from"), "{e}");
        // Unknown keys are typos, not silently ignored.
        let e = parse("[sip]\nlisen = \"0.0.0.0:5060\"").unwrap_err().to_string();
        assert!(e.contains("lisen") && e.contains("test.toml"), "{e}");
    }

    #[test]
    fn pci_keys_are_checked() {
        let c = parse("[pci]\npause_digits = \"*1\"\nmax_pause = \"5m\"").unwrap();
        assert_eq!(c.pci.max_pause, Duration::from_secs(300));
        let e = parse("[pci]\nmax_pause = \"soon\"").unwrap_err().to_string();
        assert!(e.contains("pci.max_pause") && e.contains("test.toml"), "{e}");
        let e = parse("[pci]\npause_digit = \"*1\"").unwrap_err().to_string();
        assert!(e.contains("pci.pause_digit"), "{e}");
    }

    #[test]
    fn retention_section() {
        let c = parse("").unwrap();
        assert_eq!(c.retention, RetentionConfig::default());
        let c = parse(
            "[retention]\ndefault = \"90d\"\ngrace = \"0s\"\ncustom_tags = [\"threatening\"]\n\
             tags = { training = \"365d\", threatening = \"until-released\" }\n",
        )
        .unwrap();
        assert_eq!(c.retention.default, Duration::from_secs(90 * 86_400));
        assert_eq!(c.retention.grace, Duration::ZERO);
        assert_eq!(
            c.retention.tags.get("training"),
            Some(&TagRetention::Period(Duration::from_secs(365 * 86_400)))
        );
        assert_eq!(c.retention.tags.get("threatening"), Some(&TagRetention::UntilReleased));
        assert!(!c.retention.tags.contains_key("abusive"), "explicit tags replace the defaults");
        assert!(c.retention.is_known_tag("threatening") && c.retention.is_known_tag("evidence"));
        assert!(!c.retention.is_known_tag("spam"));
        let cases = [
            ("[retention]\ndefault = \"forever\"", "retention.default"),
            ("[retention]\ndefault = \"0d\"", "retention.default"),
            ("[retention]\ngrace = \"-1d\"", "retention.grace"),
            ("[retention]\ntags = { trainig = \"365d\" }", "retention.tags.trainig"),
            ("[retention]\ntags = { training = \"until-release\" }", "retention.tags.training"),
            ("[retention]\ncustom_tags = [\"Bad Tag\"]", "retention.custom_tags[0]"),
            ("[retention]\ncustom_tags = [\"abusive\"]", "retention.custom_tags[0]"),
            ("[retention]\ndefualt = \"1d\"", "defualt"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("test.toml"), "{text}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("183d").unwrap(), Duration::from_secs(183 * 86_400));
        assert_eq!(parse_duration("2y").unwrap(), Duration::from_secs(730 * 86_400));
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }
}
