//! Helpers shared by the benchmarks (`scale.rs`, `soak.rs`): programs, processes and their
//! /proc figures, plain UDP queries.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

pub fn find(program: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    eprintln!("bench needs {program}: apt-get install dnsperf knot util-linux");
    std::process::exit(2);
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Kills the child on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process, all threads, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of the whole line are 12 and 13 after "(comm)" (1-based state = 0).
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

pub fn query(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    if let Ok(n) = Name::from_ascii(name) {
        m.add_query(Query::query(n, rtype));
    }
    let mut e = Edns::new();
    e.set_max_payload(4096);
    m.set_edns(e);
    m.to_vec().unwrap_or_default()
}

/// One query over UDP; `None` if no answer within `timeout`.
pub fn ask(sock: &UdpSocket, server: SocketAddr, name: &str, rtype: RecordType) -> Option<Message> {
    static ID: AtomicU64 = AtomicU64::new(1);
    let id = (ID.fetch_add(1, Ordering::Relaxed) % 65_000) as u16;
    sock.send_to(&query(name, rtype, id), server).ok()?;
    let mut buf = [0u8; 65_535];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == id
        {
            return Some(m);
        }
    }
}

pub fn socket(timeout: Duration) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    s
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
