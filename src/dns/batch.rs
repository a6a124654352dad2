//! Linux `recvmmsg`/`sendmmsg`: up to [`BATCH`] datagrams per system call in each direction
//! when queries queue up, one at a time when they do not (`MSG_WAITFORONE`). All buffers and
//! kernel message headers are allocated once per worker. The only unsafe code of the
//! project, kept to filling and reading the kernel's message headers.
//!
//! On a socket bound to a wildcard address (`0.0.0.0`, `::`) every datagram's destination
//! address comes with it (`IP_PKTINFO`, `IPV6_RECVPKTINFO`) and its reply is sent from that
//! address: HAProxy and most resolvers drop replies from any other source.

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
/// Control-message room per datagram (one `in6_pktinfo` needs 40 bytes), in u64 for alignment.
const CONTROL: usize = 8;

/// The address a datagram was sent to, and the interface it came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub addr: std::net::IpAddr,
    pub ifindex: u32,
}

/// Ask the kernel for each datagram's destination address (wildcard sockets only).
pub fn want_destination(socket: &UdpSocket, ipv6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: a valid fd, a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The destination of a received datagram, from its control messages.
///
/// # Safety
/// `hdr` must be a header the kernel just filled, its control buffer still alive.
unsafe fn destination(hdr: &libc::msghdr) -> Option<Local> {
    // SAFETY: per the function's contract; the CMSG macros stay within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    return Some(Local {
                        addr: std::net::Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)).into(),
                        ifindex: info.ipi_ifindex as u32,
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    return Some(Local {
                        addr: std::net::Ipv6Addr::from(info.ipi6_addr.s6_addr).into(),
                        ifindex: info.ipi6_ifindex,
                    });
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
        None
    }
}

/// Fill `control` with the control message that sends from `local`; its length.
fn source_control(control: &mut [u64; CONTROL], local: Local) -> usize {
    let bytes = std::ptr::from_mut(control).cast::<u8>();
    // SAFETY: `control` holds CONTROL * 8 = 64 bytes, aligned for cmsghdr; CMSG_SPACE of
    // either pktinfo fits; the msghdr below only lets the CMSG macros address that buffer.
    unsafe {
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_control = bytes.cast();
        hdr.msg_controllen = CONTROL * 8;
        let c = libc::CMSG_FIRSTHDR(&hdr);
        if c.is_null() {
            return 0;
        }
        match local.addr {
            std::net::IpAddr::V4(v4) => {
                let len = std::mem::size_of::<libc::in_pktinfo>() as u32;
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(v4).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                libc::CMSG_SPACE(len) as usize
            }
            std::net::IpAddr::V6(v6) => {
                let len = std::mem::size_of::<libc::in6_pktinfo>() as u32;
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: v6.octets(),
                    },
                    ipi6_ifindex: local.ifindex,
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                libc::CMSG_SPACE(len) as usize
            }
        }
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: plain data; the matching sockaddr type is written into its start.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let ptr: *mut libc::sockaddr_storage = &mut storage;
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger and at least as aligned as sockaddr_in.
            unsafe { std::ptr::write(ptr.cast::<libc::sockaddr_in>(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(ptr.cast::<libc::sockaddr_in6>(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Send one datagram to `dst`, from `local` when given (a wildcard socket's reply).
pub fn send_one(
    socket: &UdpSocket,
    bytes: &[u8],
    dst: SocketAddr,
    local: Option<Local>,
) -> io::Result<()> {
    let Some(local) = local else {
        return socket.send_to(bytes, dst).map(|_| ());
    };
    let (mut name, namelen) = sockaddr(dst);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let mut control = [0u64; CONTROL];
    let controllen = source_control(&mut control, local);
    // SAFETY: zeroed msghdr is valid; the pointers target locals alive across the call;
    // the kernel only reads from the iovec for a send.
    let r = unsafe {
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_name = std::ptr::from_mut(&mut name).cast();
        hdr.msg_namelen = namelen;
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = controllen;
        libc::sendmsg(socket.as_raw_fd(), &hdr, 0)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One worker's buffers and headers. The headers point into the heap buffers, which never
/// move or grow after construction, so moving the `Batch` itself is fine.
pub struct Batch {
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    /// Control buffers: received pktinfo, then the replies' source addresses.
    in_control: Vec<[u64; CONTROL]>,
    out_control: Vec<[u64; CONTROL]>,
    /// Each datagram's destination (wildcard sockets only).
    locals: Vec<Option<Local>>,
    wildcard: bool,
    in_iovs: Vec<libc::iovec>,
    in_hdrs: Vec<libc::mmsghdr>,
    out_iovs: Vec<libc::iovec>,
    out_hdrs: Vec<libc::mmsghdr>,
    /// Replies staged for [`Batch::send`]: (datagram index, length).
    staged: Vec<(usize, usize)>,
    count: usize,
}

impl Batch {
    /// Buffers for a socket; `wildcard`: it is bound to an unspecified address and asked for
    /// destinations ([`want_destination`]).
    pub fn new(wildcard: bool) -> Self {
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
        let mut in_control = vec![[0u64; CONTROL]; BATCH];
        for (i, h) in in_hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = std::ptr::from_mut(&mut addrs[i]).cast();
            h.msg_hdr.msg_iov = std::ptr::from_mut(&mut in_iovs[i]);
            h.msg_hdr.msg_iovlen = 1;
            if wildcard {
                h.msg_hdr.msg_control = in_control[i].as_mut_ptr().cast();
            }
        }
        Self {
            inbuf,
            outbuf,
            addrs,
            in_control,
            out_control: vec![[0u64; CONTROL]; BATCH],
            locals: vec![None; BATCH],
            wildcard,
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
            if self.wildcard {
                h.msg_hdr.msg_controllen = CONTROL * 8;
            }
        }
        debug_assert_eq!(self.in_control.len(), BATCH);
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
        for i in 0..self.count {
            self.locals[i] = if self.wildcard {
                // SAFETY: the kernel just filled this header; its control buffer is ours.
                unsafe { destination(&self.in_hdrs[i].msg_hdr) }
            } else {
                None
            };
        }
        Ok(self.count)
    }

    /// The address the `i`-th datagram was sent to (wildcard sockets).
    pub fn local(&self, i: usize) -> Option<Local> {
        self.locals.get(i).copied().flatten()
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
            if let Some(local) = self.locals[i] {
                let len = source_control(&mut self.out_control[k], local);
                h.msg_hdr.msg_control = self.out_control[k].as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = len;
            }
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
