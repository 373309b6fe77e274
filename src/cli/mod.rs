//! The `callgate` command line (see `DESIGN.md`, "Interface contract").
//!
//! ```text
//! callgate [--config PATH] serve
//! callgate calls list [--json] [--limit N]
//! callgate recording decrypt ID --out F.wav
//! callgate recording verify ID
//! callgate keys init | rotate | list | retire KEYID
//! callgate tag add ID TAG [--note TEXT]  ·  callgate tag remove ID TAG [--reason TEXT]
//! callgate hold create --case REF --reason TEXT ID...  ·  hold release --case REF [--reason TEXT]  ·  hold list
//! callgate sweep [--dry-run]
//! callgate sar --number NUMBER [--out DIR]  ·  callgate erase ID --reason TEXT
//! callgate restrict ID --reason TEXT  ·  callgate unrestrict ID [--reason TEXT]
//! callgate retention show ID [--json]
//! callgate audit verify  ·  callgate audit list [--json] [--limit N]
//! callgate user add NAME --role ROLE [--password-stdin]  ·  user passwd | disable | list
//! callgate export --case REF --out BUNDLE.zip [--reason TEXT] ID...  ·  export verify BUNDLE.zip [--log]
//! ```
//!
//! Global `--actor NAME` (default `$USER`, else `cli`) and `--role ROLE` (supervisor,
//! investigator, dpo, admin; default `admin`, except `recording decrypt`, which defaults to
//! `supervisor`) say who acts: both go into the audit log, and the role is checked against
//! DESIGN.md's table (see `retention::service`). The command line runs with database and key
//! file access, so this is accountability and a guard against mistakes, not authentication.
//!
//! Exit status: `0` success; `1` the subject itself is bad (a recording damaged, truncated or
//! crypto-shredded; a key rotation left recordings behind; the gateway stopped with an error);
//! `2` anything else (usage, configuration, database, unknown id, missing files).
//!
//! Every failure is one line on stderr, `callgate: error: …`, built from the typed error's
//! `Display` (never `Debug`). Nothing here prints key material, a database password (the store
//! redacts its URL) or a full phone number outside `calls list --json`.

mod api;
mod audit;
mod calls;
mod export;
mod keys;
mod recording;
mod retention;
mod sar;
mod user;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::audit::{Actor, ChainError, Role};
use crate::config::{Config, ConfigError};
use crate::retention::RetentionError;
use crate::ids::{CallId, KeyId, RecordingId};
use crate::recording::keys::KeyError;
use crate::recording::open::OpenError;
use crate::recording::reader::ReadStatus;
use crate::recording::storage::StorageError;
use crate::recording::wav::WavError;
use crate::serve::ServeError;
use crate::store::{Dialect, Store, StoreError};

/// Config file used when `--config` is not given. Missing there means the embedded defaults.
pub const DEFAULT_CONFIG: &str = "config/callgate.toml";

/// Default log filter: rsipstack logs whole SIP messages (phone numbers) at info, keep it quiet.
pub const DEFAULT_LOG_FILTER: &str = "info,rsipstack=warn,sqlx=warn";

/// Exit status: the recording (or other subject) is bad.
pub const EXIT_BAD: u8 = 1;
/// Exit status: usage, configuration or environment error.
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "callgate",
    version,
    about = "SIP call-recording and consent gateway",
    after_help = "Exit status: 0 ok; 1 recording damaged, truncated or crypto-shredded \
                  (or the operation failed on its subject); 2 usage, config, database or other errors.\n\
                  Logging: RUST_LOG (default \"info,rsipstack=warn,sqlx=warn\"), to stderr."
)]
pub struct Cli {
    /// Configuration file. Default config/callgate.toml (embedded defaults if that is missing;
    /// an explicitly given file must exist).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Who is acting, for the audit log. Default: $USER, else "cli".
    #[arg(long, global = true, value_name = "NAME")]
    pub actor: Option<String>,
    /// Role acted in: supervisor, investigator, dpo or admin. Default admin (recording decrypt:
    /// supervisor). Checked against the roles table; recorded in the audit log.
    #[arg(long, global = true, value_name = "ROLE", value_parser = parse_role)]
    pub role: Option<Role>,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// Who runs this command line.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub actor_name: String,
    /// `None`: the command's default.
    pub role: Option<Role>,
}

impl Ctx {
    /// The actor, with `default` as role when `--role` was not given.
    pub fn actor(&self, default: Role) -> Actor {
        Actor::new(self.actor_name.clone(), self.role.unwrap_or(default))
    }
}

/// The default role of commands other than `recording decrypt`.
pub const DEFAULT_ROLE: Role = Role::Admin;

/// The policy clock of `sweep` and `retention show`: `CALLGATE_NOW_MS` if set (a testing hook;
/// nothing else reads it), else the wall clock.
pub const NOW_ENV: &str = "CALLGATE_NOW_MS";

fn policy_now() -> Result<i64, CliError> {
    match std::env::var(NOW_ENV) {
        Ok(v) => v.trim().parse().map_err(|_| CliError::BadNow(v)),
        Err(_) => Ok(crate::store::now_ms()),
    }
}

fn actor_name(given: Option<String>) -> Result<String, CliError> {
    let name = given
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "cli".into());
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(CliError::BadActor(name));
    }
    Ok(name)
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (SIP, media, recording) until SIGINT/SIGTERM.
    Serve,
    /// Call records.
    #[command(subcommand)]
    Calls(CallsCommand),
    /// Encrypted recordings: verify and decrypt (works without the gateway running).
    #[command(subcommand)]
    Recording(RecordingCommand),
    /// Key-encryption keys (the KEK file).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Control a call in progress (through the running gateway's HTTP API).
    #[command(subcommand)]
    Call(CallCommand),
    /// HTTP API administration.
    #[command(subcommand)]
    Api(ApiCommand),
    /// Portal accounts (acts as admin). `user add NAME --role ROLE`: the global --role is the
    /// new account's role.
    #[command(subcommand)]
    User(UserCommand),
    /// Tags on recordings (training, complaint, evidence, abusive, custom ones from config).
    #[command(subcommand)]
    Tag(TagCommand),
    /// Legal holds: held recordings are never swept nor erased.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// Delete recordings whose retention has expired (crypto-shred, file, tombstone).
    Sweep {
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Subject access: export every recording involving a number (dpo).
    Sar {
        /// The data subject's phone number (any usual spelling: +44…, 0…, spaces).
        #[arg(long, value_name = "NUMBER")]
        number: String,
        /// New (or empty) directory for the export. Default ./sar-YYYYMMDD-HHMMSS.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Erase a recording on request: crypto-shred unless under legal hold (dpo).
    Erase {
        /// Recording id (rec-…) or call id (call-…).
        id: String,
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Restrict processing: playback and export only for the dpo role (dpo).
    Restrict {
        id: String,
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Lift a restriction (dpo).
    Unrestrict {
        id: String,
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Retention status of a recording.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Investigation bundles: `export --case REF --out BUNDLE.zip ID...` writes one
    /// (investigator, dpo); `export verify BUNDLE.zip` checks one (anyone, no database needed).
    Export(ExportArgs),
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub command: Option<ExportCommand>,
    /// Case reference the bundle is for, e.g. INQ-2026-014.
    #[arg(long = "case", value_name = "REF", required = true)]
    pub case_ref: Option<String>,
    /// The bundle to write (a new file; never overwritten; mode 0600).
    #[arg(long, value_name = "BUNDLE.zip", required = true)]
    pub out: Option<PathBuf>,
    /// Why it is exported (goes into the audit entry).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Recording ids (rec-…) or call ids (call-…).
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// Check a bundle: files against the manifest, each recording authenticated under its key
    /// and re-rendered to its WAV, the audit entries' hashes. Exit 0 intact, 1 not.
    Verify {
        #[arg(value_name = "BUNDLE.zip")]
        bundle: PathBuf,
        /// Also check every audit entry against this gateway's audit log (needs the database).
        #[arg(long)]
        log: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CallCommand {
    /// Pause the recording (card details about to be taken). Token: --token or CALLGATE_API_TOKEN.
    Pause {
        /// Call id (call-…).
        id: String,
        #[arg(long)]
        token: Option<String>,
    },
    /// Resume the recording (never mid-tone: the gateway waits for the keypad to go quiet).
    Resume {
        /// Call id (call-…).
        id: String,
        #[arg(long)]
        token: Option<String>,
    },
    /// Start recording a call on an on-demand line (`record = "on-demand"`); the call record
    /// names the token as who started it.
    Record {
        /// Call id (call-…).
        id: String,
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TagCommand {
    /// Put a tag on a recording; its expiry is recomputed.
    Add {
        /// Recording id (rec-…) or call id (call-…).
        id: String,
        tag: String,
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// Remove a tag (an until-released tag starts its grace period).
    Remove {
        id: String,
        tag: String,
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApiCommand {
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a portal account: `callgate user add NAME --role supervisor|investigator|dpo|admin`.
    /// Without --password-stdin a password is generated and printed once.
    Add {
        name: String,
        /// Read the password (12+ characters) from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (generated unless --password-stdin); the user's sessions end.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account (the name stays reserved); the user's sessions end.
    Disable {
        name: String,
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// List accounts (never their hashes).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for a payment or CRM screen; printed once, only its hash is kept.
    Create {
        /// A name for the token (who uses it), e.g. `payments`.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum HoldCommand {
    /// Create a legal hold on recordings (or add recordings to an open one).
    Create {
        /// Case reference, e.g. INQ-2025-014.
        #[arg(long = "case", value_name = "REF")]
        case_ref: String,
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Recording ids (rec-…) or call ids (call-…).
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Release a legal hold; its recordings return to their other rules (plus grace).
    Release {
        #[arg(long = "case", value_name = "REF")]
        case_ref: String,
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Every legal hold, open first.
    List,
}

#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Expiry, deciding rule, tags, holds and restriction of one recording.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain; exit 1 naming the first bad entry.
    Verify,
    /// Entries, oldest first.
    List {
        #[arg(long)]
        json: bool,
        /// Only the newest N entries.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CallsCommand {
    /// List the most recent calls, newest first.
    List {
        /// A JSON array of call records (full phone numbers: operator output).
        #[arg(long)]
        json: bool,
        /// How many calls.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum RecordingCommand {
    /// Decrypt to a stereo PCM16 8 kHz WAV (left = caller, right = agent). A damaged recording
    /// is refused; a truncated one is rendered up to where it ends, with a warning.
    Decrypt {
        /// Recording id (rec-…) or call id (call-…).
        id: String,
        /// WAV file to write (created with mode 0600, replaced atomically).
        #[arg(long, value_name = "F.wav")]
        out: PathBuf,
    },
    /// Authenticate every chunk; one line: ok / truncated / damaged. Exit 0 only when complete.
    Verify {
        /// Recording id (rec-…) or call id (call-…).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create the KEK file (mode 0600) with one fresh key; refuses if it exists.
    Init,
    /// Append a new active KEK and re-wrap every data key in the database under it.
    Rotate,
    /// Key ids, which one is active, and how many recordings each wraps (never key material).
    List,
    /// Remove an old key from the key file; refused while any recording key is wrapped by it.
    Retire {
        #[arg(value_name = "KEYID")]
        key_id: String,
    },
}

/// Everything a command can fail with. `Display` is the one-line message shown to the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("database file {} does not exist (wrong [database] url in {}, or the gateway never ran)", file.display(), config.display())]
    DatabaseMissing { file: PathBuf, config: PathBuf },
    #[error("{id:?} is neither a recording id (rec-…) nor a call id (call-…)")]
    InvalidId { id: String },
    #[error("no recording {0}")]
    UnknownRecording(RecordingId),
    #[error("no call {0}")]
    UnknownCall(CallId),
    #[error("call {call_id} has no recording (recording state: {state})")]
    CallNotRecorded { call_id: CallId, state: String },
    #[error(transparent)]
    Open(#[from] crate::recording::open::OpenError),
    #[error("recording {id} is {status}; not decrypted")]
    Damaged { id: RecordingId, status: ReadStatus },
    #[error("recording {id}: {source}")]
    Wav {
        id: RecordingId,
        #[source]
        source: WavError,
    },
    #[error("{}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key rotation: new active key {new_key}, but {failed} recording key(s) could not be re-wrapped (see the log above); run `callgate keys rotate` again after fixing the cause"
    )]
    RotateIncomplete { new_key: KeyId, failed: usize },
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error("audit log is not intact: {0}")]
    AuditBroken(ChainError),
    #[error("{CALLGATE_NOW} must be Unix milliseconds, not {0:?}", CALLGATE_NOW = NOW_ENV)]
    BadNow(String),
    #[error("--actor {0:?}: 1-64 characters, no control characters")]
    BadActor(String),
    #[error("key {key_id} is not in the key file {}", file.display())]
    UnknownKeyId { key_id: KeyId, file: PathBuf },
    #[error("key {0} is the active key; rotate first (`callgate keys rotate`), then retire it")]
    RetireActive(KeyId),
    #[error("key {key_id} still wraps {count} recording key(s); run `callgate keys rotate` (and restart the gateway) first")]
    KeyInUse { key_id: KeyId, count: usize },
    #[error("subject access output {}: {problem}", path.display())]
    SarOut { path: PathBuf, problem: &'static str },
    #[error(transparent)]
    Bundle(#[from] crate::export::bundle::BundleError),
    #[error("{0} recordings in one export; at most {max} (split the case into several bundles)", max = crate::export::MAX_RECORDINGS)]
    TooManyRecordings(usize),
    #[error("audit entry #{seq} records this export, but the bundle could not be published: {source}")]
    ExportUnpublished {
        seq: i64,
        #[source]
        source: crate::export::bundle::BundleError,
    },
    #[error("gateway: {0}")]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Token(#[from] crate::portal::tokens::TokenError),
    #[error("no API token: pass --token or set CALLGATE_API_TOKEN (create one with `callgate api token create NAME`)")]
    NoApiToken,
    #[error("cannot reach the gateway's API at {addr} (is `callgate serve` running?): {source}")]
    ApiUnreachable { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("the gateway refused ({status}): {message}")]
    ApiRefused { status: u16, message: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("writing to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("reading stdin: {0}")]
    Stdin(std::io::Error),
    #[error(transparent)]
    User(#[from] crate::portal::users::UserError),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Open(OpenError::Shredded(_) | OpenError::WrongFile { .. })
            | CliError::Damaged { .. }
            | CliError::Wav {
                source: WavError::Damaged { .. } | WavError::NoHeader,
                ..
            }
            | CliError::RotateIncomplete { .. }
            | CliError::ApiRefused { .. }
            | CliError::AuditBroken(_)
            | CliError::KeyInUse { .. }
            | CliError::Retention(
                RetentionError::Held { .. }
                | RetentionError::Restricted(_)
                | RetentionError::Deleted(_)
                | RetentionError::CallErased(_)
                | RetentionError::CallHasRecording { .. },
            )
            | CliError::Serve(_) => EXIT_BAD,
            _ => EXIT_ERROR,
        }
    }
}

/// Entry point of the binary: parse, set up logging, run, print any error as one line.
pub fn main() -> ExitCode {
    // Usage errors: clap prints them (exit 2); --help / --version exit 0.
    let cli = Cli::parse();
    init_logging();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            print_error(&e);
            e.exit_code()
        }
    };
    ExitCode::from(code)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // A second init (only possible in tests) is harmless; ignore it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// One line, whatever the error text contains.
fn print_error(e: &CliError) {
    let msg = e.to_string().replace(['\n', '\r'], " ");
    let _ = writeln!(std::io::stderr(), "callgate: error: {msg}");
}

/// Runs a parsed command line; returns the exit status on success paths (verify may return 1
/// without an error: its line on stdout says why).
pub fn run(cli: Cli) -> Result<u8, CliError> {
    let config = load_config(cli.config.as_deref())?;
    let ctx = Ctx {
        actor_name: actor_name(cli.actor)?,
        role: cli.role,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve => {
                crate::serve::run(config).await?;
                Ok(0)
            }
            Command::Calls(CallsCommand::List { json, limit }) => {
                calls::list(&config, json, limit).await
            }
            Command::Recording(RecordingCommand::Verify { id }) => {
                recording::verify(&config, &id).await
            }
            Command::Recording(RecordingCommand::Decrypt { id, out }) => {
                recording::decrypt(&config, &ctx, &id, &out).await
            }
            Command::Keys(KeysCommand::Init) => keys::init(&config, &ctx).await,
            Command::Keys(KeysCommand::Rotate) => keys::rotate(&config, &ctx).await,
            Command::Keys(KeysCommand::List) => keys::list(&config).await,
            Command::Call(CallCommand::Pause { id, token }) => api::control(&config, &id, "pause", token),
            Command::Call(CallCommand::Resume { id, token }) => api::control(&config, &id, "resume", token),
            Command::Call(CallCommand::Record { id, token }) => api::control(&config, &id, "record", token),
            Command::Api(ApiCommand::Token(TokenCommand::Create { name })) => api::create_token(&config, &name),
            Command::User(UserCommand::Add { name, password_stdin }) => user::add(&config, &ctx, &name, password_stdin).await,
            Command::User(UserCommand::Passwd { name, password_stdin }) => {
                user::passwd(&config, &ctx, &name, password_stdin).await
            }
            Command::User(UserCommand::Disable { name, reason }) => {
                user::disable(&config, &ctx, &name, reason.as_deref()).await
            }
            Command::User(UserCommand::List { json }) => user::list(&config, json).await,
            Command::Keys(KeysCommand::Retire { key_id }) => {
                keys::retire(&config, &ctx, &key_id).await
            }
            Command::Tag(TagCommand::Add { id, tag, note }) => {
                retention::tag_add(&config, &ctx, &id, &tag, note.as_deref()).await
            }
            Command::Tag(TagCommand::Remove { id, tag, reason }) => {
                retention::tag_remove(&config, &ctx, &id, &tag, reason.as_deref()).await
            }
            Command::Hold(HoldCommand::Create {
                case_ref,
                reason,
                ids,
            }) => retention::hold_create(&config, &ctx, &case_ref, &reason, &ids).await,
            Command::Hold(HoldCommand::Release { case_ref, reason }) => {
                retention::hold_release(&config, &ctx, &case_ref, reason.as_deref()).await
            }
            Command::Hold(HoldCommand::List) => retention::hold_list(&config).await,
            Command::Sweep { dry_run } => {
                retention::sweep(&config, &ctx, dry_run, policy_now()?).await
            }
            Command::Erase { id, reason } => retention::erase(&config, &ctx, &id, &reason).await,
            Command::Restrict { id, reason } => {
                retention::restrict(&config, &ctx, &id, true, Some(&reason)).await
            }
            Command::Unrestrict { id, reason } => {
                retention::restrict(&config, &ctx, &id, false, reason.as_deref()).await
            }
            Command::Retention(RetentionCommand::Show { id, json }) => {
                retention::show(&config, &id, json, policy_now()?).await
            }
            Command::Sar { number, out } => sar::run(&config, &ctx, &number, out.as_deref()).await,
            Command::Audit(AuditCommand::Verify) => audit::verify(&config).await,
            Command::Export(ExportArgs {
                command: Some(ExportCommand::Verify { bundle, log }),
                ..
            }) => export::verify(&config, &ctx, &bundle, log).await,
            Command::Export(ExportArgs {
                command: None,
                case_ref,
                out,
                reason,
                ids,
            }) => {
                // Invariant: clap requires --case and --out when there is no subcommand.
                let (Some(case_ref), Some(out)) = (case_ref, out) else {
                    unreachable!("clap enforces --case and --out")
                };
                export::create(&config, &ctx, &case_ref, reason.as_deref(), &out, &ids).await
            }
            Command::Audit(AuditCommand::List { json, limit }) => {
                audit::list(&config, &ctx, json, limit).await
            }
        }
    })
}

/// `--config PATH` must exist; the default path may be missing (embedded defaults).
fn load_config(explicit: Option<&Path>) -> Result<Config, CliError> {
    Ok(match explicit {
        Some(p) => Config::load(p, false)?,
        None => Config::load(Path::new(DEFAULT_CONFIG), true)?,
    })
}

/// Connects to an existing database. Unlike the gateway, tools never create a SQLite file: a
/// missing one almost always means a wrong path, and verify must stay read-only.
async fn open_existing_store(config: &Config) -> Result<Store, CliError> {
    let url = &config.database.url;
    if Dialect::of_url(url) == Some(Dialect::Sqlite)
        && let Some(file) = crate::store::url::sqlite_file(url)
        && !file.exists()
    {
        return Err(CliError::DatabaseMissing {
            file,
            config: config.file.clone(),
        });
    }
    Ok(Store::connect(url).await?)
}

/// Writes to stdout; a closed pipe (`| head`) ends output quietly instead of panicking.
fn out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Stdout(e)),
    }
}
