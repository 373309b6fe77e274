//! The `callgate` command line (see `DESIGN.md`, "Interface contract").
//!
//! ```text
//! callgate [--config PATH] serve
//! callgate calls list [--json] [--limit N]
//! callgate recording decrypt ID --out F.wav
//! callgate recording verify ID
//! callgate keys init | rotate | list
//! ```
//!
//! Exit status: `0` success; `1` the subject itself is bad (a recording damaged, truncated or
//! crypto-shredded; a key rotation left recordings behind; the gateway stopped with an error);
//! `2` anything else (usage, configuration, database, unknown id, missing files).
//!
//! Every failure is one line on stderr, `callgate: error: …`, built from the typed error's
//! `Display` (never `Debug`). Nothing here prints key material, a database password (the store
//! redacts its URL) or a full phone number outside `calls list --json`.

mod api;
mod calls;
mod keys;
mod recording;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::ids::{CallId, KeyId, RecordingId};
use crate::recording::keys::KeyError;
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
    #[command(subcommand)]
    pub command: Command,
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
}

#[derive(Subcommand, Debug)]
pub enum ApiCommand {
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
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
    #[error(
        "recording storage {storage:?}: S3 storage is not supported yet by this command; use a directory"
    )]
    S3Unsupported { storage: String },
    #[error("{id:?} is neither a recording id (rec-…) nor a call id (call-…)")]
    InvalidId { id: String },
    #[error("no recording {0}")]
    UnknownRecording(RecordingId),
    #[error("no call {0}")]
    UnknownCall(CallId),
    #[error("call {call_id} has no recording (recording state: {state})")]
    CallNotRecorded { call_id: CallId, state: String },
    #[error(
        "recording {0}: its data key has been deleted (crypto-shredded); the audio can no longer be decrypted"
    )]
    Shredded(RecordingId),
    #[error("recording {id}: cannot unwrap its data key with key {key_id}: {source}")]
    Unwrap {
        id: RecordingId,
        key_id: KeyId,
        #[source]
        source: KeyError,
    },
    #[error("recording {id}: the file's header names recording {found}; refusing to use it")]
    WrongFile { id: RecordingId, found: RecordingId },
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
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Shredded(_)
            | CliError::WrongFile { .. }
            | CliError::Damaged { .. }
            | CliError::Wav {
                source: WavError::Damaged { .. } | WavError::NoHeader,
                ..
            }
            | CliError::RotateIncomplete { .. }
            | CliError::ApiRefused { .. }
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
                recording::decrypt(&config, &id, &out).await
            }
            Command::Keys(KeysCommand::Init) => keys::init(&config),
            Command::Keys(KeysCommand::Rotate) => keys::rotate(&config).await,
            Command::Keys(KeysCommand::List) => keys::list(&config).await,
            Command::Call(CallCommand::Pause { id, token }) => api::control(&config, &id, true, token),
            Command::Call(CallCommand::Resume { id, token }) => api::control(&config, &id, false, token),
            Command::Api(ApiCommand::Token(TokenCommand::Create { name })) => api::create_token(&config, &name),
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
