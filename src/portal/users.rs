//! Portal accounts: names, roles and argon2id password hashes, managed with
//! `callgate user add | passwd | disable | list` (admins only) and checked at sign-in.
//!
//! Every change is committed with its audit entry in one transaction (`user.add`,
//! `user.password`, `user.disable`). Passwords never reach a log, an error or the audit log.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde_json::json;

use crate::audit::{Actor, NewEntry, Role, action};
use crate::store::{Store, StoreError, UserRow};

/// Shortest password accepted (characters). Long passphrases beat composition rules.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (bytes): argon2 takes any length, the bound keeps work bounded.
pub const MAX_PASSWORD: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("user name must be 1-64 characters of letters, digits, '.', '_', '-' or '@'")]
    BadName,
    #[error(
        "password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters, with no control characters"
    )]
    BadPassword,
    #[error("role {0} may not manage users (admin only)")]
    Forbidden(Role),
    #[error("a portal user has role supervisor, investigator, dpo or admin")]
    BadRole,
    #[error("user `{0}` exists already (disabled users keep their name)")]
    Exists(String),
    #[error("no enabled user `{0}`")]
    Unknown(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn check_password(pw: &str) -> Result<(), UserError> {
    if pw.chars().count() < MIN_PASSWORD
        || pw.len() > MAX_PASSWORD
        || pw.chars().any(char::is_control)
    {
        return Err(UserError::BadPassword);
    }
    Ok(())
}

/// An argon2id PHC string (default parameters: 19 MiB, 2 passes) with a fresh random salt.
pub fn hash_password(pw: &str) -> Result<String, UserError> {
    Argon2::default()
        .hash_password(pw.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// Whether `pw` matches the PHC string `hash` (a malformed hash matches nothing).
pub fn verify_password(hash: &str, pw: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(pw.as_bytes(), &parsed)
        .is_ok()
}

/// A hash of no one's password, verified when the name is unknown so that a refusal takes as
/// long for an unknown name as for a wrong password (names are not revealed by timing).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let pw = crate::ids::random_hex(16);
        // Hashing fails only if the OS has no randomness; then no hash verifies anyway.
        hash_password(&pw).unwrap_or_default()
    });
    DECOY.as_str()
}

/// A random password for `user add` without `--password-stdin`: 20 characters from an
/// unambiguous alphabet (about 110 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut raw = [0u8; 20];
    // The OS random source failing is not recoverable for a password generator.
    getrandom::fill(&mut raw).expect("OS randomness for a generated password");
    raw.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Who signed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIn {
    pub name: String,
    pub role: Role,
    pub password_set_at_ms: i64,
}

/// Checks a name and password; `None` for an unknown or disabled user or a wrong password
/// (the caller cannot and need not tell which). Blocking (argon2): call off the async runtime.
pub fn check_credentials(user: Option<&UserRow>, pw: &str) -> Option<SignedIn> {
    let Some(u) = user.filter(|u| u.disabled_at_ms.is_none()) else {
        verify_password(decoy_hash(), pw);
        return None;
    };
    if pw.len() > MAX_PASSWORD || !verify_password(&u.password_hash, pw) {
        return None;
    }
    let role = u.role.parse().ok()?;
    Some(SignedIn {
        name: u.name.clone(),
        role,
        password_set_at_ms: u.password_set_at_ms,
    })
}

fn require_admin(actor: &Actor) -> Result<(), UserError> {
    if actor.role == Role::Admin {
        Ok(())
    } else {
        Err(UserError::Forbidden(actor.role))
    }
}

/// Creates an account (admin only).
pub async fn add(
    store: &Store,
    actor: &Actor,
    name: &str,
    role: Role,
    password: &str,
    now_ms: i64,
) -> Result<(), UserError> {
    require_admin(actor)?;
    if !valid_name(name) {
        return Err(UserError::BadName);
    }
    if role == Role::System {
        return Err(UserError::BadRole);
    }
    check_password(password)?;
    let hash = tokio::task::spawn_blocking({
        let pw = password.to_string();
        move || hash_password(&pw)
    })
    .await
    .map_err(|e| UserError::Hash(e.to_string()))??;
    let row = UserRow {
        name: name.to_string(),
        role: role.as_str().to_string(),
        password_hash: hash,
        created_at_ms: now_ms,
        created_by: actor.name.clone(),
        password_set_at_ms: now_ms,
        disabled_at_ms: None,
    };
    let mut tx = store.begin_audited(now_ms).await?;
    if !tx.insert_user(&row).await? {
        tx.rollback().await?;
        return Err(UserError::Exists(name.to_string()));
    }
    tx.append(
        &NewEntry::new(now_ms, actor, action::USER_ADD)
            .target(name)
            .details(json!({ "role": role.as_str() })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Sets a new password (admin only); signed-in sessions of that user end at their next request.
pub async fn set_password(
    store: &Store,
    actor: &Actor,
    name: &str,
    password: &str,
    now_ms: i64,
) -> Result<(), UserError> {
    require_admin(actor)?;
    check_password(password)?;
    let pw = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| UserError::Hash(e.to_string()))??;
    let mut tx = store.begin_audited(now_ms).await?;
    if !tx.set_user_password(name, &hash, now_ms).await? {
        tx.rollback().await?;
        return Err(UserError::Unknown(name.to_string()));
    }
    tx.append(&NewEntry::new(now_ms, actor, action::USER_PASSWORD).target(name))
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Disables an account (admin only); its sessions end at their next request.
pub async fn disable(
    store: &Store,
    actor: &Actor,
    name: &str,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<(), UserError> {
    require_admin(actor)?;
    let mut tx = store.begin_audited(now_ms).await?;
    if !tx.disable_user(name, now_ms).await? {
        tx.rollback().await?;
        return Err(UserError::Unknown(name.to_string()));
    }
    tx.append(
        &NewEntry::new(now_ms, actor, action::USER_DISABLE)
            .target(name)
            .reason(reason),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, hash: String, disabled: bool) -> UserRow {
        UserRow {
            name: name.into(),
            role: "supervisor".into(),
            password_hash: hash,
            created_at_ms: 1,
            created_by: "root".into(),
            password_set_at_ms: 1,
            disabled_at_ms: disabled.then_some(2),
        }
    }

    #[test]
    fn hash_verifies_only_the_right_password_and_salts() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterx"));
        assert!(!verify_password(
            "not a phc string",
            "correct horse battery"
        ));
        assert_ne!(
            h,
            hash_password("correct horse battery").unwrap(),
            "fresh salt each time"
        );
    }

    #[test]
    fn credentials_refuse_unknown_disabled_and_wrong() {
        let h = hash_password("a long enough one").unwrap();
        let ok = row("sam", h.clone(), false);
        let got = check_credentials(Some(&ok), "a long enough one").unwrap();
        assert_eq!((got.name.as_str(), got.role), ("sam", Role::Supervisor));
        assert!(check_credentials(Some(&ok), "a long enough two").is_none());
        assert!(check_credentials(Some(&row("sam", h, true)), "a long enough one").is_none());
        assert!(check_credentials(None, "a long enough one").is_none());
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(valid_name("sam.jones@hub"));
        for bad in ["", "a b", "x/y", "<b>", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(check_password("short").is_err());
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password("twelve chars\n").is_err());
        let g = generate_password();
        assert_eq!(g.len(), 20);
        assert!(check_password(&g).is_ok());
        assert_ne!(g, generate_password());
    }
}
