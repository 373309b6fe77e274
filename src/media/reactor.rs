//! Media threads: the IO shell that drives every call's [`MediaTask`].
//!
//! One thread per core owns the RTP/RTCP sockets of its calls and waits on all of them with one
//! edge-triggered epoll (mio). When woken it drains each ready socket with `recvmmsg`, runs the
//! call's media core (`MediaTask`, which relays on the call's own sockets) on the packets, and
//! keeps every call's next deadline in one heap, so a thousand calls cost one `epoll_wait` per
//! wake-up instead of a task wake-up (and a futex) per packet. Signalling reaches a call through
//! its bounded command channel; the channel wakes the media thread with the call's slot. Work
//! that may block on a disk or a database (finishing a recording) moves to the async runtime.
//!
//! With shared ports (`[media] shared_ports`) each thread has one RTP and one RTCP socket for
//! all its calls and finds a datagram's call by its source, the address the peer's SDP gave.
//! A call's packets are 20 ms apart, so with a socket per call every datagram costs a read of
//! its own (and the kernel's per-socket work, cold in the cache); on one socket one `recvmmsg`
//! brings the datagrams of many calls, however promptly the thread keeps up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use tokio::sync::mpsc;

use super::load::LoadMeter;
use super::relay::{
    MediaCmd, MediaEvent, MediaHandle, MediaSettings, MediaTask, PortPair, PortPool,
};
use crate::ids::{CallId, Leg};
use crate::recording::container::EndReason;
use crate::sys::{BATCH, RecvBatch};

/// Commands queued per call (signalling sends a handful per call; a full queue drops one).
const CMD_QUEUE: usize = 16;
/// How often every call's media timeout is checked.
const TIMEOUT_CHECK: Duration = Duration::from_millis(500);
/// A real-time media thread starts a pass at most this often. Woken for every datagram it would
/// spend its CPU on wake-ups (1.6× the CPU per call at 500 calls); pacing its passes keeps the
/// batches that normal scheduling gets from the run queue, and bounds the wait it adds.
const RT_PASS_INTERVAL: Duration = Duration::from_micros(500);
const WAKE: Token = Token(usize::MAX);
/// The thread's shared RTP and RTCP sockets (`[media] shared_ports`).
const SHARED_RTP: Token = Token(usize::MAX - 1);
const SHARED_RTCP: Token = Token(usize::MAX - 2);
/// Batches read from a shared socket in one pass before timers and commands get their turn;
/// what is left is read in the next pass, which then does not wait.
const SHARED_BATCHES_PER_PASS: usize = 64;
/// Receive queue asked for a shared socket: about 40 ms of 1,500 calls' datagrams.
const SHARED_RECV_BUFFER: usize = 8 << 20;

thread_local! {
    /// Set on media threads: their blocking file IO runs inline (the thread is ours).
    static ON_MEDIA_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is a media thread.
pub(super) fn on_media_thread() -> bool {
    ON_MEDIA_THREAD.with(|f| f.get())
}

/// What other threads hand to a media thread.
enum Inbound {
    Call(Box<MediaTask>, mpsc::Receiver<MediaCmd>),
    /// A call's command channel has something (or was closed).
    Ready {
        slot: usize,
        epoch: u32,
    },
}

struct Shared {
    waker: mio::Waker,
    inbox: Mutex<Vec<Inbound>>,
    stop: AtomicBool,
    /// Calls on this thread (for placing new ones).
    calls: AtomicUsize,
    /// Busy share of the thread's recent time, thousandths ([`LoadMeter::permille`]).
    load: AtomicU32,
    /// Passes of the loop so far (wake-ups).
    passes: AtomicU64,
    /// Datagrams on the shared ports from an address no call on this thread expects.
    strangers: AtomicU64,
    /// The thread's shared RTP/RTCP pair (`[media] shared_ports`), owned: its ports stay out of
    /// the pool for the gateway's life.
    ports: Option<PortPair>,
}

impl Shared {
    fn push(&self, m: Inbound) {
        let first = match self.inbox.lock() {
            Ok(mut q) => {
                q.push(m);
                q.len() == 1
            }
            Err(_) => return,
        };
        // One wake-up per batch of messages: later pushes find the thread already woken.
        if first {
            let _ = self.waker.wake();
        }
    }
}

/// Wakes the media thread when a call's command channel becomes ready.
struct SlotWaker {
    shared: Arc<Shared>,
    slot: usize,
    epoch: u32,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.push(Inbound::Ready {
            slot: self.slot,
            epoch: self.epoch,
        });
    }
}

/// The media threads of one gateway. Dropping it stops them; calls still up are finished
/// (recordings sealed) on the async runtime.
pub struct MediaThreads {
    threads: Vec<Arc<Shared>>,
    realtime: Option<u8>,
}

/// Where shared ports come from: the first pairs of this pool, bound on this address.
pub type SharedPorts<'a> = (&'a Arc<PortPool>, IpAddr);

impl MediaThreads {
    /// One thread per available core, at real-time priority `realtime` if given; must be
    /// called inside a tokio runtime (the threads hand recording finishes and database writes
    /// to it).
    pub fn start(
        realtime: Option<u8>,
        shared: Option<SharedPorts<'_>>,
    ) -> io::Result<MediaThreads> {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 64);
        Self::build(n, realtime, shared)
    }

    pub fn with_threads(n: usize) -> io::Result<MediaThreads> {
        Self::with_options(n, None)
    }

    /// `n` threads on shared ports: each binds the next free pair of `pool` on `ip` for all
    /// its calls (see [`MediaThreads::spawn_shared`]).
    pub fn with_shared_ports(
        n: usize,
        pool: &Arc<PortPool>,
        ip: IpAddr,
    ) -> io::Result<MediaThreads> {
        Self::build(n, None, Some((pool, ip)))
    }

    /// `n` threads; with `realtime`, each puts itself under `SCHED_FIFO` at that priority before
    /// it serves a call. Refused (no CAP_SYS_NICE or `LimitRTPRIO`): one warning, and the
    /// threads run at normal priority (see [`MediaThreads::realtime`]).
    pub fn with_options(n: usize, realtime: Option<u8>) -> io::Result<MediaThreads> {
        Self::build(n, realtime, None)
    }

    fn build(
        n: usize,
        realtime: Option<u8>,
        shared_ports: Option<SharedPorts<'_>>,
    ) -> io::Result<MediaThreads> {
        let rt = tokio::runtime::Handle::current();
        let mut threads = Vec::with_capacity(n);
        let (applied_tx, applied_rx) = std::sync::mpsc::channel();
        for i in 0..n {
            let poll = mio::Poll::new()?;
            let waker = mio::Waker::new(poll.registry(), WAKE)?;
            let ports = match shared_ports {
                Some((pool, ip)) => Some(bind_shared(pool, ip, &poll)?),
                None => None,
            };
            let shared = Arc::new(Shared {
                waker,
                inbox: Mutex::new(Vec::new()),
                stop: AtomicBool::new(false),
                calls: AtomicUsize::new(0),
                load: AtomicU32::new(0),
                passes: AtomicU64::new(0),
                strangers: AtomicU64::new(0),
                ports,
            });
            let (sh, rt, applied) = (shared.clone(), rt.clone(), applied_tx.clone());
            std::thread::Builder::new()
                .name(format!("callgate-media-{i}"))
                .spawn(move || {
                    let _guard = rt.enter();
                    ON_MEDIA_THREAD.with(|f| f.set(true));
                    let rt_result = realtime.map(crate::sys::set_realtime);
                    let paced = matches!(rt_result, Some(Ok(())));
                    let _ = applied.send(rt_result);
                    drop(applied);
                    let mut media = MediaLoop::new(poll, sh, rt);
                    if paced {
                        media.min_pass_interval = RT_PASS_INTERVAL;
                    }
                    media.run();
                })?;
            threads.push(shared);
        }
        drop(applied_tx);
        // Each thread answers before its loop starts: no call is served before this is known.
        let (mut applied, mut refused) = (0, None);
        for answer in applied_rx.iter().take(n) {
            match answer {
                Some(Ok(())) => applied += 1,
                Some(Err(e)) => {
                    refused.get_or_insert(e);
                }
                None => {}
            }
        }
        if let Some(e) = refused {
            tracing::warn!(
                priority = realtime.unwrap_or(0),
                error = %e,
                "media.realtime_priority could not be applied (needs CAP_SYS_NICE or LimitRTPRIO); \
                 media threads run at normal priority"
            );
        }
        let realtime = realtime.filter(|_| applied == n);
        if let Some(p) = realtime {
            tracing::info!(
                priority = p,
                threads = n,
                "media threads run under SCHED_FIFO"
            );
        }
        Ok(MediaThreads { threads, realtime })
    }

    /// The `SCHED_FIFO` priority every media thread runs at, if one was asked and applied.
    pub fn realtime(&self) -> Option<u8> {
        self.realtime
    }

    /// The thread the next call goes to: the one with the fewest calls.
    fn next_thread(&self) -> &Arc<Shared> {
        self.threads
            .iter()
            .min_by_key(|t| t.calls.load(Ordering::Relaxed))
            .expect("at least one media thread")
    }

    /// Busy share, in thousandths, of the thread the next call would go to (see
    /// [`super::load`]): admission control refuses new calls above its limit.
    pub fn next_call_load(&self) -> u32 {
        self.next_thread().load.load(Ordering::Relaxed)
    }

    /// Passes (wake-ups) of all media threads so far.
    pub fn passes(&self) -> u64 {
        self.threads
            .iter()
            .map(|t| t.passes.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether calls go on the threads' shared ports ([`MediaThreads::spawn_shared`]).
    pub fn shared_ports(&self) -> bool {
        self.threads.iter().all(|t| t.ports.is_some())
    }

    /// Datagrams that reached the shared ports from an address no call expected (dropped).
    pub fn strangers(&self) -> u64 {
        self.threads
            .iter()
            .map(|t| t.strangers.load(Ordering::Relaxed))
            .sum()
    }

    /// Starts a call's media on the least-loaded thread, on that thread's shared ports (both
    /// legs: the SDP toward each side names the same port). `None` without shared ports.
    pub fn spawn_shared(
        &self,
        call: CallId,
        settings: MediaSettings,
        events: mpsc::Sender<MediaEvent>,
    ) -> Option<MediaHandle> {
        let shared = self.next_thread();
        let ports = shared.ports.as_ref()?;
        let (caller, agent) = (ports.shared_view(), ports.shared_view());
        Some(self.spawn_on(shared, call, caller, agent, settings, events))
    }

    /// Starts a call's media on the least-loaded thread.
    pub fn spawn(
        &self,
        call: CallId,
        caller: PortPair,
        agent: PortPair,
        settings: MediaSettings,
        events: mpsc::Sender<MediaEvent>,
    ) -> MediaHandle {
        self.spawn_on(self.next_thread(), call, caller, agent, settings, events)
    }

    fn spawn_on(
        &self,
        shared: &Arc<Shared>,
        call: CallId,
        caller: PortPair,
        agent: PortPair,
        settings: MediaSettings,
        events: mpsc::Sender<MediaEvent>,
    ) -> MediaHandle {
        let (tx, rx) = mpsc::channel(CMD_QUEUE);
        let handle = MediaHandle {
            cmd: tx,
            caller_port: caller.port,
            agent_port: agent.port,
        };
        let task = Box::new(MediaTask::new(call, caller, agent, settings, events));
        shared.calls.fetch_add(1, Ordering::Relaxed);
        shared.push(Inbound::Call(task, rx));
        handle
    }
}

/// Binds a thread's shared pair from `pool` and registers it with the thread's poller.
fn bind_shared(pool: &Arc<PortPool>, ip: IpAddr, poll: &mio::Poll) -> io::Result<PortPair> {
    let pair = pool
        .bind_pair(ip)
        .map_err(|e| io::Error::new(io::ErrorKind::AddrInUse, e))?;
    for (sock, token) in [(&pair.rtp, SHARED_RTP), (&pair.rtcp, SHARED_RTCP)] {
        let granted = crate::sys::set_recv_buffer(sock, SHARED_RECV_BUFFER)?;
        // The kernel reports twice the payload it sets aside.
        if granted < SHARED_RECV_BUFFER {
            tracing::warn!(
                port = pair.port,
                granted,
                asked = SHARED_RECV_BUFFER,
                "shared media socket got a short receive queue (raise net.core.rmem_max, or \
                 give the gateway CAP_NET_ADMIN): a stall of a few ms could drop packets"
            );
        }
        poll.registry()
            .register(&mut SourceFd(&sock.as_raw_fd()), token, Interest::READABLE)?;
    }
    Ok(pair)
}

impl Drop for MediaThreads {
    fn drop(&mut self) {
        for t in &self.threads {
            t.stop.store(true, Ordering::Release);
            let _ = t.waker.wake();
        }
    }
}

/// One call on a media thread.
struct Slot {
    task: Box<MediaTask>,
    rx: mpsc::Receiver<MediaCmd>,
    waker: Waker,
    epoch: u32,
    /// The deadline this call has in the heap (others there for it are stale).
    deadline: Option<Instant>,
    /// Already in this pass's work list.
    touched: bool,
    /// The command channel woke us: poll it (polling it on every packet touched its memory
    /// for nothing: a cache miss per packet).
    commands: bool,
    /// The sockets' descriptors, kept here so a read does not chase pointers into the task.
    fds: [RawFd; 4],
    /// On the thread's shared ports: the call's sockets are the thread's, found by peer address.
    shared: bool,
    /// The peer addresses this call is found by on the shared ports, as registered in
    /// [`MediaLoop::peers`] (the order of [`MediaTask::peer_addrs`]).
    peers: [Option<SocketAddr>; 4],
}

/// Which call a peer address on the shared ports belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PeerRef {
    slot: usize,
    epoch: u32,
    leg: Leg,
}

/// A multiplicative hash for socket addresses: the map is looked up once per datagram, and
/// its keys are peers' SDP addresses, which nobody outside signalling chooses (SipHash's
/// flooding resistance is not needed; a table of a few thousand entries is).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type PeerMap = HashMap<SocketAddr, PeerRef, BuildHasherDefault<AddrHasher>>;

struct MediaLoop {
    poll: mio::Poll,
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    epochs: Vec<u32>,
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    work: Vec<usize>,
    /// Calls with events still waiting for room in the signalling channel.
    backlog: Vec<usize>,
    batch: RecvBatch,
    meter: LoadMeter,
    /// A pass starts no sooner than this after the previous one began (see
    /// [`RT_PASS_INTERVAL`]); zero: as soon as there is work.
    min_pass_interval: Duration,
    /// The shared RTP and RTCP sockets' descriptors, if the thread has shared ports.
    shared_fds: Option<[RawFd; 2]>,
    /// Calls by peer address on the shared RTP (0) and RTCP (1) sockets.
    peers: [PeerMap; 2],
    /// A shared socket was left with datagrams queued (read cap reached): read it next pass.
    shared_more: [bool; 2],
    /// Strangers already reported, and when the next report may be made.
    strangers_reported: (u64, Instant),
}

impl MediaLoop {
    fn new(poll: mio::Poll, shared: Arc<Shared>, rt: tokio::runtime::Handle) -> MediaLoop {
        let shared_fds = shared
            .ports
            .as_ref()
            .map(|p| [p.rtp.as_raw_fd(), p.rtcp.as_raw_fd()]);
        MediaLoop {
            shared_fds,
            peers: Default::default(),
            shared_more: [false; 2],
            strangers_reported: (0, Instant::now()),
            poll,
            shared,
            rt,
            slots: Vec::new(),
            free: Vec::new(),
            epochs: Vec::new(),
            timers: BinaryHeap::new(),
            work: Vec::new(),
            backlog: Vec::new(),
            batch: RecvBatch::new(),
            meter: LoadMeter::new(Instant::now()),
            min_pass_interval: Duration::ZERO,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_check = Instant::now() + TIMEOUT_CHECK;
        let mut woke: Option<Instant> = None;
        loop {
            let mut now = Instant::now();
            // The pass that just ended was work; the wait before it was not.
            if let Some(w) = woke {
                self.meter.busy(w, now);
                self.shared
                    .load
                    .store(self.meter.permille(), Ordering::Relaxed);
                // Paced: what arrives meanwhile waits for the next pass, in one batch.
                let next_pass = w + self.min_pass_interval;
                if now < next_pass {
                    std::thread::sleep(next_pass - now);
                    now = Instant::now();
                }
            }
            let mut wait = next_check.saturating_duration_since(now);
            if let Some(Reverse((t, _, _))) = self.timers.peek() {
                wait = wait.min(t.saturating_duration_since(now));
            }
            // Wake at least once a window, so the load admission control reads is never older.
            wait = wait.min(super::load::WINDOW);
            // Events waiting for the signalling channel: look again soon.
            if !self.backlog.is_empty() {
                wait = wait.min(Duration::from_millis(5));
            }
            // Datagrams left on a shared socket: no edge will announce them again.
            let mut shared_ready = self.shared_more;
            if shared_ready.contains(&true) {
                wait = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "media thread poll failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            woke = Some(Instant::now());
            self.shared.passes.fetch_add(1, Ordering::Relaxed);
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKE => {}
                    SHARED_RTP => shared_ready[0] = true,
                    SHARED_RTCP => shared_ready[1] = true,
                    t => self.read(t.0),
                }
            }
            for (k, ready) in shared_ready.into_iter().enumerate() {
                if ready {
                    self.read_shared(k == 1);
                }
            }
            self.take_inbox();
            let now = Instant::now();
            while let Some(&Reverse((t, slot, epoch))) = self.timers.peek() {
                if t > now {
                    break;
                }
                self.timers.pop();
                if let Some(s) = self.slot_mut(slot, epoch)
                    && s.deadline == Some(t)
                {
                    s.deadline = None;
                    self.touch(slot);
                }
            }
            if now >= next_check {
                next_check = now + TIMEOUT_CHECK;
                self.report_strangers(now);
                for i in 0..self.slots.len() {
                    if let Some(s) = &mut self.slots[i] {
                        s.task.check_media_timeout(now);
                        self.touch(i);
                    }
                }
            }
            for i in std::mem::take(&mut self.backlog) {
                self.touch(i);
            }
            let work = std::mem::take(&mut self.work);
            for &i in &work {
                self.service(i, now);
            }
            self.work = work;
            self.work.clear();
        }
        self.shutdown();
    }

    fn slot_mut(&mut self, slot: usize, epoch: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(slot)?
            .as_mut()
            .filter(|s| s.epoch == epoch)
    }

    fn touch(&mut self, slot: usize) {
        if let Some(Some(s)) = self.slots.get_mut(slot)
            && !s.touched
        {
            s.touched = true;
            self.work.push(slot);
        }
    }

    /// Drains one ready socket (edge-triggered: until the kernel has nothing left), then
    /// services the call at once, while its state is still in the cache: deferred to the end of
    /// the pass, behind up to a thousand other calls' packets, the first touch of each call's
    /// task and of its tracks and delay line were cache misses (a third of the user-side time
    /// at 1,000 calls on one core).
    fn read(&mut self, token: usize) {
        let slot = token >> 2;
        match catch_unwind(AssertUnwindSafe(|| self.read_socket(token))) {
            Ok(true) => self.service(slot, Instant::now()),
            Ok(false) => {}
            Err(_) => self.contain(slot),
        }
    }

    /// A bug in one call's media code ends that call, not the thread and every call on it
    /// (what a task per call gave for free: tokio catches a task's panic).
    fn contain(&mut self, slot: usize) {
        tracing::error!("a call's media code panicked: that call is ended, the others go on");
        self.remove(slot, EndReason::Failed);
    }

    /// Returns whether the token still names a call.
    fn read_socket(&mut self, token: usize) -> bool {
        let (slot, which) = (token >> 2, token & 3);
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return false;
        };
        let leg = if which % 2 == 0 {
            Leg::Caller
        } else {
            Leg::Agent
        };
        let rtcp = which >= 2;
        let mut errors = 0;
        while let Read::Got(n) = read_batch(&mut self.batch, s.fds[which], &mut errors, 4) {
            for k in 0..n {
                let (pkt, src) = self.batch.get(k);
                let Some(src) = src else { continue };
                if rtcp {
                    s.task.on_rtcp(leg, pkt, src);
                } else {
                    s.task.on_rtp(leg, pkt, src);
                }
            }
            // Fewer than asked: the queue was empty; a later datagram raises a new edge.
            if n < BATCH {
                break;
            }
        }
        true
    }

    /// Reads a shared socket: each datagram goes to the call its source belongs to, which is
    /// serviced right away, while its state is in the cache (see [`MediaLoop::read`]).
    fn read_shared(&mut self, rtcp: bool) {
        let Some(fds) = self.shared_fds else { return };
        let which = usize::from(rtcp);
        self.shared_more[which] = false;
        let mut errors = 0;
        let mut batches = 0;
        loop {
            if batches == SHARED_BATCHES_PER_PASS {
                self.shared_more[which] = true;
                break;
            }
            // Every call's peers share the socket, so more ICMP errors may queue on it.
            let n = match read_batch(&mut self.batch, fds[which], &mut errors, 16) {
                Read::Got(n) => n,
                Read::Empty => break,
                Read::Broken => {
                    // Look again next pass rather than spin on a broken socket now.
                    self.shared_more[which] = true;
                    break;
                }
            };
            batches += 1;
            let now = Instant::now();
            for k in 0..n {
                self.deliver(k, rtcp, now);
            }
            if n < BATCH {
                break;
            }
        }
    }

    /// Warns, at most once a minute, of datagrams on the shared ports from unexpected sources:
    /// a peer behind NAT, or one that sends from another address than its SDP gives, loses its
    /// audio on shared ports (no address is logged: peers' addresses are personal data).
    fn report_strangers(&mut self, now: Instant) {
        let total = self.shared.strangers.load(Ordering::Relaxed);
        let (reported, next) = self.strangers_reported;
        if total > reported && now >= next {
            tracing::warn!(
                datagrams = total - reported,
                "media datagrams on the shared ports from addresses no call's SDP names were \
                 dropped (a peer behind NAT, or sending from another port than it offered?); \
                 such peers need media.shared_ports = false"
            );
            self.strangers_reported = (total, now + Duration::from_secs(60));
        }
    }

    /// Datagram `k` of the batch, read from a shared socket, to its call.
    fn deliver(&mut self, k: usize, rtcp: bool, now: Instant) {
        let (pkt, src) = self.batch.get(k);
        let Some(src) = src else { return };
        let Some(&PeerRef { slot, epoch, leg }) = self.peers[usize::from(rtcp)].get(&src) else {
            // Not a peer of any call here: never relayed, never recorded.
            self.shared.strangers.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        if s.epoch != epoch {
            return;
        }
        let handled = catch_unwind(AssertUnwindSafe(|| {
            if rtcp {
                s.task.on_rtcp(leg, pkt, src);
            } else {
                s.task.on_rtp(leg, pkt, src);
            }
        }));
        match handled {
            Ok(()) => self.service(slot, now),
            Err(_) => self.contain(slot),
        }
    }

    fn take_inbox(&mut self) {
        let msgs = match self.shared.inbox.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => return,
        };
        for m in msgs {
            match m {
                Inbound::Call(task, rx) => self.add(task, rx),
                Inbound::Ready { slot, epoch } => {
                    if let Some(s) = self.slot_mut(slot, epoch) {
                        s.commands = true;
                        self.touch(slot);
                    }
                }
            }
        }
    }

    fn add(&mut self, task: Box<MediaTask>, rx: mpsc::Receiver<MediaCmd>) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.epochs.push(0);
            self.slots.len() - 1
        });
        self.epochs[slot] = self.epochs[slot].wrapping_add(1);
        let epoch = self.epochs[slot];
        let shared = task.on_shared_ports();
        // On shared ports the thread reads the sockets; the call is found by its peers.
        let registered = if shared {
            Ok(())
        } else {
            task.sockets().iter().enumerate().try_for_each(|(k, sock)| {
                let fd = sock.as_raw_fd();
                self.poll.registry().register(
                    &mut SourceFd(&fd),
                    Token(slot << 2 | k),
                    Interest::READABLE,
                )
            })
        };
        let waker = Waker::from(Arc::new(SlotWaker {
            shared: self.shared.clone(),
            slot,
            epoch,
        }));
        let fds = task.sockets().map(|s| s.as_raw_fd());
        self.slots[slot] = Some(Slot {
            task,
            rx,
            waker,
            epoch,
            deadline: None,
            touched: false,
            commands: true,
            fds,
            shared,
            peers: [None; 4],
        });
        if let Err(e) = registered {
            tracing::error!(error = %e, "could not watch a call's media sockets");
            self.remove(slot, EndReason::Failed);
            return;
        }
        self.touch(slot);
    }

    /// Commands, due timers, queued events and the next deadline of one call.
    fn service(&mut self, slot: usize, now: Instant) {
        if catch_unwind(AssertUnwindSafe(|| self.service_call(slot, now))).is_err() {
            self.contain(slot);
        }
    }

    fn service_call(&mut self, slot: usize, now: Instant) {
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        s.touched = false;
        let had_commands = s.commands;
        let mut cx = Context::from_waker(&s.waker);
        let mut end = None;
        // Drained until it answers Pending, which arms the waker again.
        while s.commands {
            match s.rx.poll_recv(&mut cx) {
                Poll::Ready(Some(MediaCmd::Stop { reason })) => {
                    end = Some(reason);
                    break;
                }
                Poll::Ready(Some(cmd)) => s.task.command(cmd),
                // The signalling side dropped us without Stop: finish the recording anyway.
                Poll::Ready(None) => {
                    end = Some(EndReason::Failed);
                    break;
                }
                Poll::Pending => s.commands = false,
            }
        }
        if let Some(reason) = end {
            self.remove(slot, reason);
            return;
        }
        // Only a command (new SDP) moves a call's peers.
        if s.shared && had_commands {
            sync_peers(&mut self.peers, slot, s);
        }
        s.task.handle_timeout(now);
        if s.task.flush_events() {
            self.backlog.push(slot);
        }
        let next = s.task.poll_timeout();
        if next != s.deadline {
            s.deadline = next;
            if let Some(t) = next {
                self.timers.push(Reverse((t, slot, s.epoch)));
            }
        }
    }

    /// Takes a call off this thread and finishes it on the async runtime.
    fn remove(&mut self, slot: usize, reason: EndReason) {
        let Some(s) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if s.shared {
            let me = |p: &PeerRef| p.slot == slot && p.epoch == s.epoch;
            for (k, addr) in s.peers.iter().enumerate() {
                if let Some(a) = addr
                    && self.peers[k / 2].get(a).is_some_and(me)
                {
                    self.peers[k / 2].remove(a);
                }
            }
        } else {
            for fd in s.fds {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
        }
        self.free.push(slot);
        self.shared.calls.fetch_sub(1, Ordering::Relaxed);
        self.rt.spawn(s.task.stop(reason));
    }

    fn shutdown(&mut self) {
        for i in 0..self.slots.len() {
            self.remove(i, EndReason::Failed);
        }
    }
}

/// What one read of a media socket gave.
enum Read {
    Got(usize),
    /// Nothing queued: a later datagram raises a new edge.
    Empty,
    /// It kept failing (logged).
    Broken,
}

/// One `recvmmsg` on a media socket. A pending socket error (an ICMP port unreachable from a
/// peer that went away) is returned once and cleared, so up to `tolerated` of them in a row are
/// skipped; more means the socket is broken, and spinning on it would starve every other call
/// on the thread.
fn read_batch(batch: &mut RecvBatch, fd: RawFd, errors: &mut u32, tolerated: u32) -> Read {
    loop {
        match batch.recv(fd) {
            Ok(n) => return Read::Got(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::Empty,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) if *errors < tolerated => *errors += 1,
            Err(e) => {
                tracing::warn!(error = %e, "media socket read failed");
                return Read::Broken;
            }
        }
    }
}

/// Brings the peer maps in line with the addresses a call's SDP now gives. The newest claim
/// on an address wins: a peer that moved a stream to an address another call still holds has
/// left that call (the other call then hears nothing and times out, which is logged).
fn sync_peers(peers: &mut [PeerMap; 2], slot: usize, s: &mut Slot) {
    let now = s.task.peer_addrs();
    for (k, (old, new)) in s.peers.iter_mut().zip(now).enumerate() {
        if *old == new {
            continue;
        }
        let map = &mut peers[k / 2];
        let leg = if k % 2 == 0 { Leg::Caller } else { Leg::Agent };
        let me = PeerRef {
            slot,
            epoch: s.epoch,
            leg,
        };
        if let Some(a) = old.take()
            && map
                .get(&a)
                .is_some_and(|p| p.slot == slot && p.epoch == s.epoch)
        {
            map.remove(&a);
        }
        if let Some(a) = new {
            if let Some(prev) = map.insert(a, me)
                && (prev.slot, prev.epoch) != (slot, s.epoch)
            {
                tracing::warn!(
                    "two calls on one media thread name the same peer media address; the newer \
                     call gets its packets"
                );
            }
            *old = Some(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

    use super::*;
    use crate::ids::Ssrc;
    use crate::media::announcement::Announcement;
    use crate::media::g711::G711;
    use crate::media::relay::{PortPool, Remote};
    use crate::media::rtp::{self, RtpPacket};
    use crate::pci::PciConfig;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn settings() -> MediaSettings {
        MediaSettings {
            timeout: Duration::from_secs(30),
            pci: PciConfig::default(),
            reorder_window: Duration::from_millis(60),
        }
    }

    fn peer() -> UdpSocket {
        let s = UdpSocket::bind((LO, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        s
    }

    fn remote(s: &UdpSocket) -> Remote {
        let a = s.local_addr().unwrap();
        Remote {
            rtp: a,
            rtcp: SocketAddr::new(a.ip(), a.port() + 1),
            codec: G711::Pcmu,
            telephone_event: Some(101),
            on_hold: false,
        }
    }

    /// Reads what arrived within `for_`: (packets, sequence numbers).
    fn drain(s: &UdpSocket, for_: Duration) -> Vec<u16> {
        let end = Instant::now() + for_;
        let mut seqs = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if let Ok(n) = s.recv(&mut buf)
                && let Ok(p) = RtpPacket::parse(&buf[..n])
            {
                seqs.push(p.sequence());
            }
        }
        seqs
    }

    /// A call on `threads` between two fresh peer sockets, both remotes set.
    struct TestCall {
        handle: MediaHandle,
        id: CallId,
        caller: UdpSocket,
        agent: UdpSocket,
        caller_port: u16,
        agent_port: u16,
    }

    /// PCMU packet `seq` of a 20 ms stream (timestamp from the sequence number).
    fn pcmu(seq: u16, ssrc: Ssrc) -> Vec<u8> {
        let mut pkt = Vec::new();
        rtp::write_rtp(
            &mut pkt,
            false,
            0,
            seq,
            160 * seq as u32,
            ssrc,
            &[0xff; 160],
        )
        .unwrap();
        pkt
    }

    /// Sends packets `seqs` from `from` to local `port`, 20 ms apart.
    async fn send_paced(from: &UdpSocket, port: u16, seqs: std::ops::Range<u16>, ssrc: Ssrc) {
        for seq in seqs {
            from.send_to(&pcmu(seq, ssrc), (LO, port)).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn open_call(
        threads: &MediaThreads,
        pool: &Arc<PortPool>,
        events: &mpsc::Sender<MediaEvent>,
    ) -> TestCall {
        let (caller_pair, agent_pair) = (pool.bind_pair(LO).unwrap(), pool.bind_pair(LO).unwrap());
        let (caller_port, agent_port, id) =
            (caller_pair.port, agent_pair.port, CallId::new_random());
        let handle = threads.spawn(
            id.clone(),
            caller_pair,
            agent_pair,
            settings(),
            events.clone(),
        );
        let (caller, agent) = (peer(), peer());
        for (leg, s) in [(Leg::Caller, &caller), (Leg::Agent, &agent)] {
            handle
                .cmd
                .try_send(MediaCmd::SetRemote {
                    leg,
                    remote: remote(s),
                })
                .unwrap();
        }
        TestCall {
            handle,
            id,
            caller,
            agent,
            caller_port,
            agent_port,
        }
    }

    /// `n` calls opened with [`open_call`] and bridged (not recorded).
    fn open_bridged(
        threads: &MediaThreads,
        pool: &Arc<PortPool>,
        events: &mpsc::Sender<MediaEvent>,
        n: usize,
    ) -> Vec<TestCall> {
        let calls: Vec<TestCall> = (0..n).map(|_| open_call(threads, pool, events)).collect();
        for c in &calls {
            c.handle
                .cmd
                .try_send(MediaCmd::Bridge { recording: None })
                .unwrap();
        }
        calls
    }

    /// Forty calls on one media thread: each plays a 1 s announcement toward its caller with no
    /// packet coming in (pacing is timer-driven: the deadline heap), then is bridged and relays
    /// both ways, then ends when its handle is dropped, reporting `Finished`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_thread_paces_relays_and_finishes_many_calls() {
        const CALLS: usize = 40;
        let threads = MediaThreads::with_threads(1).unwrap();
        let pool = PortPool::new(41000, 41999);
        let (ev_tx, mut ev_rx) = mpsc::channel(1024);
        let announcement = Arc::new(Announcement::from_samples_8k(vec![1000; 8000]));
        let mut calls = Vec::new();
        for _ in 0..CALLS {
            let c = open_call(&threads, &pool, &ev_tx);
            c.handle
                .cmd
                .try_send(MediaCmd::PlayAnnouncement(announcement.clone()))
                .unwrap();
            calls.push((c.handle, c.caller, c.agent, c.caller_port, c.agent_port));
        }
        // The announcement: 50 frames in 1 s toward each caller, in order, none toward agents.
        // Read as the frames arrive (every socket polled each millisecond) to check the pacing.
        let socks: Vec<UdpSocket> = calls.iter().map(|c| c.1.try_clone().unwrap()).collect();
        let arrivals: Vec<Vec<(Instant, u16)>> = tokio::task::spawn_blocking(move || {
            let mut got = vec![Vec::new(); socks.len()];
            let mut buf = [0u8; 2048];
            for s in &socks {
                s.set_nonblocking(true).unwrap();
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(1300) {
                for (i, s) in socks.iter().enumerate() {
                    while let Ok(n) = s.recv(&mut buf) {
                        if let Ok(p) = RtpPacket::parse(&buf[..n]) {
                            got[i].push((Instant::now(), p.sequence()));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            got
        })
        .await
        .unwrap();
        for (i, a) in arrivals.iter().enumerate() {
            // 20 ms frames: a late timer shows as a long gap (the 500 ms sweep would also send them).
            let worst = a
                .windows(2)
                .map(|w| w[1].0 - w[0].0)
                .max()
                .unwrap_or_default();
            assert!(
                worst < Duration::from_millis(120),
                "call {i}: {worst:?} between announcement frames"
            );
        }
        let heard: Vec<Vec<u16>> = arrivals
            .iter()
            .map(|a| a.iter().map(|x| x.1).collect())
            .collect();
        let to_agents: usize = calls
            .iter()
            .map(|c| drain(&c.2, Duration::from_millis(1)).len())
            .sum();
        assert_eq!(to_agents, 0, "the announcement is for callers only");
        for (i, seqs) in heard.iter().enumerate() {
            assert_eq!(
                seqs.len(),
                50,
                "call {i}: {} announcement frames",
                seqs.len()
            );
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
                "call {i}: out of order"
            );
        }
        let mut done = 0;
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(200), ev_rx.recv()).await
        {
            if matches!(ev, MediaEvent::AnnouncementDone { .. }) {
                done += 1;
            }
            if done == CALLS {
                break;
            }
        }
        assert_eq!(done, CALLS, "every call reports its announcement done");
        // Bridged: ten packets each way per call arrive at the other side.
        for (h, ..) in &calls {
            h.cmd
                .try_send(MediaCmd::Bridge { recording: None })
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ssrc = Ssrc(7);
        for k in 0..10u16 {
            for (_, c, a, cp, ap) in &calls {
                let pkt = pcmu(100 + k, ssrc);
                c.send_to(&pkt, (LO, *cp)).unwrap();
                a.send_to(&pkt, (LO, *ap)).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (i, (_, c, a, ..)) in calls.iter().enumerate() {
            let to_agent = drain(a, Duration::from_millis(30));
            let to_caller = drain(c, Duration::from_millis(30));
            assert_eq!(
                to_agent,
                (100..110).collect::<Vec<u16>>(),
                "call {i} caller → agent"
            );
            assert_eq!(
                to_caller,
                (100..110).collect::<Vec<u16>>(),
                "call {i} agent → caller"
            );
        }
        // Dropping the handles ends every call: each reports Finished with its packet counts.
        drop(calls.drain(..).map(|c| c.0).collect::<Vec<_>>());
        let mut finished = 0;
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), ev_rx.recv()).await {
            if let MediaEvent::Finished { report, .. } = ev {
                assert_eq!((report.caller_packets, report.agent_packets), (10, 10));
                finished += 1;
                if finished == CALLS {
                    break;
                }
            }
        }
        assert_eq!(finished, CALLS);
        assert_eq!(
            threads.threads[0].calls.load(Ordering::Relaxed),
            0,
            "every call left its thread"
        );
    }

    /// A burst far larger than one read's batch comes out whole and in order, and afterwards the
    /// idle thread sleeps (a wake-up left pending, or a socket reported without end, would wake
    /// it for every wait).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_relayed_whole_and_then_the_thread_sleeps() {
        let threads = MediaThreads::with_threads(1).unwrap();
        let pool = PortPool::new(42700, 42799);
        let (ev_tx, _ev_rx) = mpsc::channel(64);
        let c = open_bridged(&threads, &pool, &ev_tx, 1).remove(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ssrc = Ssrc(9);
        // One datagram, then a burst of 6 × BATCH sent at once, then one more.
        c.caller
            .send_to(&pcmu(1, ssrc), (LO, c.caller_port))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let burst = 2..(2 + 6 * BATCH as u16);
        for seq in burst.clone() {
            c.caller
                .send_to(&pcmu(seq, ssrc), (LO, c.caller_port))
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let last = burst.end;
        c.caller
            .send_to(&pcmu(last, ssrc), (LO, c.caller_port))
            .unwrap();
        let got = drain(&c.agent, Duration::from_millis(300));
        assert_eq!(
            got,
            (1..=last).collect::<Vec<u16>>(),
            "relayed whole and in order"
        );
        // Idle now: a pass per load window and per timer, not one per wait.
        let p0 = threads.passes();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = threads.passes() - p0;
        assert!(idle <= 60, "{idle} passes in 500 ms with nothing to read");
        drop(c);
    }

    /// After a long pass every socket holds a queue: each is drained, so the backlog is gone
    /// within a few passes (read a datagram per pass, it would take thirty), and nothing is
    /// lost or reordered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_on_every_socket_drains_in_a_few_passes() {
        const CALLS: usize = 40;
        const QUEUED: u16 = 30;
        let threads = MediaThreads::with_threads(1).unwrap();
        let pool = PortPool::new(42400, 42699);
        let (ev_tx, _ev_rx) = mpsc::channel(1024);
        let calls = open_bridged(&threads, &pool, &ev_tx, CALLS);
        tokio::time::sleep(Duration::from_millis(50)).await;
        calls[0]
            .handle
            .cmd
            .try_send(MediaCmd::Stall(Duration::from_millis(300)))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ssrc = Ssrc(11);
        for seq in 0..QUEUED {
            for c in &calls {
                c.caller
                    .send_to(&pcmu(seq, ssrc), (LO, c.caller_port))
                    .unwrap();
                c.agent
                    .send_to(&pcmu(seq, ssrc), (LO, c.agent_port))
                    .unwrap();
            }
        }
        // Still stalled: count the passes from the end of the stall until all is relayed.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let p0 = threads.passes();
        let peers: Vec<(UdpSocket, UdpSocket)> = calls
            .iter()
            .map(|c| (c.caller.try_clone().unwrap(), c.agent.try_clone().unwrap()))
            .collect();
        let counter = threads.threads[0].clone();
        let (got, passes) = tokio::task::spawn_blocking(move || {
            let mut got = vec![(Vec::new(), Vec::new()); peers.len()];
            let mut buf = [0u8; 2048];
            let mut passes_to_drain = None;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(2) {
                for (i, (c, a)) in peers.iter().enumerate() {
                    let (to_agent, to_caller) = &mut got[i];
                    for (s, out) in [(a, to_agent), (c, to_caller)] {
                        s.set_nonblocking(true).unwrap();
                        while let Ok(n) = s.recv(&mut buf) {
                            out.push(RtpPacket::parse(&buf[..n]).unwrap().sequence());
                        }
                    }
                }
                let all = got
                    .iter()
                    .all(|(a, c)| a.len() == QUEUED as usize && c.len() == QUEUED as usize);
                if all && passes_to_drain.is_none() {
                    passes_to_drain = Some(counter.passes.load(Ordering::Relaxed) - p0);
                }
            }
            (got, passes_to_drain)
        })
        .await
        .unwrap();
        for (i, (to_agent, to_caller)) in got.iter().enumerate() {
            assert_eq!(
                to_agent,
                &(0..QUEUED).collect::<Vec<u16>>(),
                "call {i} caller → agent"
            );
            assert_eq!(
                to_caller,
                &(0..QUEUED).collect::<Vec<u16>>(),
                "call {i} agent → caller"
            );
        }
        let passes = passes.expect("everything relayed");
        assert!(
            passes <= 8,
            "{passes} passes to drain {QUEUED} queued datagrams per socket"
        );
        drop(calls);
    }

    /// A call on the threads' shared ports between two fresh peers, both remotes set, bridged.
    fn open_shared(threads: &MediaThreads, events: &mpsc::Sender<MediaEvent>) -> TestCall {
        let id = CallId::new_random();
        let handle = threads
            .spawn_shared(id.clone(), settings(), events.clone())
            .expect("shared ports");
        let (caller, agent) = (peer(), peer());
        for (leg, s) in [(Leg::Caller, &caller), (Leg::Agent, &agent)] {
            let remote = remote(s);
            handle
                .cmd
                .try_send(MediaCmd::SetRemote { leg, remote })
                .unwrap();
        }
        handle
            .cmd
            .try_send(MediaCmd::Bridge { recording: None })
            .unwrap();
        let (caller_port, agent_port) = (handle.caller_port, handle.agent_port);
        TestCall {
            handle,
            id,
            caller,
            agent,
            caller_port,
            agent_port,
        }
    }

    /// What each socket receives within `for_`, as (SSRC, sequence) pairs, all read together.
    async fn drain_all(socks: Vec<UdpSocket>, for_: Duration) -> Vec<Vec<(u32, u16)>> {
        tokio::task::spawn_blocking(move || {
            let mut got = vec![Vec::new(); socks.len()];
            let mut buf = [0u8; 2048];
            for s in &socks {
                s.set_nonblocking(true).unwrap();
            }
            let t0 = Instant::now();
            while t0.elapsed() < for_ {
                for (i, s) in socks.iter().enumerate() {
                    while let Ok(n) = s.recv(&mut buf) {
                        let p = RtpPacket::parse(&buf[..n]).unwrap();
                        got[i].push((p.ssrc().0, p.sequence()));
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            got
        })
        .await
        .unwrap()
    }

    /// Packet `seq` from both peers of every call to `port`, tagged by SSRC: call `i`'s caller
    /// sends with SSRC `i`, its agent with `1000 + i`, so a misrouted datagram shows.
    fn send_tagged(calls: &[TestCall], port: u16, seq: u16) {
        for (i, c) in calls.iter().enumerate() {
            c.caller
                .send_to(&pcmu(seq, Ssrc(i as u32)), (LO, port))
                .unwrap();
            c.agent
                .send_to(&pcmu(seq, Ssrc(1000 + i as u32)), (LO, port))
                .unwrap();
        }
    }

    /// `got` as [`drain_all`] read it from each call's (agent, caller) sockets in turn: every
    /// agent heard exactly its own caller's packets `0..n` in order, and every caller its agent's.
    fn assert_each_call_heard_its_own(got: &[Vec<(u32, u16)>], calls: usize, n: u16) {
        let want = |ssrc: u32| (0..n).map(|q| (ssrc, q)).collect::<Vec<_>>();
        for i in 0..calls {
            assert_eq!(got[2 * i], want(i as u32), "call {i}: caller → agent");
            assert_eq!(
                got[2 * i + 1],
                want(1000 + i as u32),
                "call {i}: agent → caller"
            );
        }
    }

    /// Shared ports: thirty calls on one thread all answer on one port, and every datagram
    /// reaches the other side of its own call only, found by its source; a stranger's
    /// datagrams go nowhere; a leg moved by new SDP is found at its new address only; an ended
    /// call's peers become strangers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_ports_find_each_call_by_its_peers() {
        const CALLS: usize = 30;
        let pool = PortPool::new(43700, 43799);
        let threads = MediaThreads::with_shared_ports(1, &pool, LO).unwrap();
        assert!(threads.shared_ports());
        let (ev_tx, _ev_rx) = mpsc::channel(1024);
        let mut calls: Vec<TestCall> = (0..CALLS).map(|_| open_shared(&threads, &ev_tx)).collect();
        let port = calls[0].caller_port;
        assert!(
            calls
                .iter()
                .all(|c| c.caller_port == port && c.agent_port == port),
            "every leg of every call on the thread's one port"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stranger = peer();
        for seq in 0..10u16 {
            send_tagged(&calls, port, seq);
            stranger.send_to(&pcmu(seq, Ssrc(77)), (LO, port)).unwrap();
        }
        let socks = calls
            .iter()
            .flat_map(|c| [c.agent.try_clone().unwrap(), c.caller.try_clone().unwrap()])
            .chain([stranger.try_clone().unwrap()])
            .collect();
        let got = drain_all(socks, Duration::from_millis(300)).await;
        assert_each_call_heard_its_own(&got, calls.len(), 10);
        assert!(got[2 * CALLS].is_empty(), "nothing is sent to a stranger");
        assert_eq!(
            threads.strangers(),
            10,
            "the stranger's datagrams were dropped"
        );

        // Call 0's caller moves its media (re-INVITE): the new address is heard, the old not.
        let moved = peer();
        calls[0]
            .handle
            .cmd
            .try_send(MediaCmd::SetRemote {
                leg: Leg::Caller,
                remote: remote(&moved),
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        calls[0]
            .caller
            .send_to(&pcmu(50, Ssrc(0)), (LO, port))
            .unwrap();
        moved.send_to(&pcmu(51, Ssrc(0)), (LO, port)).unwrap();
        let got = drain_all(
            vec![calls[0].agent.try_clone().unwrap()],
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(
            got[0],
            vec![(0, 51)],
            "only the new address is call 0's caller"
        );
        assert_eq!(threads.strangers(), 11);

        // Call 1 ends: its peers are strangers from then on; call 2 is unaffected.
        let ended = calls.remove(1);
        let (old_caller, old_agent) = (
            ended.caller.try_clone().unwrap(),
            ended.agent.try_clone().unwrap(),
        );
        drop(ended);
        tokio::time::sleep(Duration::from_millis(100)).await;
        old_caller.send_to(&pcmu(60, Ssrc(1)), (LO, port)).unwrap();
        calls[1]
            .caller
            .send_to(&pcmu(60, Ssrc(2)), (LO, port))
            .unwrap();
        let got = drain_all(
            vec![old_agent, calls[1].agent.try_clone().unwrap()],
            Duration::from_millis(200),
        )
        .await;
        assert!(got[0].is_empty(), "an ended call relays nothing");
        assert_eq!(got[1], vec![(2, 60)]);
        assert_eq!(threads.strangers(), 12);
        drop(calls);
    }

    /// Shared ports after a stall: more datagrams are queued on the one socket than a pass
    /// reads ([`SHARED_BATCHES_PER_PASS`]); the rest are read in the following passes without
    /// waiting for a new datagram, and nothing is lost or reordered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_on_a_shared_port_is_read_whole() {
        const CALLS: usize = 40;
        const QUEUED: u16 = 30;
        let pool = PortPool::new(43800, 43899);
        let threads = MediaThreads::with_shared_ports(1, &pool, LO).unwrap();
        let (ev_tx, _ev_rx) = mpsc::channel(1024);
        let calls: Vec<TestCall> = (0..CALLS).map(|_| open_shared(&threads, &ev_tx)).collect();
        let port = calls[0].caller_port;
        tokio::time::sleep(Duration::from_millis(50)).await;
        calls[0]
            .handle
            .cmd
            .try_send(MediaCmd::Stall(Duration::from_millis(300)))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // 2,400 datagrams wait on one socket: more than one pass's 64 × 16.
        assert!(usize::from(QUEUED) * CALLS * 2 > SHARED_BATCHES_PER_PASS * BATCH);
        for seq in 0..QUEUED {
            send_tagged(&calls, port, seq);
        }
        let socks = calls
            .iter()
            .flat_map(|c| [c.agent.try_clone().unwrap(), c.caller.try_clone().unwrap()])
            .collect();
        // Nothing is sent after the burst: the tail can only be read by the follow-up passes.
        let got = drain_all(socks, Duration::from_millis(800)).await;
        assert_each_call_heard_its_own(&got, CALLS, QUEUED);
        assert_eq!(threads.strangers(), 0);
        drop(calls);
    }

    /// A panic in one call's media code ends that call (it still reports `Finished`); the other
    /// call on the same thread keeps relaying.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_call_does_not_take_its_thread_down() {
        let threads = MediaThreads::with_threads(1).unwrap();
        let pool = PortPool::new(42000, 42099);
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let mut calls = Vec::new();
        for _ in 0..2 {
            let c = open_call(&threads, &pool, &ev_tx);
            c.handle
                .cmd
                .try_send(MediaCmd::Bridge { recording: None })
                .unwrap();
            calls.push((c.handle, c.id, c.caller, c.agent, c.caller_port));
        }
        calls[0].0.cmd.try_send(MediaCmd::Panic).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Some(MediaEvent::Finished { call, .. }) = ev_rx.recv().await {
                    return call;
                }
            }
        })
        .await
        .expect("the panicking call reports Finished");
        assert_eq!(ended, calls[0].1);
        let (_, _, c, a, cp) = &calls[1];
        send_paced(c, *cp, 7..12, Ssrc(9)).await;
        assert_eq!(
            drain(a, Duration::from_millis(50)),
            (7..12).collect::<Vec<u16>>(),
            "the other call still relays"
        );
        assert_eq!(threads.threads[0].calls.load(Ordering::Relaxed), 1);
    }

    /// (scheduling policy, real-time priority) of this process's threads named `name*`.
    fn threads_named(name: &str) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(name) {
                continue;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // Fields after "(comm) ": state is field 3; rt_priority 40, policy 41.
            let rest: Vec<&str> = stat
                .rsplit_once(") ")
                .map(|(_, r)| r)
                .unwrap_or("")
                .split(' ')
                .collect();
            if rest.len() > 38 {
                out.push((rest[38].parse().unwrap(), rest[37].parse().unwrap()));
            }
        }
        out
    }

    /// With `realtime`, every media thread runs under SCHED_FIFO at that priority (read back
    /// from /proc, not from our own bookkeeping) and still relays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn media_threads_run_fifo_when_asked_and_still_relay() {
        let permitted = std::thread::spawn(|| crate::sys::set_realtime(1).is_ok())
            .join()
            .unwrap();
        let threads = MediaThreads::with_options(2, Some(13)).unwrap();
        if !permitted {
            // No CAP_SYS_NICE or RLIMIT_RTPRIO here: refused, reported, normal threads.
            assert_eq!(threads.realtime(), None);
            eprintln!("SCHED_FIFO not permitted here: checked the refusal only");
            return;
        }
        assert_eq!(threads.realtime(), Some(13));
        let fifo_13 = threads_named("callgate-media-")
            .into_iter()
            .filter(|&(policy, prio)| policy == libc::SCHED_FIFO as u32 && prio == 13)
            .count();
        assert_eq!(fifo_13, 2, "{:?}", threads_named("callgate-media-"));
        let pool = PortPool::new(42100, 42199);
        let (ev_tx, _ev_rx) = mpsc::channel(64);
        let c = open_bridged(&threads, &pool, &ev_tx, 1).remove(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        send_paced(&c.caller, c.caller_port, 40..45, Ssrc(5)).await;
        assert_eq!(
            drain(&c.agent, Duration::from_millis(50)),
            (40..45).collect::<Vec<u16>>()
        );
        // Paced passes: with a datagram every 50 µs (a wake-up each if it were not paced, and
        // far below what the thread can relay) the busy thread starts at most one pass per
        // RT_PASS_INTERVAL; the idle one wakes a few times.
        let (before, t0) = (threads.passes(), Instant::now());
        let gap = Duration::from_micros(50);
        let sent = flood(std::slice::from_ref(&c), Duration::from_millis(500), gap)
            .join()
            .unwrap();
        let (passes, took) = (threads.passes() - before, t0.elapsed());
        let bound = (took.as_micros() / RT_PASS_INTERVAL.as_micros()) as u64 + 20;
        eprintln!("{sent} datagrams in {took:?}: {passes} passes (bound {bound})");
        assert!(passes <= bound, "{passes} passes in {took:?}");
        assert!(sent > 5 * bound, "too few datagrams to tell: {sent}");
    }

    /// Sends packets into each call's caller port in turn for `for_`, a round every `gap` (zero:
    /// as fast as it can; a spin, not a sleep, for gaps below a timer's precision), on a thread
    /// of its own; returns how many.
    fn flood(calls: &[TestCall], for_: Duration, gap: Duration) -> std::thread::JoinHandle<u64> {
        let socks: Vec<(UdpSocket, u16)> = calls
            .iter()
            .map(|c| (c.caller.try_clone().unwrap(), c.caller_port))
            .collect();
        std::thread::spawn(move || {
            let start = Instant::now();
            let end = start + for_;
            let mut seq = 0u16;
            let mut sent = 0;
            let mut next = start;
            while Instant::now() < end {
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
                next += gap;
                for (s, port) in &socks {
                    sent += u64::from(s.send_to(&pcmu(seq, Ssrc(9)), (LO, *port)).is_ok());
                }
                seq = seq.wrapping_add(1);
            }
            sent
        })
    }

    /// The load admission control reads comes from the media thread's own time: near zero
    /// while it waits, well up while it relays a flood, and down again once the flood stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_media_thread_reports_how_busy_it_is() {
        let threads = MediaThreads::with_threads(1).unwrap();
        let pool = PortPool::new(42200, 42299);
        let (ev_tx, _ev_rx) = mpsc::channel(64);
        let calls = open_bridged(&threads, &pool, &ev_tx, 10);
        // Two whole windows of waiting.
        tokio::time::sleep(3 * super::super::load::WINDOW).await;
        let idle = threads.next_call_load();
        assert!(idle < 100, "idle thread reads {idle} per mille");
        // Unpaced packets into every call for about three windows.
        let flood = flood(&calls, 3 * super::super::load::WINDOW, Duration::ZERO);
        tokio::time::sleep(2 * super::super::load::WINDOW).await;
        let busy = threads.next_call_load();
        flood.join().unwrap();
        assert!(
            busy > 300,
            "a thread relaying a flood reads {busy} per mille"
        );
        // The reading is the larger of the last two whole windows, taken at the thread's last
        // wake-up (at least one a window): the window the flood ended in is behind it after
        // four more.
        tokio::time::sleep(5 * super::super::load::WINDOW).await;
        let after = threads.next_call_load();
        eprintln!("media thread load, per mille: idle {idle}, flood {busy}, after {after}");
        assert!(after < 100, "after the flood: {after} per mille");
    }
}
