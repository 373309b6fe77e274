//! `callgate user add | passwd | disable | list`: portal accounts (see `portal::users`).
//!
//! These commands act as admin; for `user add`, the global `--role` is the new account's role
//! (`callgate user add NAME --role ROLE`, as the interface contract spells it).

use std::io::BufRead;

use super::{CliError, Ctx, open_existing_store, out};
use crate::audit::{Actor, Role};
use crate::config::Config;
use crate::portal::users::{self, UserError};
use crate::store::now_ms;

fn admin(ctx: &Ctx) -> Actor {
    Actor::new(ctx.actor_name.clone(), Role::Admin)
}

/// The password from stdin's first line (trailing newline dropped), or a generated one.
fn password(from_stdin: bool) -> Result<(String, bool), CliError> {
    if !from_stdin {
        return Ok((users::generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(CliError::Stdin)?;
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    Ok((pw.to_string(), false))
}

pub async fn add(
    config: &Config,
    ctx: &Ctx,
    name: &str,
    password_stdin: bool,
) -> Result<u8, CliError> {
    let role = ctx.role.ok_or(CliError::User(UserError::BadRole))?;
    let (pw, generated) = password(password_stdin)?;
    let store = open_existing_store(config).await?;
    let res = users::add(&store, &admin(ctx), name, role, &pw, now_ms()).await;
    store.close().await;
    res?;
    eprintln!("created portal user `{name}` with role {role}");
    if generated {
        eprintln!("generated password, shown once (only its argon2id hash is stored):");
        out(&format!("{pw}\n"))?;
    }
    Ok(0)
}

pub async fn passwd(
    config: &Config,
    ctx: &Ctx,
    name: &str,
    password_stdin: bool,
) -> Result<u8, CliError> {
    let (pw, generated) = password(password_stdin)?;
    let store = open_existing_store(config).await?;
    let res = users::set_password(&store, &admin(ctx), name, &pw, now_ms()).await;
    store.close().await;
    res?;
    eprintln!("new password set for `{name}`; their portal sessions end at their next request");
    if generated {
        eprintln!("generated password, shown once:");
        out(&format!("{pw}\n"))?;
    }
    Ok(0)
}

pub async fn disable(
    config: &Config,
    ctx: &Ctx,
    name: &str,
    reason: Option<&str>,
) -> Result<u8, CliError> {
    if let Some(r) = reason {
        crate::retention::service::check_text("reason", r, false)?;
    }
    let store = open_existing_store(config).await?;
    let res = users::disable(&store, &admin(ctx), name, reason, now_ms()).await;
    store.close().await;
    res?;
    out(&format!(
        "{name}: disabled; their portal sessions end at their next request\n"
    ))?;
    Ok(0)
}

pub async fn list(config: &Config, json: bool) -> Result<u8, CliError> {
    let store = open_existing_store(config).await?;
    let res = store.list_users().await;
    store.close().await;
    let rows = res?;
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|u| {
                serde_json::json!({
                    "name": u.name, "role": u.role, "created_at_ms": u.created_at_ms,
                    "created_by": u.created_by, "password_set_at_ms": u.password_set_at_ms,
                    "disabled_at_ms": u.disabled_at_ms,
                })
            })
            .collect();
        out(&format!("{}\n", serde_json::Value::Array(v)))?;
        return Ok(0);
    }
    let mut s = String::new();
    for u in &rows {
        let state = match u.disabled_at_ms {
            Some(ms) => format!("disabled {}", crate::time::utc(ms)),
            None => "enabled".into(),
        };
        s.push_str(&format!(
            "{}\t{}\t{}\tcreated {} by {}\n",
            u.name,
            u.role,
            state,
            crate::time::utc(u.created_at_ms),
            u.created_by
        ));
    }
    out(&s)?;
    Ok(0)
}
