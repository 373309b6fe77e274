//! The supervisor portal's pages: sign-in, recording search, a recording's page with playback,
//! download and tags, and the audit log. Server-rendered HTML (askama, auto-escaped), no
//! script; roles as in DESIGN.md (`retention::service` enforces them again below the page).
//!
//! ```text
//! GET  /login · POST /login · POST /logout
//! GET  /recordings?number=&from=&to=&tag=      search (supervisor, investigator, dpo)
//! GET  /recordings/{rec}                       details, player, tags
//! GET  /recordings/{rec}/audio.wav             playback (byte ranges; audited once per grant)
//! GET  /recordings/{rec}/download              WAV attachment (audited every time)
//! POST /recordings/{rec}/tags                  add a tag     · POST …/tags/{tag}/remove
//! GET  /audit                                  newest audit entries (investigator, dpo, admin)
//! ```
//!
//! Every request re-reads the account: a disabled user, a changed role or a new password ends
//! the session at once. A restricted recording does not appear for anyone but the DPO.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::playback::{ByteRange, Rendered, parse_range, render};
use super::sessions::{Sessions, Who};
use super::users::{check_credentials, valid_name};
use crate::audit::{Actor, NewEntry, Role, action};
use crate::config::{BUILTIN_TAGS, RetentionConfig};
use crate::ids::RecordingId;
use crate::recording::keys::Keyring;
use crate::recording::open::{OpenError, open_recording};
use crate::recording::reader::ReadStatus;
use crate::recording::storage::Storage;
use crate::retention::RetentionError;
use crate::retention::service::{self, Permission, allowed, tag_permission};
use crate::store::{CallSearch, Store, deletion_state, now_ms};
use crate::time::{ONE_DAY_MS, parse_date, utc};

const COOKIE: &str = "cg_session";
/// Rows a search lists at most.
const SEARCH_LIMIT: u32 = 200;
const AUDIT_PAGE: i64 = 200;
const CSS: &str = include_str!("templates/portal.css");

/// What the portal reads and writes.
pub struct PortalDeps {
    pub store: Store,
    pub storage: Arc<Storage>,
    pub kek_file: PathBuf,
    pub retention: RetentionConfig,
    /// Where playback renders its temporary WAVs (mode 0600, removed after use).
    pub temp_dir: PathBuf,
}

#[derive(Clone)]
pub struct Web {
    deps: Arc<PortalDeps>,
    sessions: Arc<Mutex<Sessions<Arc<Rendered>>>>,
}

impl Web {
    pub fn new(deps: PortalDeps) -> Web {
        Web {
            deps: Arc::new(deps),
            sessions: Arc::new(Mutex::new(Sessions::default())),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions<Arc<Rendered>>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn routes(web: Web) -> Router {
    Router::new()
        .route("/", get(home))
        .route(
            "/static/portal.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], CSS) }),
        )
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/recordings", get(search))
        .route("/recordings/{id}", get(recording_page))
        .route("/recordings/{id}/audio.wav", get(audio))
        .route("/recordings/{id}/download", get(download))
        .route("/recordings/{id}/tags", post(add_tag))
        .route("/recordings/{id}/tags/{tag}/remove", post(remove_tag))
        .route("/audit", get(audit_page))
        .with_state(web)
}

/// Headers on every portal response: nothing cached, no framing, no foreign content.
pub fn harden(mut res: Response) -> Response {
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; media-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    res
}

// ---- sessions ----

struct Nav {
    user: String,
    role: String,
    csrf: String,
    can_search: bool,
    can_audit: bool,
}

/// A signed-in request.
struct Me {
    token: String,
    who: Who,
    csrf: String,
}

impl Me {
    fn actor(&self) -> Actor {
        Actor::new(self.who.user.clone(), self.who.role)
    }
    fn nav(&self) -> Option<Nav> {
        Some(Nav {
            user: self.who.user.clone(),
            role: self.who.role.to_string(),
            csrf: self.csrf.clone(),
            can_search: allowed(self.who.role, Permission::Play),
            can_audit: allowed(self.who.role, Permission::ReadAudit),
        })
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The live session of this request, with its account re-checked; `None`: sign in.
async fn me(web: &Web, headers: &HeaderMap) -> Result<Option<Me>, Response> {
    let Some(token) = cookie_token(headers) else {
        return Ok(None);
    };
    let Some(view) = web.sessions().get(&token, now_ms()) else {
        return Ok(None);
    };
    let user = web
        .deps
        .store
        .get_user(&view.who.user)
        .await
        .map_err(|e| internal(&e))?;
    let still = user.is_some_and(|u| {
        u.disabled_at_ms.is_none()
            && u.role == view.who.role.as_str()
            && u.password_set_at_ms == view.who.password_set_at_ms
    });
    if !still {
        web.sessions().end(&token);
        return Ok(None);
    }
    Ok(Some(Me {
        token,
        who: view.who,
        csrf: view.csrf,
    }))
}

/// [`me`] for pages: not signed in goes to the sign-in page.
async fn page_me(web: &Web, headers: &HeaderMap) -> Result<Me, Response> {
    me(web, headers)
        .await?
        .ok_or_else(|| Redirect::to("/login").into_response())
}

// A handler step's error is the response to send; its size does not matter here.
#[allow(clippy::result_large_err)]
fn check_csrf(me: &Me, given: &str) -> Result<(), Response> {
    if given == me.csrf {
        Ok(())
    } else {
        Err(error_page(
            Some(me),
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form is out of date; reload the page and try again.",
        ))
    }
}

// ---- responses ----

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Option<Nav>,
    title: String,
    message: String,
}

fn html<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "portal template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

fn error_page(me: Option<&Me>, status: StatusCode, title: &str, message: &str) -> Response {
    html(
        status,
        &ErrorPage {
            nav: me.and_then(Me::nav),
            title: title.into(),
            message: message.into(),
        },
    )
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "portal request failed");
    error_page(
        None,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The request failed; it has been logged.",
    )
}

/// A retention-service refusal as a page (or the logged 500 for store errors).
fn refused(me: &Me, e: &RetentionError) -> Response {
    let status = match e {
        RetentionError::Store(_) | RetentionError::Storage(_) => return internal(e),
        RetentionError::Forbidden { .. } | RetentionError::Restricted(_) => StatusCode::FORBIDDEN,
        RetentionError::UnknownRecording(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    error_page(Some(me), status, "Not allowed", &e.to_string())
}

fn rec_id(id: &str) -> Option<RecordingId> {
    (id.starts_with("rec-")
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    .then(|| RecordingId::from_string(id.to_string()))
}

fn minutes(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{}:{:02}", s / 60, s % 60)
}

// ---- sign-in ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Option<Nav>,
    error: Option<String>,
    name: String,
}

async fn home(State(web): State<Web>, headers: HeaderMap) -> Response {
    let me = match page_me(&web, &headers).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if allowed(me.who.role, Permission::Play) {
        Redirect::to("/recordings").into_response()
    } else if allowed(me.who.role, Permission::ReadAudit) {
        Redirect::to("/audit").into_response()
    } else {
        error_page(
            Some(&me),
            StatusCode::FORBIDDEN,
            "Nothing here",
            "Your role has no pages in the portal.",
        )
    }
}

async fn login_page(State(web): State<Web>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = me(&web, &headers).await {
        return Redirect::to("/").into_response();
    }
    html(
        StatusCode::OK,
        &LoginPage {
            nav: None,
            error: None,
            name: String::new(),
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

async fn login(State(web): State<Web>, Form(f): Form<LoginForm>) -> Response {
    let now = now_ms();
    let name = f.name.trim().to_string();
    let again = |msg: &str, name: &str| {
        let keep = if valid_name(name) {
            name.to_string()
        } else {
            String::new()
        };
        html(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                nav: None,
                error: Some(msg.into()),
                name: keep,
            },
        )
    };
    let user = if valid_name(&name) {
        match web.deps.store.get_user(&name).await {
            Ok(u) => u,
            Err(e) => return internal(&e),
        }
    } else {
        None
    };
    let known = user.as_ref().is_some_and(|u| u.disabled_at_ms.is_none());
    // The portal itself records a refusal: the name only if it is an account's (a password
    // typed into the name box must not end up in the log).
    let refusal = |locked: bool, locked_out: bool| {
        let mut e = NewEntry::new(
            now,
            &Actor::new("portal", Role::System),
            action::LOGIN_FAILED,
        )
        .details(json!({ "known_user": known, "locked": locked, "locked_out": locked_out }));
        if known {
            e = e.target(name.as_str());
        }
        e
    };
    // Bound first: the lock guard must not live across the awaits below.
    let allowed_now = web.sessions().may_try(&name, now);
    if let Err(l) = allowed_now {
        if let Err(e) = web
            .deps
            .store
            .audit_append(now, &[refusal(false, true)])
            .await
        {
            return internal(&e);
        }
        let mins = (l.retry_after_ms + 59_999) / 60_000;
        return again(
            &format!("Too many failed sign-ins for this name; try again in {mins} minute(s)."),
            &name,
        );
    }
    let pw = f.password;
    let checked = tokio::task::spawn_blocking(move || check_credentials(user.as_ref(), &pw)).await;
    let Ok(signed_in) = checked else {
        return internal(&"password check task failed");
    };
    let Some(s) = signed_in else {
        let locked = web.sessions().failed(&name, now);
        if let Err(e) = web
            .deps
            .store
            .audit_append(now, &[refusal(locked, false)])
            .await
        {
            return internal(&e);
        }
        tracing::info!(known_user = known, locked, "portal sign-in refused");
        return again("Wrong name or password.", &name);
    };
    let who = Who {
        user: s.name,
        role: s.role,
        password_set_at_ms: s.password_set_at_ms,
    };
    let actor = Actor::new(who.user.clone(), who.role);
    if let Err(e) = web
        .deps
        .store
        .audit_append(now, &[NewEntry::new(now, &actor, action::LOGIN)])
        .await
    {
        return internal(&e);
    }
    let token = crate::ids::random_hex(32);
    tracing::info!(user = %who.user, role = %who.role, "portal sign-in");
    web.sessions()
        .start(who, token.clone(), crate::ids::random_hex(16), now);
    let mut res = Redirect::to("/").into_response();
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(web): State<Web>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let me = match page_me(&web, &headers).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(&me, &f.csrf) {
        return r;
    }
    let now = now_ms();
    web.sessions().end(&me.token);
    if let Err(e) = web
        .deps
        .store
        .audit_append(now, &[NewEntry::new(now, &me.actor(), action::LOGOUT)])
        .await
    {
        return internal(&e);
    }
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("cg_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    res
}

// ---- search ----

#[derive(Deserialize, Default)]
struct SearchForm {
    #[serde(default)]
    number: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    tag: String,
}

struct Row {
    id: String,
    started: String,
    length: String,
    direction: String,
    from: String,
    to: String,
    tags: String,
    state: String,
}

#[derive(Template)]
#[template(path = "recordings.html")]
struct ListPage {
    nav: Option<Nav>,
    form: SearchForm,
    tags: Vec<String>,
    rows: Vec<Row>,
    hidden: usize,
    capped: bool,
    problem: Option<String>,
}

fn known_tags(cfg: &RetentionConfig) -> Vec<String> {
    BUILTIN_TAGS
        .iter()
        .map(|t| t.to_string())
        .chain(cfg.custom_tags.iter().cloned())
        .collect()
}

/// The search form as a query, or what is wrong with it.
fn to_query(f: &SearchForm, cfg: &RetentionConfig) -> Result<CallSearch, String> {
    let mut q = CallSearch {
        limit: SEARCH_LIMIT,
        ..CallSearch::default()
    };
    if !f.number.trim().is_empty() {
        q.numbers = service::number_variants(&f.number)
            .ok_or("Number: type at least three digits (and + if needed).")?;
    }
    if !f.from.trim().is_empty() {
        q.from_ms = Some(parse_date(&f.from).ok_or("From: a date as YYYY-MM-DD.")?);
    }
    if !f.to.trim().is_empty() {
        q.to_ms = Some(parse_date(&f.to).ok_or("To: a date as YYYY-MM-DD.")? + ONE_DAY_MS);
    }
    if !f.tag.is_empty() {
        if !cfg.is_known_tag(&f.tag) {
            return Err("Tag: not a known tag.".into());
        }
        q.tag = Some(f.tag.clone());
    }
    Ok(q)
}

async fn search(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(form): Query<SearchForm>,
) -> Response {
    let me = match page_me(&web, &headers).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(e) = service::require(&me.actor(), Permission::Play) {
        return refused(&me, &e);
    }
    let store = &web.deps.store;
    let mut page = ListPage {
        nav: me.nav(),
        tags: known_tags(&web.deps.retention),
        rows: Vec::new(),
        hidden: 0,
        capped: false,
        problem: None,
        form: SearchForm::default(),
    };
    let q = match to_query(&form, &web.deps.retention) {
        Ok(q) => q,
        Err(p) => {
            page.problem = Some(p);
            page.form = form;
            return html(StatusCode::BAD_REQUEST, &page);
        }
    };
    page.form = form;
    let calls = match store.search_recorded_calls(&q).await {
        Ok(c) => c,
        Err(e) => return internal(&e),
    };
    page.capped = calls.len() as u32 >= SEARCH_LIMIT;
    let may_restricted = allowed(me.who.role, Permission::PlayRestricted);
    for c in calls {
        let Some(rec) = c.recording_id.clone() else {
            continue;
        };
        let (ret, tags) = match (store.get_retention(&rec).await, store.tags_of(&rec).await) {
            (Ok(r), Ok(t)) => (r, t),
            (Err(e), _) | (_, Err(e)) => return internal(&e),
        };
        if ret.as_ref().is_some_and(|r| r.restricted_at_ms.is_some()) && !may_restricted {
            page.hidden += 1;
            continue;
        }
        let gone = ret.as_ref().is_some_and(|r| {
            r.state == deletion_state::DELETED || r.state == deletion_state::DELETING
        });
        let tags: Vec<String> = tags
            .into_iter()
            .filter(|t| t.removed_at_ms.is_none())
            .map(|t| t.tag)
            .collect();
        page.rows.push(Row {
            id: rec.to_string(),
            started: utc(c.started_at_ms),
            length: c
                .ended_at_ms
                .map(|e| minutes(e - c.started_at_ms))
                .unwrap_or_else(|| "in progress".into()),
            direction: c.direction.clone(),
            from: c.from_number.expose().to_string(),
            to: c.to_number.expose().to_string(),
            tags: tags.join(", "),
            state: if gone {
                "deleted".into()
            } else {
                c.recording_state.clone()
            },
        });
    }
    html(StatusCode::OK, &page)
}

// ---- one recording ----

struct TagView {
    tag: String,
    by: String,
    at: String,
    removable: bool,
}

#[derive(Template)]
#[template(path = "recording.html")]
struct RecordingPage {
    nav: Option<Nav>,
    csrf: String,
    id: String,
    call_id: String,
    direction: String,
    started: String,
    length: String,
    from: String,
    to: String,
    state: String,
    pauses: String,
    kept: String,
    playable: bool,
    tags: Vec<TagView>,
    addable: Vec<String>,
    message: Option<String>,
    problem: Option<String>,
}

#[derive(Deserialize, Default)]
struct PageQuery {
    #[serde(default)]
    m: String,
}

async fn recording_page(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(pq): Query<PageQuery>,
) -> Response {
    let me = match page_me(&web, &headers).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let message = match pq.m.as_str() {
        "tagged" => Some("Tag added.".to_string()),
        "untagged" => Some("Tag removed.".to_string()),
        _ => None,
    };
    render_recording(&web, &me, &id, message, None, StatusCode::OK).await
}

async fn render_recording(
    web: &Web,
    me: &Me,
    id: &str,
    message: Option<String>,
    problem: Option<String>,
    status: StatusCode,
) -> Response {
    let Some(rec) = rec_id(id) else {
        return error_page(
            Some(me),
            StatusCode::NOT_FOUND,
            "Not found",
            "No such recording.",
        );
    };
    let store = &web.deps.store;
    let ret = match service::authorize_playback(store, &me.actor(), &rec).await {
        Ok(r) => r,
        Err(e) => return refused(me, &e),
    };
    let row = match store.get_recording(&rec).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error_page(
                Some(me),
                StatusCode::NOT_FOUND,
                "Not found",
                "No such recording.",
            );
        }
        Err(e) => return internal(&e),
    };
    let (call, tags) = match (
        store.get_call(&row.call_id).await,
        store.tags_of(&rec).await,
    ) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(e), _) | (_, Err(e)) => return internal(&e),
    };
    let gone = ret
        .as_ref()
        .is_some_and(|r| r.state == deletion_state::DELETED || r.state == deletion_state::DELETING);
    let role = me.who.role;
    let active: Vec<_> = tags
        .into_iter()
        .filter(|t| t.removed_at_ms.is_none())
        .collect();
    let addable = if gone {
        Vec::new()
    } else {
        known_tags(&web.deps.retention)
            .into_iter()
            .filter(|t| allowed(role, tag_permission(t)) && !active.iter().any(|a| &a.tag == t))
            .collect()
    };
    let kept = match &ret {
        Some(r) if gone => format!("deleted ({})", r.state),
        Some(r) if r.held => "under legal hold".into(),
        Some(r) => r
            .expires_at_ms
            .map(utc)
            .unwrap_or_else(|| "until released".into()),
        None => "not yet decided".into(),
    };
    let page = RecordingPage {
        nav: me.nav(),
        csrf: me.csrf.clone(),
        id: rec.to_string(),
        call_id: row.call_id.to_string(),
        direction: call
            .as_ref()
            .map(|c| c.direction.clone())
            .unwrap_or_default(),
        started: call
            .as_ref()
            .map(|c| utc(c.started_at_ms))
            .unwrap_or_else(|| utc(row.created_at_ms)),
        length: call
            .as_ref()
            .and_then(|c| c.ended_at_ms.map(|e| minutes(e - c.started_at_ms)))
            .unwrap_or_else(|| "in progress".into()),
        from: call
            .as_ref()
            .map(|c| c.from_number.expose().to_string())
            .unwrap_or_default(),
        to: call
            .as_ref()
            .map(|c| c.to_number.expose().to_string())
            .unwrap_or_default(),
        state: if gone {
            "deleted".into()
        } else {
            row.state.clone()
        },
        // Counts only: no digits are ever stored.
        pauses: call
            .as_ref()
            .map(|c| c.pauses.len().to_string())
            .unwrap_or_default(),
        kept,
        playable: !gone && row.state != "recording" && row.state != "failed",
        tags: active
            .into_iter()
            .map(|t| TagView {
                removable: !gone && allowed(role, tag_permission(&t.tag)),
                at: utc(t.added_at_ms),
                by: t.added_by,
                tag: t.tag,
            })
            .collect(),
        addable,
        message,
        problem,
    };
    html(status, &page)
}

/// Signed in, the form's token, a well-formed id, and a recording this role may see (tagging
/// needs the recording to be visible to the role in the first place).
async fn tag_form_prelude(
    web: &Web,
    headers: &HeaderMap,
    id: &str,
    csrf: &str,
) -> Result<(Me, RecordingId, Actor), Response> {
    let me = page_me(web, headers).await?;
    check_csrf(&me, csrf)?;
    let Some(rec) = rec_id(id) else {
        return Err(error_page(
            Some(&me),
            StatusCode::NOT_FOUND,
            "Not found",
            "No such recording.",
        ));
    };
    let actor = me.actor();
    if let Err(e) = service::authorize_playback(&web.deps.store, &actor, &rec).await {
        return Err(refused(&me, &e));
    }
    Ok((me, rec, actor))
}

#[derive(Deserialize)]
struct TagForm {
    csrf: String,
    tag: String,
    #[serde(default)]
    note: String,
}

async fn add_tag(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<TagForm>,
) -> Response {
    let (me, rec, actor) = match tag_form_prelude(&web, &headers, &id, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let note = Some(f.note.trim()).filter(|n| !n.is_empty());
    match service::tag_add(
        &web.deps.store,
        &web.deps.retention,
        &actor,
        &rec,
        &f.tag,
        note,
        now_ms(),
    )
    .await
    {
        Ok(_) => Redirect::to(&format!("/recordings/{rec}?m=tagged")).into_response(),
        Err(RetentionError::Store(e)) => internal(&e),
        Err(e) => {
            render_recording(
                &web,
                &me,
                &id,
                None,
                Some(e.to_string()),
                StatusCode::CONFLICT,
            )
            .await
        }
    }
}

async fn remove_tag(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (me, rec, actor) = match tag_form_prelude(&web, &headers, &id, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match service::tag_remove(
        &web.deps.store,
        &web.deps.retention,
        &actor,
        &rec,
        &tag,
        None,
        now_ms(),
    )
    .await
    {
        Ok(_) => Redirect::to(&format!("/recordings/{rec}?m=untagged")).into_response(),
        Err(RetentionError::Store(e)) => internal(&e),
        Err(e) => {
            render_recording(
                &web,
                &me,
                &id,
                None,
                Some(e.to_string()),
                StatusCode::CONFLICT,
            )
            .await
        }
    }
}

// ---- audio ----

fn plain(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// Authorises, opens, refuses damage, audits (`recording.decrypt`, via portal) and renders.
async fn open_for_listening(
    web: &Web,
    me: &Me,
    rec: &RecordingId,
    mode: &str,
) -> Result<Arc<Rendered>, Response> {
    let store = &web.deps.store;
    let actor = me.actor();
    match service::authorize_playback(store, &actor, rec).await {
        Ok(Some(r))
            if r.state == deletion_state::DELETED || r.state == deletion_state::DELETING =>
        {
            return Err(plain(
                StatusCode::GONE,
                format!("recording {rec} has been deleted"),
            ));
        }
        Ok(_) => {}
        Err(RetentionError::Store(e)) => return Err(internal(&e)),
        Err(e) => return Err(plain(StatusCode::FORBIDDEN, e.to_string())),
    }
    // The key file is read per play: a rotation by `callgate keys rotate` needs no restart.
    let keyring = Keyring::load(&web.deps.kek_file).map_err(|e| internal(&e))?;
    let opened = match open_recording(store, &web.deps.storage, &keyring, rec.clone()).await {
        Ok(o) => o,
        Err(OpenError::Shredded(_)) => {
            return Err(plain(
                StatusCode::GONE,
                format!("recording {rec}: its key has been destroyed; it can no longer be played"),
            ));
        }
        Err(OpenError::Storage(e)) => {
            tracing::warn!(recording = %rec, error = %e, "portal: recording file unreadable");
            return Err(plain(
                StatusCode::CONFLICT,
                format!("recording {rec}: the file cannot be read; reported, not played"),
            ));
        }
        Err(e) => return Err(internal(&e)),
    };
    if let ReadStatus::Damaged { .. } = opened.outcome.status {
        tracing::warn!(recording = %rec, status = %opened.outcome.status, "portal: damaged recording refused");
        return Err(plain(
            StatusCode::CONFLICT,
            format!(
                "recording {rec} is {}; not played (run `callgate recording verify {rec}`)",
                opened.outcome.status
            ),
        ));
    }
    // Audited before any audio leaves: no entry, no audio.
    let truncated = !opened.outcome.status.is_complete();
    service::record_playback(
        store,
        &actor,
        rec,
        json!({ "via": "portal", "mode": mode, "truncated": truncated }),
        now_ms(),
    )
    .await
    .map_err(|e| internal(&e))?;
    let dir = web.deps.temp_dir.clone();
    let rendered = tokio::task::spawn_blocking(move || render(&opened.outcome, &dir))
        .await
        .map_err(|e| internal(&e))?;
    rendered.map_err(|e| internal(&e))
}

async fn audio(State(web): State<Web>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let me = match me(&web, &headers).await {
        Ok(Some(m)) => m,
        Ok(None) => return plain(StatusCode::UNAUTHORIZED, "sign in first".into()),
        Err(r) => return r,
    };
    let Some(rec) = rec_id(&id) else {
        return plain(StatusCode::NOT_FOUND, "no such recording".into());
    };
    // Within a grant, seeking re-reads the same render; the account was re-checked above, and
    // the role check runs again so a restriction made meanwhile applies at once.
    let granted = web.sessions().grant(&me.token, &rec, now_ms());
    let rendered = match granted {
        Some(r) => {
            if let Err(e) = service::authorize_playback(&web.deps.store, &me.actor(), &rec).await {
                return plain(StatusCode::FORBIDDEN, e.to_string());
            }
            r
        }
        None => match open_for_listening(&web, &me, &rec, "play").await {
            Ok(r) => {
                web.sessions()
                    .add_grant(&me.token, rec.clone(), r.clone(), now_ms());
                r
            }
            Err(res) => return res,
        },
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    serve_file(&rendered, parse_range(range, rendered.len), None).await
}

async fn download(State(web): State<Web>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let me = match page_me(&web, &headers).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(rec) = rec_id(&id) else {
        return plain(StatusCode::NOT_FOUND, "no such recording".into());
    };
    match open_for_listening(&web, &me, &rec, "download").await {
        Ok(r) => {
            serve_file(
                &r,
                ByteRange::Full,
                Some(&format!("attachment; filename=\"{rec}.wav\"")),
            )
            .await
        }
        Err(res) => res,
    }
}

/// Streams (part of) a rendered WAV. The file is reopened (its own offset) before returning,
/// so the grant may end while the body is still being sent.
async fn serve_file(r: &Rendered, range: ByteRange, disposition: Option<&str>) -> Response {
    let (status, start, end) = match range {
        ByteRange::Full => (StatusCode::OK, 0, r.len.saturating_sub(1)),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        ByteRange::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{}", r.len))],
            )
                .into_response();
        }
    };
    let mut file = match tokio::fs::File::open(r.reopen_path()).await {
        Ok(f) => f,
        Err(e) => return internal(&e),
    };
    if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
        return internal(&e);
    }
    let len = if r.len == 0 { 0 } else { end - start + 1 };
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len)));
    let mut res = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        res = res.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{}", r.len),
        );
    }
    if let Some(d) = disposition {
        res = res.header(header::CONTENT_DISPOSITION, d);
    }
    if r.truncated {
        res = res.header("x-callgate-truncated", "true");
    }
    res.body(body).unwrap_or_else(|e| internal(&e))
}

// ---- audit ----

struct AuditView {
    seq: i64,
    at: String,
    actor: String,
    role: String,
    action: String,
    targets: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    entries: Vec<AuditView>,
}

async fn audit_page(State(web): State<Web>, headers: HeaderMap) -> Response {
    let me = match page_me(&web, &headers).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(e) = service::require(&me.actor(), Permission::ReadAudit) {
        return refused(&me, &e);
    }
    let store = &web.deps.store;
    let entries = match store.audit_head().await {
        Ok((seq, _)) => {
            store
                .audit_entries((seq - AUDIT_PAGE).max(0), AUDIT_PAGE)
                .await
        }
        Err(e) => Err(e),
    };
    let entries = match entries {
        Ok(e) => e,
        Err(e) => return internal(&e),
    };
    let entries = entries
        .into_iter()
        .rev()
        .map(|e| AuditView {
            seq: e.seq,
            at: utc(e.at_ms),
            targets: serde_json::from_str::<Vec<String>>(&e.targets)
                .map(|t| t.join(", "))
                .unwrap_or(e.targets),
            actor: e.actor,
            role: e.role,
            action: e.action,
            reason: e.reason.unwrap_or_default(),
        })
        .collect();
    html(
        StatusCode::OK,
        &AuditPage {
            nav: me.nav(),
            entries,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_token_takes_only_a_well_formed_session_cookie() {
        let t = "ab".repeat(32);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={t}; y=2")).unwrap(),
        );
        assert_eq!(cookie_token(&h), Some(t.clone()));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("cg_session=../../etc"),
        );
        assert_eq!(cookie_token(&h), None);
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn search_form_is_checked() {
        let cfg = RetentionConfig::default();
        let f = |number: &str, from: &str, to: &str, tag: &str| SearchForm {
            number: number.into(),
            from: from.into(),
            to: to.into(),
            tag: tag.into(),
        };
        let q = to_query(
            &f("07700 900123", "2026-01-02", "2026-01-02", "complaint"),
            &cfg,
        )
        .unwrap();
        assert!(
            q.numbers.contains(&"+447700900123".to_string()),
            "{:?}",
            q.numbers
        );
        assert_eq!(
            q.to_ms.unwrap() - q.from_ms.unwrap(),
            ONE_DAY_MS,
            "the to-date is inclusive"
        );
        assert_eq!(q.tag.as_deref(), Some("complaint"));
        assert!(
            to_query(&f("", "", "", ""), &cfg)
                .unwrap()
                .numbers
                .is_empty()
        );
        assert!(
            to_query(&f("ab", "", "", ""), &cfg)
                .unwrap_err()
                .starts_with("Number")
        );
        assert!(
            to_query(&f("", "2026-02-30", "", ""), &cfg)
                .unwrap_err()
                .starts_with("From")
        );
        assert!(
            to_query(&f("", "", "", "nonsense"), &cfg)
                .unwrap_err()
                .starts_with("Tag")
        );
    }

    #[test]
    fn pages_escape_what_they_show() {
        let page = ErrorPage {
            nav: None,
            title: "t".into(),
            message: "<script>alert(1)</script>".into(),
        };
        let body = page.render().unwrap();
        assert!(!body.contains("<script>alert"), "{body}");
        assert!(
            body.contains("&#60;script&#62;") || body.contains("&lt;script&gt;"),
            "{body}"
        );
    }
}
