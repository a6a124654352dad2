//! Linux `recvmmsg`/`sendmmsg`: up to [`BATCH`] datagrams per system call in each direction
//! when queries queue up, one at a time when they do not (`MSG_WAITFORONE`). All buffers and
//! kernel message headers are allocated once per worker. The only unsafe code of the
//! project, kept to filling and reading the kernel's message headers.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Receive room per datagram. A longer datagram is dropped as truncated: no real client
/// sends a query that long over UDP.
const IN: usize = 4096;
/// Reply room per datagram: the largest UDP payload.
pub const OUT: usize = 65535;

/// One worker's buffers and headers. The headers point into the heap buffers, which never
/// move or grow after construction, so moving the `Batch` itself is fine.
pub struct Batch {
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    in_iovs: Vec<libc::iovec>,
    in_hdrs: Vec<libc::mmsghdr>,
    out_iovs: Vec<libc::iovec>,
    out_hdrs: Vec<libc::mmsghdr>,
    /// Replies staged for [`Batch::send`]: (datagram index, length).
    staged: Vec<(usize, usize)>,
    count: usize,
}

impl Batch {
    pub fn new() -> Self {
        let mut inbuf = vec![0u8; BATCH * IN];
        // Untouched pages of the reply room cost no memory.
        let outbuf = vec![0u8; BATCH * OUT];
        // SAFETY: sockaddr_storage and mmsghdr are plain data; all zeroes is valid for both.
        let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut in_iovs: Vec<libc::iovec> = inbuf
            .chunks_exact_mut(IN)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: IN,
            })
            .collect();
        // SAFETY: as above.
        let mut in_hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        for (i, h) in in_hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = std::ptr::from_mut(&mut addrs[i]).cast();
            h.msg_hdr.msg_iov = std::ptr::from_mut(&mut in_iovs[i]);
            h.msg_hdr.msg_iovlen = 1;
        }
        Self {
            inbuf,
            outbuf,
            addrs,
            in_iovs,
            in_hdrs,
            out_iovs: Vec::with_capacity(BATCH),
            out_hdrs: Vec::with_capacity(BATCH),
            staged: Vec::with_capacity(BATCH),
            count: 0,
        }
    }

    /// Wait for at least one datagram (up to the socket's read timeout), take what is queued.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        self.staged.clear();
        for h in &mut self.in_hdrs {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_flags = 0;
        }
        debug_assert_eq!(self.in_iovs.len(), BATCH);
        // SAFETY: in_hdrs holds BATCH headers whose pointers target inbuf, addrs and in_iovs,
        // all alive and unmoved for as long as `self`.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.in_hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        Ok(self.count)
    }

    /// The `i`-th datagram received, `None` if it was cut short.
    pub fn packet(&self, i: usize) -> Option<&[u8]> {
        let h = self.in_hdrs.get(i).filter(|_| i < self.count)?;
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        self.inbuf.get(i * IN..i * IN + h.msg_len as usize)
    }

    /// The `i`-th datagram and the reply room that goes with it.
    pub fn packet_and_room(&mut self, i: usize) -> Option<(&[u8], &mut [u8])> {
        self.packet(i)?;
        let len = self.in_hdrs[i].msg_len as usize;
        let packet = self.inbuf.get(i * IN..i * IN + len)?;
        let room = self.outbuf.get_mut(i * OUT..(i + 1) * OUT)?;
        Some((packet, room))
    }

    /// Where the `i`-th datagram came from.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        let storage = self.addrs.get(i)?;
        let ptr: *const libc::sockaddr_storage = storage;
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in here (family AF_INET); storage is
                // large and aligned enough for it.
                let a = unsafe { std::ptr::read(ptr.cast::<libc::sockaddr_in>()) };
                Some(SocketAddr::from((
                    std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, a sockaddr_in6 for family AF_INET6.
                let a = unsafe { std::ptr::read(ptr.cast::<libc::sockaddr_in6>()) };
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Queue the reply written into the `i`-th datagram's room (`len` bytes).
    pub fn stage(&mut self, i: usize, len: usize) {
        self.staged.push((i, len.min(OUT)));
    }

    /// Send the staged replies to their datagrams' sources, in as few calls as the kernel
    /// takes.
    pub fn send(&mut self, socket: &UdpSocket) {
        self.out_iovs.clear();
        self.out_hdrs.clear();
        for &(i, len) in &self.staged {
            self.out_iovs.push(libc::iovec {
                iov_base: self.outbuf[i * OUT..].as_mut_ptr().cast(),
                iov_len: len,
            });
        }
        for (k, &(i, _)) in self.staged.iter().enumerate() {
            // SAFETY: plain data, then every pointer set targets addrs/out_iovs, which are
            // not touched again until the sends below are done.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = std::ptr::from_mut(&mut self.addrs[i]).cast();
            h.msg_hdr.msg_namelen = self.in_hdrs[i].msg_hdr.msg_namelen;
            h.msg_hdr.msg_iov = std::ptr::from_mut(&mut self.out_iovs[k]);
            h.msg_hdr.msg_iovlen = 1;
            self.out_hdrs.push(h);
        }
        let mut sent = 0;
        while sent < self.out_hdrs.len() {
            // SAFETY: out_hdrs[sent..] are initialised as above.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.out_hdrs[sent..].as_mut_ptr(),
                    (self.out_hdrs.len() - sent) as u32,
                    0,
                )
            };
            if n > 0 {
                sent += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                // A reply the kernel refuses (an unreachable client, say) is lost like any
                // datagram; the others still go out.
                tracing::debug!("UDP send failed: {e}");
                sent += 1;
            }
        }
        self.staged.clear();
    }
}
