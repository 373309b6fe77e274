//! The retention decision, sans-IO: a recording's creation time, its tags and its legal holds
//! (each with their times) and the configured rules in; its expiry and the rule that decides it
//! out. No clock: times are inputs, and "is it expired?" is [`Decision::is_expired`]`(now)`.
//!
//! Rules (the longest applicable one wins):
//! * `default`: created + `[retention] default`.
//! * A tag with a period (`training = "365d"`), while on the recording: created + period. A
//!   removed period tag no longer applies.
//! * An `until-released` tag (`abusive`) while on the recording: kept indefinitely (an open
//!   investigation). Once removed: removed + `grace`.
//! * A legal hold, while open: kept indefinitely. Once released: released + `grace`.
//!
//! Tags without a rule (a custom tag, or `complaint` when `tags` does not name it) do not change
//! retention. On a tie the more specific rule is reported (hold, then tag, then default).

use std::collections::BTreeMap;
use std::fmt;

use crate::config::{RetentionConfig, TagRetention};

/// Milliseconds per unit, for rule descriptions.
const DAY_MS: i64 = 86_400_000;

/// A tag as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagState {
    pub tag: String,
    pub added_at_ms: i64,
    /// When it was removed; `None` while on the recording.
    pub removed_at_ms: Option<i64>,
}

/// A legal hold covering the recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldState {
    pub case_ref: String,
    /// When released; `None` while open.
    pub released_at_ms: Option<i64>,
}

/// Everything the decision depends on, apart from the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    pub created_at_ms: i64,
    pub tags: Vec<TagState>,
    pub holds: Vec<HoldState>,
}

/// The rule that decided a recording's expiry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// The configured default period.
    Default { period_ms: i64 },
    /// A tag with a period.
    Tag { tag: String, period_ms: i64 },
    /// An until-released tag, removed: grace after its removal.
    TagReleased { tag: String, grace_ms: i64 },
    /// An until-released tag still on the recording: kept indefinitely.
    TagOpen { tag: String },
    /// A released legal hold: grace after its release.
    HoldReleased { case_ref: String, grace_ms: i64 },
    /// An open legal hold: kept indefinitely, never swept nor erased.
    HoldOpen { case_ref: String },
}

impl Rule {
    /// Priority on ties: the more specific rule is reported.
    fn specificity(&self) -> u8 {
        match self {
            Rule::Default { .. } => 0,
            Rule::Tag { .. } => 1,
            Rule::TagReleased { .. } => 2,
            Rule::TagOpen { .. } => 3,
            Rule::HoldReleased { .. } => 4,
            Rule::HoldOpen { .. } => 5,
        }
    }
}

/// `183d`, `36h`, `90s`, `250ms`: the largest unit that divides evenly.
pub fn fmt_ms(ms: i64) -> String {
    for (unit, n) in [("d", DAY_MS), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms != 0 && ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

impl fmt::Display for Rule {
    /// The stored form (`recordings.retention_rule`, tombstones): no personal data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Default { period_ms } => write!(f, "default:{}", fmt_ms(*period_ms)),
            Rule::Tag { tag, period_ms } => write!(f, "tag:{tag}:{}", fmt_ms(*period_ms)),
            Rule::TagReleased { tag, grace_ms } => {
                write!(f, "tag-released:{tag}+grace:{}", fmt_ms(*grace_ms))
            }
            Rule::TagOpen { tag } => write!(f, "tag-open:{tag}"),
            Rule::HoldReleased { case_ref, grace_ms } => {
                write!(f, "hold-released:{case_ref}+grace:{}", fmt_ms(*grace_ms))
            }
            Rule::HoldOpen { case_ref } => write!(f, "hold:{case_ref}"),
        }
    }
}

/// The outcome for one recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// When it may be deleted (Unix ms); `None` = kept indefinitely.
    pub expires_at_ms: Option<i64>,
    pub rule: Rule,
    /// An open legal hold covers it (the first case reference, by name).
    pub held_by: Option<String>,
}

impl Decision {
    /// Expired at `now` iff `now >= expires_at_ms` (so exactly at expiry it is expired).
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.held_by.is_none() && self.expires_at_ms.is_some_and(|e| now_ms >= e)
    }
}

/// The configured rules in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub default_ms: i64,
    pub grace_ms: i64,
    /// `None` = until-released.
    pub tags: BTreeMap<String, Option<i64>>,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Policy {
    pub fn from_config(c: &RetentionConfig) -> Policy {
        Policy {
            default_ms: ms(c.default),
            grace_ms: ms(c.grace),
            tags: c
                .tags
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        match v {
                            TagRetention::Period(d) => Some(ms(*d)),
                            TagRetention::UntilReleased => None,
                        },
                    )
                })
                .collect(),
        }
    }

    /// A short fingerprint of the rules: stored beside each computed expiry, so a changed
    /// configuration makes the sweeper recompute.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut s = format!("v1;default={};grace={}", self.default_ms, self.grace_ms);
        for (k, v) in &self.tags {
            match v {
                Some(p) => s.push_str(&format!(";{k}={p}")),
                None => s.push_str(&format!(";{k}=until-released")),
            }
        }
        crate::audit::hex(&Sha256::digest(s.as_bytes())[..8])
    }

    /// The decision for one recording. Longest applicable rule wins.
    pub fn decide(&self, inputs: &Inputs) -> Decision {
        // (expiry or None = indefinite, rule)
        let mut best: (Option<i64>, Rule) = (
            Some(inputs.created_at_ms.saturating_add(self.default_ms)),
            Rule::Default {
                period_ms: self.default_ms,
            },
        );
        let mut consider = |exp: Option<i64>, rule: Rule| {
            let longer = match (exp, best.0) {
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => {
                    a > b || (a == b && rule.specificity() > best.1.specificity())
                }
                (None, None) => rule.specificity() > best.1.specificity(),
            };
            if longer {
                best = (exp, rule);
            }
        };
        // Sorted so equal candidates resolve the same way whatever order the store returned.
        let mut tags: Vec<&TagState> = inputs.tags.iter().collect();
        tags.sort_by(|a, b| a.tag.cmp(&b.tag));
        for t in tags {
            match (self.tags.get(&t.tag), t.removed_at_ms) {
                (None, _) => {}
                (Some(Some(period)), None) => consider(
                    Some(inputs.created_at_ms.saturating_add(*period)),
                    Rule::Tag {
                        tag: t.tag.clone(),
                        period_ms: *period,
                    },
                ),
                (Some(Some(_)), Some(_)) => {}
                (Some(None), None) => consider(None, Rule::TagOpen { tag: t.tag.clone() }),
                (Some(None), Some(removed)) => consider(
                    Some(removed.saturating_add(self.grace_ms)),
                    Rule::TagReleased {
                        tag: t.tag.clone(),
                        grace_ms: self.grace_ms,
                    },
                ),
            }
        }
        let mut holds: Vec<&HoldState> = inputs.holds.iter().collect();
        holds.sort_by(|a, b| a.case_ref.cmp(&b.case_ref));
        let held_by = holds
            .iter()
            .find(|h| h.released_at_ms.is_none())
            .map(|h| h.case_ref.clone());
        for h in holds {
            match h.released_at_ms {
                None => consider(
                    None,
                    Rule::HoldOpen {
                        case_ref: h.case_ref.clone(),
                    },
                ),
                Some(r) => consider(
                    Some(r.saturating_add(self.grace_ms)),
                    Rule::HoldReleased {
                        case_ref: h.case_ref.clone(),
                        grace_ms: self.grace_ms,
                    },
                ),
            }
        }
        // An open hold is always reported as the rule (it is what blocks erasure too).
        let rule = match &held_by {
            Some(case_ref) if !matches!(best.1, Rule::HoldOpen { .. }) => Rule::HoldOpen {
                case_ref: case_ref.clone(),
            },
            _ => best.1,
        };
        Decision {
            expires_at_ms: if held_by.is_some() { None } else { best.0 },
            rule,
            held_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = DAY_MS;
    const T0: i64 = 1_700_000_000_000;

    fn policy() -> Policy {
        Policy {
            default_ms: 183 * D,
            grace_ms: 30 * D,
            tags: [
                ("training".to_string(), Some(365 * D)),
                ("complaint".to_string(), Some(730 * D)),
                ("abusive".to_string(), None),
                ("evidence".to_string(), None),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn tag(name: &str, added: i64, removed: Option<i64>) -> TagState {
        TagState {
            tag: name.into(),
            added_at_ms: added,
            removed_at_ms: removed,
        }
    }
    fn hold(case: &str, released: Option<i64>) -> HoldState {
        HoldState {
            case_ref: case.into(),
            released_at_ms: released,
        }
    }

    /// One row: inputs, the expected expiry and rule text.
    struct Case {
        name: &'static str,
        tags: Vec<TagState>,
        holds: Vec<HoldState>,
        expires: Option<i64>,
        rule: &'static str,
    }

    #[test]
    fn decisions_table() {
        let cases = vec![
            Case {
                name: "no tags: default",
                tags: vec![],
                holds: vec![],
                expires: Some(T0 + 183 * D),
                rule: "default:183d",
            },
            Case {
                name: "training: longer than default",
                tags: vec![tag("training", T0 + D, None)],
                holds: vec![],
                expires: Some(T0 + 365 * D),
                rule: "tag:training:365d",
            },
            Case {
                name: "training + complaint: the longest wins",
                tags: vec![tag("complaint", T0, None), tag("training", T0, None)],
                holds: vec![],
                expires: Some(T0 + 730 * D),
                rule: "tag:complaint:730d",
            },
            Case {
                name: "removed period tag no longer applies",
                tags: vec![tag("training", T0, Some(T0 + 2 * D))],
                holds: vec![],
                expires: Some(T0 + 183 * D),
                rule: "default:183d",
            },
            Case {
                name: "tag without a rule changes nothing",
                tags: vec![tag("threatening", T0, None)],
                holds: vec![],
                expires: Some(T0 + 183 * D),
                rule: "default:183d",
            },
            Case {
                name: "open until-released tag keeps indefinitely",
                tags: vec![tag("abusive", T0, None), tag("complaint", T0, None)],
                holds: vec![],
                expires: None,
                rule: "tag-open:abusive",
            },
            Case {
                name: "released until-released tag early: default still longer",
                tags: vec![tag("abusive", T0, Some(T0 + 10 * D))],
                holds: vec![],
                expires: Some(T0 + 183 * D),
                rule: "default:183d",
            },
            Case {
                name: "released until-released tag late: grace after release",
                tags: vec![tag("abusive", T0, Some(T0 + 400 * D))],
                holds: vec![],
                expires: Some(T0 + 430 * D),
                rule: "tag-released:abusive+grace:30d",
            },
            Case {
                name: "one of two until-released tags still open",
                tags: vec![
                    tag("abusive", T0, Some(T0 + 400 * D)),
                    tag("evidence", T0, None),
                ],
                holds: vec![],
                expires: None,
                rule: "tag-open:evidence",
            },
            Case {
                name: "open hold beats everything",
                tags: vec![tag("abusive", T0, None)],
                holds: vec![hold("INQ-2005-7", None)],
                expires: None,
                rule: "hold:INQ-2005-7",
            },
            Case {
                name: "released hold: grace after release",
                tags: vec![],
                holds: vec![hold("CASE-1", Some(T0 + 500 * D))],
                expires: Some(T0 + 530 * D),
                rule: "hold-released:CASE-1+grace:30d",
            },
            Case {
                name: "released hold early: default longer",
                tags: vec![],
                holds: vec![hold("CASE-1", Some(T0 + 5 * D))],
                expires: Some(T0 + 183 * D),
                rule: "default:183d",
            },
            Case {
                name: "one released, one open hold: held by the open one",
                tags: vec![],
                holds: vec![hold("A-1", Some(T0 + 5 * D)), hold("B-2", None)],
                expires: None,
                rule: "hold:B-2",
            },
            Case {
                name: "released hold vs complaint tag: longest",
                tags: vec![tag("complaint", T0, None)],
                holds: vec![hold("A-1", Some(T0 + 600 * D))],
                expires: Some(T0 + 730 * D),
                rule: "tag:complaint:730d",
            },
            Case {
                name: "tie between tag and hold grace: the hold is reported",
                tags: vec![tag("training", T0, None)],
                holds: vec![hold("A-1", Some(T0 + 335 * D))],
                expires: Some(T0 + 365 * D),
                rule: "hold-released:A-1+grace:30d",
            },
        ];
        let p = policy();
        for c in cases {
            let d = p.decide(&Inputs {
                created_at_ms: T0,
                tags: c.tags,
                holds: c.holds,
            });
            assert_eq!(d.expires_at_ms, c.expires, "{}", c.name);
            assert_eq!(d.rule.to_string(), c.rule, "{}", c.name);
            assert_eq!(
                d.held_by.is_some(),
                c.rule.starts_with("hold:"),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn clock_edges() {
        let p = policy();
        let cases: Vec<(&str, Inputs, i64)> = vec![
            (
                "default",
                Inputs {
                    created_at_ms: T0,
                    ..Default::default()
                },
                T0 + 183 * D,
            ),
            (
                "released tag + grace",
                Inputs {
                    created_at_ms: T0,
                    tags: vec![tag("abusive", T0, Some(T0 + 300 * D))],
                    holds: vec![],
                },
                T0 + 330 * D,
            ),
            (
                "released hold + grace",
                Inputs {
                    created_at_ms: T0,
                    tags: vec![],
                    holds: vec![hold("X", Some(T0 + 200 * D))],
                },
                T0 + 230 * D,
            ),
        ];
        for (name, inputs, at) in cases {
            let d = p.decide(&inputs);
            assert_eq!(d.expires_at_ms, Some(at), "{name}");
            assert!(!d.is_expired(at - 1), "{name}: 1 ms before");
            assert!(d.is_expired(at), "{name}: exactly at expiry");
            assert!(d.is_expired(at + 1), "{name}: 1 ms after");
        }
        // Held or open: never expired, however late.
        for inputs in [
            Inputs {
                created_at_ms: T0,
                tags: vec![],
                holds: vec![hold("X", None)],
            },
            Inputs {
                created_at_ms: T0,
                tags: vec![tag("evidence", T0, None)],
                holds: vec![],
            },
        ] {
            let d = p.decide(&inputs);
            assert!(!d.is_expired(i64::MAX));
        }
    }

    #[test]
    fn zero_grace_and_extreme_times_do_not_overflow() {
        let mut p = policy();
        p.grace_ms = 0;
        let d = p.decide(&Inputs {
            created_at_ms: T0,
            tags: vec![],
            holds: vec![hold("X", Some(T0 + 500 * D))],
        });
        assert_eq!(d.expires_at_ms, Some(T0 + 500 * D));
        assert!(d.is_expired(T0 + 500 * D));
        let d = p.decide(&Inputs {
            created_at_ms: i64::MAX - 5,
            ..Default::default()
        });
        assert_eq!(d.expires_at_ms, Some(i64::MAX));
    }

    #[test]
    fn fingerprint_changes_with_the_rules() {
        let a = policy();
        let mut b = policy();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.grace_ms += 1;
        assert_ne!(a.fingerprint(), b.fingerprint());
        let mut c = policy();
        c.tags.insert("training".into(), None);
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn from_config_defaults() {
        let p = Policy::from_config(&RetentionConfig::default());
        assert_eq!(p.default_ms, 183 * D);
        assert_eq!(p.grace_ms, 30 * D);
        assert_eq!(p.tags.get("abusive"), Some(&None));
        assert_eq!(fmt_ms(183 * D), "183d");
        assert_eq!(fmt_ms(90_000), "90s");
        assert_eq!(fmt_ms(1), "1ms");
        assert_eq!(fmt_ms(0), "0ms");
    }
}
