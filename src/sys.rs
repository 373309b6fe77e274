//! System calls the standard library lacks, behind safe functions. The crate's only `unsafe`
//! lives here (the quinn-udp model: syscalls and their pointer juggling in one small module).
//!
//! * [`RecvBatch`]: `recvmmsg`, a batch of datagrams with their sources in one call (media
//!   threads);
//! * [`syncfs`]: one flush for every dirty file of a filesystem (the recording syncer);
//! * [`raise_open_files_limit`]: every call holds four sockets, so the usual soft limit of 1,024
//!   open files would cap a gateway at about 250 calls;
//! * [`set_realtime`]: `SCHED_FIFO` for the calling thread (media threads, when configured);
//! * [`set_dont_fragment`]: media datagrams leave with DF set, which spares the kernel an IP
//!   identifier per datagram (a hash and an atomic shared by every socket of the host);
//! * [`set_recv_buffer`]: a deep receive queue for a media thread's shared socket.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Datagrams read per `recvmmsg`.
pub const BATCH: usize = 16;
/// Largest datagram kept (RTP/RTCP on a LAN or trunk; longer ones are truncated and dropped).
pub const DATAGRAM: usize = 2048;

/// Writes back every dirty file of the filesystem holding `f`, data and metadata, and flushes
/// the device: what `fdatasync` does for one file, once for all of them.
pub fn syncfs(f: &std::fs::File) -> io::Result<()> {
    // SAFETY: a plain syscall on a file descriptor that `f` keeps open for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets DF on the IPv4 datagrams `sock` sends (`IP_PMTUDISC_PROBE`: DF, without
/// refusing sends above a learned path MTU); does nothing for IPv6, which has no
/// fragment identifier on unfragmented datagrams.
///
/// Without DF every UDP datagram needs a fresh IP identifier, which Linux draws from a hashed
/// table of atomic counters shared by all sockets: a measurable cost at 100,000 datagrams a
/// second. RTP audio datagrams are far below any MTU, so DF changes nothing on the wire;
/// one too large for the interface is refused (counted as not sent) instead of fragmented.
pub fn set_dont_fragment(sock: &std::net::UdpSocket) -> io::Result<()> {
    if !sock.local_addr()?.is_ipv4() {
        return Ok(());
    }
    set_int_option(
        sock,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )
}

/// `setsockopt` of one `int` option.
fn set_int_option(
    sock: &std::net::UdpSocket,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` outlives the call and its size is passed; the descriptor is open (`sock`).
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks for a receive queue of `bytes` on `sock`: `SO_RCVBUFFORCE` (past `net.core.rmem_max`,
/// needs CAP_NET_ADMIN), else `SO_RCVBUF` (capped at `rmem_max`). Returns what the kernel
/// granted, in its own accounting (twice the payload it sets aside).
///
/// A media thread's shared socket queues every call's datagrams: with the default 208 KiB it
/// would hold about 1.5 ms of 1,500 calls' packets, and any longer stall would drop some.
pub fn set_recv_buffer(sock: &std::net::UdpSocket, bytes: usize) -> io::Result<usize> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v)
        .or_else(|_| set_int_option(sock, libc::SOL_SOCKET, libc::SO_RCVBUF, v))?;
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `got` and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(got.max(0) as usize)
}

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1..=99): it runs whenever it has
/// work, ahead of every normal process. Fails with `PermissionDenied` without CAP_SYS_NICE or
/// an `RLIMIT_RTPRIO` of at least `priority`.
pub fn set_realtime(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(priority),
    };
    // SAFETY: `param` is a valid sched_param for the call; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = want;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    Ok(lim.rlim_cur as u64)
}

/// Buffers for one `recvmmsg` call.
pub struct RecvBatch {
    bufs: Box<[[u8; DATAGRAM]; BATCH]>,
    addrs: [libc::sockaddr_storage; BATCH],
    lens: [usize; BATCH],
    addr_lens: [libc::socklen_t; BATCH],
    truncated: [bool; BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: Box::new([[0; DATAGRAM]; BATCH]),
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
            addrs: unsafe { std::mem::zeroed() },
            lens: [0; BATCH],
            addr_lens: [0; BATCH],
            truncated: [false; BATCH],
        }
    }

    /// Reads up to [`BATCH`] datagrams without blocking.
    pub fn recv(&mut self, fd: i32) -> io::Result<usize> {
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: DATAGRAM,
        });
        // SAFETY: mmsghdr is plain old data; the fields that matter are set below.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: every pointer in `msgs` points into `self` or `iovs`, alive for the call, with
        // the lengths given; the kernel writes at most those lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, m) in msgs.iter().take(n).enumerate() {
            self.lens[i] = m.msg_len as usize;
            self.addr_lens[i] = m.msg_hdr.msg_namelen;
            self.truncated[i] = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        }
        Ok(n)
    }

    /// Datagram `i` of the last read and its source (`None`: truncated or not IP).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let pkt = &self.bufs[i][..self.lens[i].min(DATAGRAM)];
        if self.truncated[i] {
            return (pkt, None);
        }
        (pkt, sockaddr(&self.addrs[i], self.addr_lens[i]))
    }
}

fn sockaddr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match s.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which fits in it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn recv_batch_reads_several_datagrams_with_their_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..(BATCH + 3) {
            tx.send_to(&[i as u8; 12], rx.local_addr().unwrap())
                .unwrap();
        }
        let n = batch.recv(rx.as_raw_fd()).unwrap();
        assert_eq!(n, BATCH);
        for k in 0..n {
            let (pkt, src) = batch.get(k);
            assert_eq!(pkt, &[k as u8; 12]);
            assert_eq!(src, Some(tx.local_addr().unwrap()));
        }
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 3);
        assert_eq!(batch.get(2).0, &[(BATCH + 2) as u8; 12]);
    }

    fn mtu_discover(sock: &UdpSocket) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        v
    }

    #[test]
    fn dont_fragment_is_set_and_datagrams_still_flow() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_ne!(mtu_discover(&tx), libc::IP_PMTUDISC_PROBE);
        set_dont_fragment(&tx).unwrap();
        assert_eq!(mtu_discover(&tx), libc::IP_PMTUDISC_PROBE);
        tx.send_to(&[7; 172], rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 256];
        assert_eq!(rx.recv_from(&mut buf).unwrap().0, 172);
        // IPv6: nothing to set, and no error.
        if let Ok(v6) = UdpSocket::bind("[::1]:0") {
            set_dont_fragment(&v6).unwrap();
        }
    }

    #[test]
    fn realtime_applies_to_the_calling_thread_only() {
        let probe = std::thread::spawn(|| {
            let r = set_realtime(7);
            let policy = unsafe { libc::sched_getscheduler(0) };
            (r, policy)
        });
        let (r, policy) = probe.join().unwrap();
        match r {
            Ok(()) => assert_eq!(policy, libc::SCHED_FIFO),
            // Not permitted here (no CAP_SYS_NICE, RLIMIT_RTPRIO 0): refused, and nothing changed.
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
                assert_eq!(policy, libc::SCHED_OTHER);
            }
        }
        // The test's own thread is untouched either way.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
        assert!(
            set_realtime(0).is_err(),
            "priority 0 is not a SCHED_FIFO priority"
        );
    }

    #[test]
    fn open_files_limit_is_raised_to_the_hard_limit() {
        let get = || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
            lim
        };
        // Lower the soft limit first (still roomy for the other tests in this process), so
        // the raise has something to do wherever the test runs.
        let hard = get().rlim_max;
        let low = libc::rlimit {
            rlim_cur: (hard / 2).max(1024).min(hard),
            rlim_max: hard,
        };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        let now = raise_open_files_limit().unwrap();
        assert_eq!((now as libc::rlim_t, get().rlim_cur), (hard, hard));
    }

    #[test]
    fn ipv6_sources_are_decoded() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            return;
        }; // no IPv6 on this host
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 1);
        assert_eq!(
            batch.get(0),
            (&b"hello"[..], Some(tx.local_addr().unwrap()))
        );
    }
}
