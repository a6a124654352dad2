//! Soak: the release binary under task churn, query load (UDP and TCP) and dropped event
//! streams for a long while; its resident memory, open file descriptors and thread count must
//! stay flat. Run it through `bench/soak.sh` (it builds the release binary first):
//!
//!   bench/soak.sh [--minutes M] [--apps N] [--qps Q] [--churn-rate R] [--drop-every S]
//!
//! Defaults: 10 minutes, 1,000 apps × 3 tasks, 2,000 UDP queries/s plus a TCP connection every
//! 50 ms, 50 task events/s, the event stream dropped every 30 s, a full resync every minute.
//! Prints a line per minute and the start/end figures; exits 1 if they are not flat.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

#[path = "common.rs"]
mod common;
use common::*;

struct Args {
    minutes: u64,
    apps: usize,
    qps: u64,
    churn_rate: u64,
    drop_every: u64,
}

fn args() -> Args {
    let mut a = Args {
        minutes: 10,
        apps: 1000,
        qps: 2000,
        churn_rate: 50,
        drop_every: 30,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), value) {
            ("--minutes", Some(v)) => a.minutes = v,
            ("--apps", Some(v)) => a.apps = v as usize,
            ("--qps", Some(v)) => a.qps = v,
            ("--churn-rate", Some(v)) => a.churn_rate = v,
            ("--drop-every", Some(v)) => a.drop_every = v,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// What is watched for leaks.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

fn sample(pid: u32) -> Sample {
    Sample {
        rss_kib: proc_status(pid, "VmRSS:"),
        fds: open_fds(pid),
        threads: proc_status(pid, "Threads:"),
    }
}

fn main() {
    let a = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let flat = runtime.block_on(run(a));
    std::process::exit(if flat { 0 } else { 1 });
}

async fn run(a: Args) -> bool {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release/marathon-dns");
    let sim = Simulator::start().await.expect("simulator");
    let ids: Vec<String> = (0..a.apps)
        .map(|i| format!("/g{}/app{i}", i % 20))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        sim.add_app(SimApp::new(
            id,
            SimNetwork::Host,
            vec![SimPort::tcp(Some("http"), 0)],
        ));
        for t in 0..3 {
            sim.start_task(id, &format!("10.{}.{}.{}", i / 250, i % 250, t + 1), &[])
                .expect("task");
        }
    }
    let port = free_port();
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    let work = tempfile::tempdir().expect("tempdir");
    // BENCH_WRAP="heaptrack -o /tmp/h" runs the server under a profiler (the figures printed
    // are then the wrapper's; the profile is what counts).
    let wrap: Vec<String> = std::env::var("BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut command = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let server = Proc(
        command
            .args(["serve", "--marathon", &sim.url(), "--listen"])
            .arg(dns.to_string())
            .args(["--admin-listen", "off", "--resync-interval", "1m"])
            .args(["--rrl-rate", "0", "--zones-dir"])
            .arg(root.join("zones"))
            .arg("--serial-file")
            .arg(work.path().join("serial"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("marathon-dns starts (run bench/soak.sh, which builds it)"),
    );
    let pid = server.0.id();
    let sock = socket(Duration::from_millis(200));
    let first = "_app0._tcp.g0.marathon.local.";
    let t = Instant::now();
    while ask(&sock, dns, first, RecordType::SRV).is_none_or(|m| m.answers.is_empty()) {
        assert!(t.elapsed() < Duration::from_secs(60), "no sync within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (answered, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // UDP load: names of every app, paced.
    let udp = {
        let (stop, answered, lost, ids) =
            (stop.clone(), answered.clone(), lost.clone(), ids.clone());
        let qps = a.qps.max(1);
        std::thread::spawn(move || {
            let sock = socket(Duration::from_millis(500));
            let start = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[(n as usize * 7919) % ids.len()];
                let labels: Vec<&str> = id.trim_start_matches('/').rsplit('/').collect();
                let name = format!("{}.marathon.local.", labels.join("."));
                match ask(&sock, dns, &name, RecordType::A) {
                    Some(_) => answered.fetch_add(1, Ordering::Relaxed),
                    None => lost.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
                let due = start + Duration::from_micros(n * 1_000_000 / qps);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    // TCP: a connection every 50 ms, one query, closed by the client.
    let tcp = {
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let q = query("marathon.local.", RecordType::SOA, 7);
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = tokio::net::TcpStream::connect(dns).await {
                    let mut frame = (q.len() as u16).to_be_bytes().to_vec();
                    frame.extend_from_slice(&q);
                    let _ = s.write_all(&frame).await;
                    let mut len = [0u8; 2];
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut len)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Warm up, then the starting figures.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let start = sample(pid);
    println!(
        "start: RSS {:.1} MiB, {} open fds, {} threads ({} apps × 3 tasks, {} q/s UDP + TCP every 50 ms, {} events/s, stream dropped every {} s)",
        start.rss_kib as f64 / 1024.0,
        start.fds,
        start.threads,
        a.apps,
        a.qps,
        a.churn_rate,
        a.drop_every
    );
    let began = Instant::now();
    let total = Duration::from_secs(a.minutes * 60);
    let mut next_drop = began + Duration::from_secs(a.drop_every);
    let mut next_report = began + Duration::from_secs(60);
    let mut k = 0usize;
    let tick = Duration::from_micros(1_000_000 / a.churn_rate.max(1));
    while began.elapsed() < total {
        // Churn: kill a task of one app, start another in the same app.
        let id = &ids[(k * 104_729) % ids.len()];
        if let Some(task) = sim.tasks_of(id).first() {
            sim.kill_task(&task.id);
        }
        let i = k % 250;
        sim.start_task(id, &format!("10.200.{}.{}", i, (k / 250) % 250 + 1), &[]);
        k += 1;
        if Instant::now() >= next_drop {
            sim.drop_streams();
            next_drop += Duration::from_secs(a.drop_every);
        }
        if Instant::now() >= next_report {
            let s = sample(pid);
            println!(
                "{:>3} min: RSS {:.1} MiB, {} fds, {} threads; {} answered, {} unanswered",
                began.elapsed().as_secs() / 60,
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.threads,
                answered.load(Ordering::Relaxed),
                lost.load(Ordering::Relaxed)
            );
            next_report += Duration::from_secs(60);
        }
        tokio::time::sleep(tick).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = udp.join();
    let _ = tcp.await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let end = sample(pid);
    let alive = std::fs::metadata(format!("/proc/{pid}")).is_ok();
    println!(
        "end:   RSS {:.1} MiB, {} open fds, {} threads; {} queries answered, {} unanswered; {k} task events",
        end.rss_kib as f64 / 1024.0,
        end.fds,
        end.threads,
        answered.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed)
    );
    // Flat: memory within 20 % (+4 MiB of allocator noise), descriptors and threads unchanged
    // but for a few in flight.
    let flat = alive
        && end.rss_kib <= start.rss_kib + start.rss_kib / 5 + 4096
        && end.fds <= start.fds + 4
        && end.threads <= start.threads;
    println!(
        "{}",
        if flat {
            "flat: no growth in memory, descriptors or threads"
        } else {
            "NOT FLAT: see the figures above"
        }
    );
    flat
}
