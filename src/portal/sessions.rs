//! Signed-in sessions, sign-in throttling and playback grants, sans-IO: every method takes the
//! wall clock (`now_ms`) as input and nothing here touches a socket, a file or the clock.
//!
//! * A session is a 256-bit random token in an `HttpOnly`, `SameSite=Strict` cookie. It ends
//!   after [`IDLE_MS`] without a request, [`ABSOLUTE_MS`] after sign-in, at sign-out, or when
//!   the account changes (checked by the shell on every request).
//! * Each session has its own form token (CSRF): every POST must carry it.
//! * After [`MAX_FAILURES`] wrong passwords for one name within [`FAILURE_WINDOW_MS`], that
//!   name is locked for [`LOCKOUT_MS`] (right password or not).
//! * A playback grant lets one session stream (and seek in) one recording for [`GRANT_MS`]
//!   after one audited play; the shell keeps the rendered audio in the grant (`G`).

use std::collections::HashMap;

use crate::audit::Role;
use crate::ids::RecordingId;

pub const IDLE_MS: i64 = 30 * 60 * 1000;
pub const ABSOLUTE_MS: i64 = 10 * 60 * 60 * 1000;
pub const GRANT_MS: i64 = 30 * 60 * 1000;
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW_MS: i64 = 15 * 60 * 1000;
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;
/// Sessions held at once; at the limit the least recently used one ends.
pub const MAX_SESSIONS: usize = 10_000;
/// Recordings one session can have open for playback at once (each holds a rendered file).
pub const MAX_GRANTS: usize = 4;
/// Names whose failures are remembered; at the limit the oldest record is dropped.
const MAX_THROTTLED: usize = 10_000;

/// Who a session belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub user: String,
    pub role: Role,
    /// The password's stamp at sign-in: a newer one (password changed) ends the session.
    pub password_set_at_ms: i64,
}

struct Grant<G> {
    rec: RecordingId,
    expires_ms: i64,
    payload: G,
}

struct Session<G> {
    who: Who,
    csrf: String,
    created_ms: i64,
    last_ms: i64,
    grants: Vec<Grant<G>>,
}

/// A live session as a request sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub who: Who,
    pub csrf: String,
}

#[derive(Clone, Copy, Debug, Default)]
struct Failures {
    count: u32,
    first_ms: i64,
    locked_until_ms: i64,
}

/// Why sign-in was not even tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locked {
    pub retry_after_ms: i64,
}

/// Every session of one gateway process (sessions do not survive a restart).
pub struct Sessions<G> {
    live: HashMap<String, Session<G>>,
    failures: HashMap<String, Failures>,
}

impl<G: Clone> Default for Sessions<G> {
    fn default() -> Self {
        Sessions {
            live: HashMap::new(),
            failures: HashMap::new(),
        }
    }
}

impl<G: Clone> Sessions<G> {
    /// `Err` if `name` is locked out now.
    pub fn may_try(&self, name: &str, now_ms: i64) -> Result<(), Locked> {
        match self.failures.get(name) {
            Some(f) if f.locked_until_ms > now_ms => Err(Locked {
                retry_after_ms: f.locked_until_ms - now_ms,
            }),
            _ => Ok(()),
        }
    }

    /// Counts a wrong password for `name`; `true` if this one locked it.
    pub fn failed(&mut self, name: &str, now_ms: i64) -> bool {
        if !self.failures.contains_key(name) && self.failures.len() >= MAX_THROTTLED {
            let oldest = self
                .failures
                .iter()
                .min_by_key(|(_, f)| f.first_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.failures.remove(&k);
            }
        }
        let f = self.failures.entry(name.to_string()).or_default();
        if now_ms - f.first_ms > FAILURE_WINDOW_MS {
            *f = Failures {
                count: 0,
                first_ms: now_ms,
                locked_until_ms: f.locked_until_ms,
            };
        }
        f.count += 1;
        if f.count >= MAX_FAILURES {
            f.locked_until_ms = now_ms + LOCKOUT_MS;
            f.count = 0;
            f.first_ms = now_ms;
            return true;
        }
        false
    }

    /// Starts a session; `token` and `csrf` are fresh random strings from the shell.
    pub fn start(&mut self, who: Who, token: String, csrf: String, now_ms: i64) {
        self.failures.remove(&who.user);
        self.expire(now_ms);
        if self.live.len() >= MAX_SESSIONS
            && let Some(k) = self
                .live
                .iter()
                .min_by_key(|(_, s)| s.last_ms)
                .map(|(k, _)| k.clone())
        {
            self.live.remove(&k);
        }
        self.live.insert(
            token,
            Session {
                who,
                csrf,
                created_ms: now_ms,
                last_ms: now_ms,
                grants: Vec::new(),
            },
        );
    }

    /// The live session of `token`, touched (its idle timer restarts); `None` if unknown or
    /// timed out (then it is gone).
    pub fn get(&mut self, token: &str, now_ms: i64) -> Option<SessionView> {
        let s = self.live.get_mut(token)?;
        if now_ms - s.last_ms > IDLE_MS || now_ms - s.created_ms > ABSOLUTE_MS {
            self.live.remove(token);
            return None;
        }
        s.last_ms = now_ms;
        s.grants.retain(|g| g.expires_ms > now_ms);
        Some(SessionView {
            who: s.who.clone(),
            csrf: s.csrf.clone(),
        })
    }

    /// Ends a session (sign-out, or its account changed).
    pub fn end(&mut self, token: &str) -> Option<Who> {
        self.live.remove(token).map(|s| s.who)
    }

    /// The grant of this session for `rec`, if one is live.
    pub fn grant(&self, token: &str, rec: &RecordingId, now_ms: i64) -> Option<G> {
        let s = self.live.get(token)?;
        s.grants
            .iter()
            .find(|g| &g.rec == rec && g.expires_ms > now_ms)
            .map(|g| g.payload.clone())
    }

    /// Records a grant (after its audit entry); the oldest goes when there are [`MAX_GRANTS`].
    pub fn add_grant(&mut self, token: &str, rec: RecordingId, payload: G, now_ms: i64) {
        let Some(s) = self.live.get_mut(token) else {
            return;
        };
        s.grants.retain(|g| g.rec != rec && g.expires_ms > now_ms);
        if s.grants.len() >= MAX_GRANTS {
            s.grants.remove(0);
        }
        s.grants.push(Grant {
            rec,
            expires_ms: now_ms + GRANT_MS,
            payload,
        });
    }

    /// Drops timed-out sessions (and with them their grants' payloads).
    pub fn expire(&mut self, now_ms: i64) {
        self.live
            .retain(|_, s| now_ms - s.last_ms <= IDLE_MS && now_ms - s.created_ms <= ABSOLUTE_MS);
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str) -> Who {
        Who {
            user: name.into(),
            role: Role::Supervisor,
            password_set_at_ms: 0,
        }
    }

    #[test]
    fn idle_and_absolute_timeouts_end_a_session() {
        let mut s: Sessions<()> = Sessions::default();
        s.start(who("sam"), "t1".into(), "c1".into(), 0);
        // Kept alive by requests every 29 minutes...
        let mut now = 0;
        while now + 29 * 60_000 <= ABSOLUTE_MS {
            now += 29 * 60_000;
            assert_eq!(s.get("t1", now).unwrap().who.user, "sam", "at {now}");
        }
        // ...until the absolute limit.
        assert!(s.get("t1", ABSOLUTE_MS + 1).is_none());
        assert!(s.get("t1", 0).is_none(), "gone for good");

        s.start(who("sam"), "t2".into(), "c2".into(), 0);
        assert!(s.get("t2", IDLE_MS).is_some());
        assert!(s.get("t2", 2 * IDLE_MS + 1).is_none());
        assert!(s.get("nope", 0).is_none());
    }

    #[test]
    fn five_failures_lock_the_name_for_a_while() {
        let mut s: Sessions<()> = Sessions::default();
        for i in 0..MAX_FAILURES - 1 {
            assert!(s.may_try("sam", i64::from(i)).is_ok());
            assert!(!s.failed("sam", i64::from(i)));
        }
        assert!(s.failed("sam", 10));
        let l = s.may_try("sam", 20).unwrap_err();
        assert_eq!(l.retry_after_ms, LOCKOUT_MS - 10);
        assert!(s.may_try("kim", 20).is_ok(), "other names unaffected");
        assert!(s.may_try("sam", 10 + LOCKOUT_MS).is_ok());
        // Failures spread beyond the window do not add up.
        let mut t = 10 + LOCKOUT_MS;
        for _ in 0..10 {
            t += FAILURE_WINDOW_MS + 1;
            assert!(!s.failed("sam", t));
        }
        // A sign-in clears the count.
        for k in 0..MAX_FAILURES - 1 {
            s.failed("kim", i64::from(k));
        }
        s.start(who("kim"), "t".into(), "c".into(), 5);
        assert!(!s.failed("kim", 6));
    }

    #[test]
    fn grants_are_per_session_per_recording_and_expire() {
        let mut s: Sessions<u32> = Sessions::default();
        s.start(who("a"), "ta".into(), "c".into(), 0);
        s.start(who("b"), "tb".into(), "c".into(), 0);
        let r1 = RecordingId::from_string("rec-1".to_string());
        let r2 = RecordingId::from_string("rec-2".to_string());
        s.add_grant("ta", r1.clone(), 7, 0);
        assert_eq!(s.grant("ta", &r1, 1), Some(7));
        assert_eq!(s.grant("ta", &r2, 1), None);
        assert_eq!(s.grant("tb", &r1, 1), None, "another session has no grant");
        assert_eq!(s.grant("ta", &r1, GRANT_MS), None, "expired");
        for i in 0..=MAX_GRANTS as u32 {
            s.add_grant("ta", RecordingId::from_string(format!("rec-x{i}")), i, 10);
        }
        assert_eq!(
            s.grant("ta", &RecordingId::from_string("rec-x0".to_string()), 11),
            None,
            "oldest evicted"
        );
        assert_eq!(
            s.grant(
                "ta",
                &RecordingId::from_string(format!("rec-x{MAX_GRANTS}")),
                11
            ),
            Some(MAX_GRANTS as u32)
        );
        assert_eq!(s.end("ta").unwrap().user, "a");
        assert_eq!(
            s.grant("ta", &RecordingId::from_string("rec-x1".to_string()), 11),
            None
        );
        assert_eq!(s.len(), 1);
    }
}
