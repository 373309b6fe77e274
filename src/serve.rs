//! `callgate serve`: the IO shell around the sans-IO B2BUA engine (`call::b2bua`).
//!
//! One signalling task owns the engine (transactions, dialogs, every call's state machine: no
//! locks, hundreds of calls a second) and feeds it socket bytes, media events and time. Each call
//! has a media task (`media::relay`), started through [`RelayHost`]. Call records go to the
//! database through one writer task, in order. Recording files are fsynced in batches by the
//! `Syncer`.
//!
//! Clocks: the engine gets `Instant::now()` from this shell; database times are wall-clock Unix ms.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::call::b2bua::{B2bua, MediaHost, RecordingKeys, Setup};
use crate::config::Config;
use crate::ids::CallId;
use crate::media::announcement::Announcement;
use crate::call::StartRefused;
use crate::portal::{Action, ControlError, ControlRequest};
use crate::media::reactor::MediaThreads;
use crate::media::relay::{MediaCmd, MediaEvent, MediaHandle, MediaSettings, PortPool, RecordingPlan, Syncer};
use crate::recording::keys::Keyring;
use crate::recording::storage::Storage;
use crate::sip::dialog::Local;
use crate::sip::transport::{NetEvent, SipSockets};
use crate::store::{CallRecord, Store, recording_state};

/// Why the gateway could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind SIP on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("keys: {0}")]
    Keys(#[from] crate::recording::keys::KeyError),
    #[error("{0}")]
    Storage(#[from] crate::recording::storage::StorageError),
    #[error("internal task failed: {0}")]
    Task(String),
    #[error("HTTP API: {0}")]
    Portal(#[from] crate::portal::PortalError),
    #[error("{0}")]
    Tokens(#[from] crate::portal::tokens::TokenError),
}

/// A started gateway.
pub struct Running {
    /// SIP address (UDP and TCP share the port).
    pub sip_addr: SocketAddr,
    /// HTTP API address.
    pub api_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Begins a graceful drain: new calls get 503, calls up are ended, records written.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the gateway has drained and stopped.
    pub async fn join(self) -> Result<(), ServeError> {
        self.task.await.map_err(|e| ServeError::Task(e.to_string()))?
    }
}

/// `start`, then run until SIGINT or SIGTERM, then drain.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let running = start(config).await?;
    tracing::info!(sip = %running.sip_addr, api = %running.api_addr, "callgate serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ServeError::Task(e.to_string()))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining calls");
    running.shutdown();
    running.join().await
}


/// Binds everything and starts the gateway in the current runtime.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    check_open_files(config.media.rtp_ports);
    let store = Store::connect(&config.database.url).await?;
    let (keyring, created) = Keyring::load_or_create_dev(&config.keys.kek_file)?;
    if created {
        tracing::warn!(
            file = %config.keys.kek_file.display(),
            "!!! DEVELOPMENT KEY: created a new key-encryption key because none existed. \
             Recordings are only as safe as this file. For production create keys with \
             `callgate keys init` on protected storage and back them up separately. !!!"
        );
    }
    if keyring.permissions_too_open() {
        tracing::warn!(file = %config.keys.kek_file.display(), "key file is readable by group or others; chmod 600 it");
    }
    let storage = Arc::new(Storage::from_config(&config.recording)?);
    recover_interrupted(&store, &config.database.node).await;
    let (upload_stop_tx, upload_stop_rx) = watch::channel(false);
    // S3 storage is built from `recording.s3`, so the two are present together.
    let upload_task = match (&*storage, &config.recording.s3) {
        (Storage::S3(s3), Some(s3_config)) => {
            tracing::info!(bucket = %s3.bucket(), spool = %s3.spool().root().display(), "recordings go to S3 through the local spool");
            Some(crate::recording::storage::upload::spawn(s3.clone(), store.clone(), s3_config.upload_retry, upload_stop_rx))
        }
        _ => None,
    };

    let mut announcements = HashMap::new();
    for route in &config.routes {
        let prompts = route.announcement.iter().chain(route.consent.as_ref().map(|c| &c.prompt));
        for path in prompts {
            let loaded = Announcement::load(path).map(Arc::new).map_err(|e| e.to_string());
            if let Err(e) = &loaded {
                tracing::error!(route = %route.matches, error = %e, "announcement cannot be loaded; calls on this route follow on_announcement_failure");
            }
            announcements.insert(path.clone(), loaded);
        }
    }
    let mut targets = HashMap::new();
    for route in &config.routes {
        targets.insert(route.target.clone(), resolve_target(&route.target).await);
    }

    let (sockets, tcp, sip_addr) =
        SipSockets::bind(config.sip.listen).await.map_err(|source| ServeError::Bind { addr: config.sip.listen, source })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // The transport outlives the drain (BYEs and their answers still flow); it stops last.
    let (net_stop_tx, net_stop_rx) = watch::channel(false);
    let (net_tx, net_rx) = mpsc::channel(4096);
    sockets.spawn(tcp, net_tx, config.sip.max_message_size, net_stop_rx.clone());

    let tokens = crate::portal::tokens::TokenSet::load(&config.portal.api_tokens_file)?;
    if tokens.names().count() == 0 {
        tracing::info!("no API tokens yet: the pause/resume API refuses every request (create one with `callgate api token create NAME`)");
    }
    let (control_tx, control_rx) = mpsc::channel(256);
    let portal = crate::portal::web::PortalDeps {
        store: store.clone(),
        storage: storage.clone(),
        kek_file: config.keys.kek_file.clone(),
        retention: config.retention.clone(),
        temp_dir: std::env::temp_dir(),
    };
    let (api_addr, api_server) =
        crate::portal::bind(config.portal.listen, tokens, control_tx, portal, net_stop_rx.clone()).await?;
    let api_task = tokio::spawn(api_server);
    // The retention sweeper: sleeps until the next expiry; safe beside sweepers on other nodes.
    let sweeper_task = tokio::spawn(crate::retention::sweeper::run_sweeper(
        store.clone(),
        (*storage).clone(),
        config.retention.clone(),
        net_stop_rx.clone(),
    ));
    let syncer = Syncer::default();
    let syncer_run = syncer.clone();
    let (sync_stop_tx, sync_stop_rx) = watch::channel(false);
    let sync_task = tokio::spawn(syncer_run.run(config.recording.flush, sync_stop_rx));
    let (rec_tx, rec_rx) = mpsc::channel::<CallRecord>(4096);
    let rec_task = tokio::spawn(record_writer(store.clone(), config.database.node.clone(), rec_rx));
    let (media_tx, media_rx) = mpsc::channel(4096);

    let local = Local { advertise: config.sip.advertise, port: sip_addr.port() };
    let bind_ip = if config.sip.listen.ip().is_unspecified() { config.sip.listen.ip() } else { config.media.advertise };
    let ports = PortPool::new(config.media.rtp_ports.0, config.media.rtp_ports.1);
    let shared = config.media.shared_ports.then_some((&ports, bind_ip));
    let threads = MediaThreads::start(config.media.realtime_priority, shared).map_err(|e| ServeError::Task(format!("starting the media threads: {e}")))?;
    let host = RelayHost {
        ports,
        bind_ip,
        handles: HashMap::new(),
        threads,
        settings: MediaSettings {
            timeout: config.media.timeout,
            pci: config.pci.clone(),
            reorder_window: Duration::from_millis(60),
        },
        events: media_tx,
        storage,
        store,
        syncer,
        flush: config.recording.flush,
    };
    let engine = B2bua::new(Setup {
        config: Arc::new(config),
        local,
        keyring: Arc::new(keyring),
        announcements,
        targets,
        host,
        base: (Instant::now(), crate::store::now_ms()),
    });
    let task = tokio::spawn(async move {
        let result = signalling(engine, sockets, net_rx, media_rx, control_rx, stop_rx, rec_tx).await;
        let _ = net_stop_tx.send(true);
        let _ = api_task.await;
        let _ = sweeper_task.await;
        let _ = sync_stop_tx.send(true);
        let _ = sync_task.await;
        let _ = rec_task.await;
        // Last: every recording is sealed and its row final, so the queue is complete.
        let _ = upload_stop_tx.send(true);
        if let Some(t) = upload_task {
            let _ = t.await;
        }
        result
    });
    Ok(Running { sip_addr, api_addr, stop: stop_tx, task })
}

/// Every call holds four sockets (RTP and RTCP toward each side): raise the open-files limit as
/// far as allowed, and say so if it still caps the calls below what the port range allows.
fn check_open_files(ports: (u16, u16)) {
    let by_ports = (u64::from(ports.1.saturating_sub(ports.0)) + 1) / 4;
    match crate::sys::raise_open_files_limit() {
        Ok(limit) => {
            // Headroom for SIP over TCP, the database, recording files and the API.
            let by_files = limit.saturating_sub(256) / 4;
            if by_files < by_ports {
                tracing::warn!(
                    open_files = limit,
                    calls = by_files,
                    "the open-files limit allows only about this many concurrent calls; raise it \
                     (LimitNOFILE= in the systemd unit, ulimit -Hn) for more"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read or raise the open-files limit"),
    }
}

/// This node's calls left "recording" by a crash: their files lack the final chunk. Calls of
/// other gateways sharing the database are theirs to recover: they may be live right now.
/// Rows without a node (written before nodes were recorded) count as this node's.
async fn recover_interrupted(store: &Store, node: &str) {
    let Ok(calls) = store.calls_in_state(recording_state::RECORDING).await else { return };
    let (mine, others): (Vec<_>, Vec<_>) = calls
        .into_iter()
        .partition(|c| c.node.as_deref().is_none_or(|n| n == node));
    if !others.is_empty() {
        tracing::info!(
            calls = others.len(),
            "calls recording on other gateways sharing the database left to them"
        );
    }
    for mut c in mine {
        c.recording_state = recording_state::TRUNCATED.into();
        c.recording_error = Some("the gateway stopped before the recording was finished".into());
        if c.ended_at_ms.is_none() {
            c.hangup_cause = Some("gateway-restart".into());
            c.hangup_side = Some("gateway".into());
        }
        if let Err(e) = store.upsert_call(&c).await {
            tracing::warn!(call = %c.call_id, error = %e, "could not mark interrupted call");
        }
        if let Some(id) = &c.recording_id
            && let Ok(Some(mut r)) = store.get_recording(id).await {
                r.state = recording_state::TRUNCATED.into();
                let _ = store.upsert_recording(&r).await;
            }
    }
}

async fn resolve_target(target: &str) -> Option<SocketAddr> {
    if let Some(a) = crate::sip::dialog::uri_socket_addr(target) {
        return Some(a);
    }
    let (host, port) = crate::sip::dialog::uri_host_port(target)?;
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    match tokio::time::timeout(Duration::from_secs(5), lookup).await {
        Ok(Ok(mut addrs)) => addrs.next(),
        _ => {
            tracing::error!(target = %target, "route target does not resolve; its calls will get 503");
            None
        }
    }
}

/// Writes call records in order; bounded queue, one connection's worth of work at a time.
async fn record_writer(store: Store, node: String, mut rx: mpsc::Receiver<CallRecord>) {
    while let Some(mut rec) = rx.recv().await {
        // Stamped here, in the shell: the call core knows nothing of other gateways.
        rec.node = Some(node.clone());
        if let Err(e) = store.upsert_call(&rec).await {
            tracing::error!(call = %rec.call_id, error = %e, "call record not written");
        }
    }
}


/// How long a drain waits for calls to end before giving up on them.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// The signalling task: feeds the engine and carries out its outputs.
async fn signalling(
    mut engine: B2bua<RelayHost>,
    sockets: SipSockets,
    mut net: mpsc::Receiver<NetEvent>,
    mut media: mpsc::Receiver<MediaEvent>,
    mut control: mpsc::Receiver<ControlRequest>,
    mut stop: watch::Receiver<bool>,
    records: mpsc::Sender<CallRecord>,
) -> Result<(), ServeError> {
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        engine.handle_timeout(now);
        while let Some(t) = engine.poll_transmit() {
            sockets.send(&t);
        }
        while let Some(r) = engine.poll_record() {
            // Awaiting here is the back-pressure: a slow database slows signalling, never drops.
            let _ = records.send(r).await;
        }
        if let Some(d) = drain_deadline
            && (engine.is_drained() || now >= d) {
                break;
            }
        let next = engine.poll_timeout().unwrap_or(now + Duration::from_secs(1)).min(now + Duration::from_secs(1));
        tokio::select! {
            ev = net.recv() => match ev {
                Some(NetEvent::Message { bytes, peer }) => engine.handle_bytes(Instant::now(), &bytes, peer),
                Some(NetEvent::Closed { peer }) => engine.transport_failed(Instant::now(), peer),
                None => break,
            },
            ev = media.recv() => if let Some(ev) = ev {
                if let MediaEvent::Finished { call, .. } = &ev {
                    engine.host_mut().handles.remove(call);
                }
                engine.handle_media(Instant::now(), ev);
            },
            req = control.recv() => if let Some(req) = req {
                if req.action == Action::Record {
                    // Recording starts through the engine: it makes the keys and the record.
                    let by = format!("api:{}", req.by);
                    let r = match engine.start_recording(Instant::now(), &req.call, &by) {
                        Err(StartRefused::UnknownCall) => Err(ControlError::UnknownCall),
                        r => r.map_err(ControlError::NotStarted),
                    };
                    let _ = req.reply.send(r);
                } else {
                    engine.host_mut().control(req);
                }
            },
            _ = stop.changed(), if drain_deadline.is_none() => {
                drain_deadline = Some(Instant::now() + DRAIN_GRACE);
                engine.shutdown(Instant::now());
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {}
        }
    }
    while let Some(t) = engine.poll_transmit() {
        sockets.send(&t);
    }
    // Calls whose media never reported: write what we know.
    let mut left: Vec<CallRecord> = std::iter::from_fn(|| engine.poll_record()).collect();
    left.extend(engine.abandon());
    for r in left {
        let _ = records.send(r).await;
    }
    Ok(())
}

/// Media for real: RTP port pairs from the pool and one relay task per call.
pub struct RelayHost {
    ports: Arc<PortPool>,
    bind_ip: IpAddr,
    handles: HashMap<CallId, MediaHandle>,
    threads: MediaThreads,
    settings: MediaSettings,
    events: mpsc::Sender<MediaEvent>,
    storage: Arc<Storage>,
    store: Store,
    syncer: Syncer,
    flush: Duration,
}

impl RelayHost {
    /// An API pause/resume: straight to the call's media task (the keypad-protection controller
    /// lives there); the answer goes back to the HTTP request without blocking signalling.
    fn control(&mut self, req: ControlRequest) {
        let Some(h) = self.handles.get(&req.call) else {
            let _ = req.reply.send(Err(ControlError::UnknownCall));
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        if h.cmd.try_send(MediaCmd::Control { pause: req.action == Action::Pause, reply: tx }).is_err() {
            let _ = req.reply.send(Err(ControlError::Gone));
            return;
        }
        tokio::spawn(async move {
            let r = match rx.await {
                Ok(r) => r.map_err(ControlError::from),
                Err(_) => Err(ControlError::Gone),
            };
            let _ = req.reply.send(r);
        });
    }
}

impl RelayHost {
    fn plan(&self, k: RecordingKeys) -> Box<RecordingPlan> {
        Box::new(RecordingPlan {
            recording_id: k.recording_id,
            key_id: k.key_id,
            dek: k.dek,
            wrapped: k.wrapped,
            storage: self.storage.clone(),
            store: self.store.clone(),
            flush: self.flush,
            syncer: self.syncer.clone(),
        })
    }
}

impl MediaHost for RelayHost {
    fn load_permille(&self) -> u32 {
        self.threads.next_call_load()
    }

    fn open(&mut self, call: &CallId) -> Option<(u16, u16)> {
        let handle = if self.threads.shared_ports() {
            self.threads.spawn_shared(call.clone(), self.settings.clone(), self.events.clone())?
        } else {
            let caller = self.ports.bind_pair(self.bind_ip).ok()?;
            let agent = self.ports.bind_pair(self.bind_ip).ok()?;
            self.threads.spawn(call.clone(), caller, agent, self.settings.clone(), self.events.clone())
        };
        let ports = (handle.caller_port, handle.agent_port);
        self.handles.insert(call.clone(), handle);
        Some(ports)
    }

    fn command(&mut self, call: &CallId, cmd: MediaCmd) {
        if let Some(h) = self.handles.get(call) {
            // Bounded per call; a relay task that cannot keep up loses a command, not memory.
            if h.cmd.try_send(cmd).is_err() {
                tracing::warn!(call = %call, "media command queue full; command dropped");
            }
        }
    }

    fn bridge(&mut self, call: &CallId, recording: Option<RecordingKeys>) {
        let plan = recording.map(|k| self.plan(k));
        self.command(call, MediaCmd::Bridge { recording: plan });
    }

    fn start_recording(&mut self, call: &CallId, recording: RecordingKeys) {
        let plan = self.plan(recording);
        self.command(call, MediaCmd::StartRecording { plan });
    }
}
