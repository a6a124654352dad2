//! Freshness and footprint at scale, against Knot DNS serving the same records in the same
//! run. Run it through `bench/run.sh` (it builds the release binary first):
//!
//!   bench/run.sh [--apps N] [--tasks N] [--seconds S] [--samples N] [--churn-rate R]
//!
//! The simulated Marathon runs in this process; marathon-dns (the release binary) and knotd
//! run as their own processes pinned to CPU 1, dnsperf and the probes to CPU 0. Printed:
//! initial sync time (Marathon's own response time shown apart), resident memory of both
//! servers and the ratio, dnsperf qps and server CPU per answered query for both and the
//! ratio, event → answer latency (kill or start a task in a random app, poll its SRV name),
//! convergence after a churn burst, and queries delayed > 10 ms or unanswered while the zone
//! was being built, resynced and churned.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};

#[path = "common.rs"]
mod common;
use common::*;

struct Args {
    apps: usize,
    tasks: usize,
    seconds: u64,
    samples: usize,
    churn_rate: usize,
    churn_seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        apps: 10_000,
        tasks: 3,
        seconds: 10,
        samples: 200,
        churn_rate: 200,
        churn_seconds: 10,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), value) {
            ("--apps", Some(v)) => a.apps = v as usize,
            ("--tasks", Some(v)) => a.tasks = v as usize,
            ("--seconds", Some(v)) => a.seconds = v,
            ("--samples", Some(v)) => a.samples = v as usize,
            ("--churn-rate", Some(v)) => a.churn_rate = v as usize,
            ("--churn-seconds", Some(v)) => a.churn_seconds = v,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn srv_ports(m: &Message) -> BTreeSet<u16> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.port),
            _ => None,
        })
        .collect()
}

fn pin(cpu: u32) -> Command {
    let mut c = Command::new(find("taskset"));
    c.arg("-c").arg(cpu.to_string());
    c
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Queries sent one after another while the flag is up: delays above 10 ms and losses.
struct Prober {
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    slow: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    worst_us: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(server: SocketAddr, name: String) -> Self {
        let on = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let [sent, slow, lost, worst_us] = std::array::from_fn(|_| Arc::new(AtomicU64::new(0)));
        let t = {
            let (on, stop, sent, slow, lost, worst) = (
                on.clone(),
                stop.clone(),
                sent.clone(),
                slow.clone(),
                lost.clone(),
                worst_us.clone(),
            );
            std::thread::spawn(move || {
                let sock = socket(Duration::from_millis(500));
                while !stop.load(Ordering::Relaxed) {
                    if !on.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    let t = Instant::now();
                    let answered = ask(&sock, server, &name, RecordType::SRV).is_some();
                    let us = t.elapsed().as_micros() as u64;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !answered {
                        lost.fetch_add(1, Ordering::Relaxed);
                    } else if us > 10_000 {
                        slow.fetch_add(1, Ordering::Relaxed);
                    }
                    worst.fetch_max(us, Ordering::Relaxed);
                    // About 2,000 queries per second.
                    std::thread::sleep(Duration::from_micros(400));
                }
            })
        };
        Self {
            on,
            stop,
            sent,
            slow,
            lost,
            worst_us,
            thread: Some(t),
        }
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    fn report(&self) -> String {
        format!(
            "{} probes, {} slower than 10 ms, {} unanswered (500 ms), worst {:.1} ms",
            self.sent.load(Ordering::Relaxed),
            self.slow.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
            self.worst_us.load(Ordering::Relaxed) as f64 / 1000.0
        )
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the bench knows of the cluster: per app, its tasks' (id, port).
struct Cluster {
    ids: Vec<String>,
    tasks: HashMap<String, Vec<(String, u16)>>,
    next_port: u16,
}

impl Cluster {
    fn srv_name(id: &str) -> String {
        let labels: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).rev().collect();
        format!("_http._tcp.{}.marathon.local.", labels.join("."))
    }

    fn expected(&self, id: &str) -> BTreeSet<u16> {
        self.tasks
            .get(id)
            .map(|ts| ts.iter().map(|(_, p)| *p).collect())
            .unwrap_or_default()
    }

    fn start(&mut self, sim: &Simulator, i: usize) {
        let id = &self.ids[i];
        let port = self.next_port;
        self.next_port = if self.next_port >= 60_000 {
            20_000
        } else {
            self.next_port + 1
        };
        let host = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]).to_string();
        if let Some(t) = sim.start_task_with_ports(id, &host, &[], Some(vec![port])) {
            self.tasks.entry(id.clone()).or_default().push((t, port));
        }
    }

    fn kill_one(&mut self, sim: &Simulator, i: usize) {
        let id = &self.ids[i];
        if let Some(ts) = self.tasks.get_mut(id)
            && !ts.is_empty()
        {
            let (t, _) = ts.remove(0);
            sim.kill_task(&t);
        }
    }
}

fn wait_for(server: SocketAddr, name: &str, want: &BTreeSet<u16>, limit: Duration) -> Option<f64> {
    let sock = socket(Duration::from_millis(200));
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(m) = ask(&sock, server, name, RecordType::SRV)
            && srv_ports(&m) == *want
        {
            return Some(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    None
}

/// dnsperf against `port` while measuring `pid`'s CPU: (qps, completed, lost, µs per query).
fn dnsperf(port: u16, queries: &Path, secs: u64, pid: u32) -> (f64, f64, f64, f64) {
    let cpu0 = cpu_seconds(pid);
    let out = pin(0)
        .arg(find("dnsperf"))
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(queries)
        .args([
            "-l",
            &secs.to_string(),
            "-c",
            "4",
            "-q",
            "200",
            "-e",
            "-b",
            "4096",
        ])
        .output()
        .expect("dnsperf runs");
    let cpu = cpu_seconds(pid) - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let completed = field("Queries completed");
    (
        field("Queries per second"),
        completed,
        field("Queries lost"),
        cpu * 1e6 / completed.max(1.0),
    )
}

fn main() {
    // reqwest is built without a process-wide TLS provider (the library configures its own).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(a));
}

async fn run(a: Args) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release/marathon-dns");
    let knotd = find("knotd");
    let work = tempfile::tempdir().expect("tempdir");
    let empty_zones = work.path().join("zones");
    std::fs::create_dir_all(&empty_zones).expect("dir");

    // The cluster.
    let sim = Simulator::start().await.expect("simulator");
    let mut cluster = Cluster {
        ids: (0..a.apps)
            .map(|i| format!("/g{}/app{i}", i % 100))
            .collect(),
        tasks: HashMap::new(),
        next_port: 20_000,
    };
    let t = Instant::now();
    for i in 0..a.apps {
        sim.add_app(SimApp::new(
            &cluster.ids[i],
            SimNetwork::Host,
            vec![SimPort::tcp(Some("http"), 0)],
        ));
        for _ in 0..a.tasks {
            cluster.start(&sim, i);
        }
    }
    let url = format!("{}/v2/apps?embed=apps.tasks", sim.url());
    let t_marathon = Instant::now();
    let body = reqwest::get(&url)
        .await
        .expect("simulator answers")
        .bytes()
        .await
        .expect("body");
    let marathon_ms = t_marathon.elapsed().as_secs_f64() * 1000.0;
    println!(
        "cluster: {} apps × {} tasks = {} tasks (populated in {:.1} s); /v2/apps?embed=apps.tasks is {:.1} MB, Marathon (simulated) answers it in {:.0} ms",
        a.apps,
        a.tasks,
        a.apps * a.tasks,
        t.elapsed().as_secs_f64(),
        body.len() as f64 / 1e6,
        marathon_ms
    );
    drop(body);

    // marathon-dns, pinned to CPU 1.
    let ours_port = free_port();
    let ours: SocketAddr = ([127, 0, 0, 1], ours_port).into();
    let log = work.path().join("server.log");
    let t_spawn = Instant::now();
    // BENCH_WRAP="heaptrack -o /tmp/h" runs the server under a profiler.
    let mut cmd = pin(1);
    for w in std::env::var("BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
    {
        cmd.arg(w);
    }
    let server = Proc(
        cmd.arg(&bin)
            .args([
                "serve",
                "--admin-listen",
                "off",
                "--marathon",
                &sim.url(),
                "--listen",
            ])
            .arg(ours.to_string())
            .arg("--zones-dir")
            .arg(&empty_zones)
            // Periodic resyncs would land inside the dnsperf rounds; the bench forces one below
            // (a dropped event stream) while the probes run.
            .args(["--resync-interval", "1h"])
            // dnsperf asks the same names from one address at full speed: RRL would drop
            // most of it (Knot runs without its rrl module too).
            .args(["--rrl-rate", "0"])
            .env("RUST_LOG", "info,marathon_dns::sync=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("marathon-dns starts (run bench/run.sh, which builds it)"),
    );
    let pid = server.0.id();
    let probe_name = Cluster::srv_name(&cluster.ids[0]);
    let prober = Prober::start(ours, probe_name);
    // Answering starts at once (SOA), while the initial sync runs.
    let sock = socket(Duration::from_millis(100));
    while ask(&sock, ours, "marathon.local.", RecordType::SOA).is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    prober.set(true);
    let last = a.apps - 1;
    let want = cluster.expected(&cluster.ids[last]);
    let synced = wait_for(
        ours,
        &Cluster::srv_name(&cluster.ids[last]),
        &want,
        Duration::from_secs(120),
    );
    let sync_ms = t_spawn.elapsed().as_secs_f64() * 1000.0;
    let sync_cpu_ms = cpu_seconds(pid) * 1000.0;
    let log_has = |what: &str, limit: Duration| {
        let t = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(what) || t.elapsed() > limit {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let text = log_has(
        "initial sync from Marathon complete",
        Duration::from_secs(10),
    );
    let field = |key: &str| {
        text.lines()
            .find(|l| l.contains("initial sync from Marathon complete"))
            .and_then(|l| l.split(&format!("{key}=")).nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (fetch_ms, build_ms) = (field("fetch_ms"), field("build_ms"));
    println!(
        "initial sync: records served {:.0} ms after start (synced: {}); server log: fetch while parsing {:.0} ms (Marathon alone takes ≈ {:.0} ms to send it), build {:.0} ms; server CPU for the whole start and sync {:.0} ms",
        sync_ms,
        synced.is_some(),
        fetch_ms,
        marathon_ms,
        build_ms,
        sync_cpu_ms
    );
    // A dropped event stream: reconnect and a full resync, under the probes.
    sim.drop_streams();
    log_has("resync complete", Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    prober.set(false);
    let (rss, hwm) = (proc_status(pid, "VmRSS:"), proc_status(pid, "VmHWM:"));
    println!(
        "answering during the initial sync and a resync (stream dropped): {}",
        prober.report()
    );

    // Knot on the same records.
    let export = Command::new(&bin)
        .args(["export", "--marathon", &sim.url(), "--zones-dir"])
        .arg(&empty_zones)
        .output()
        .expect("export");
    let zone = String::from_utf8_lossy(&export.stdout).to_string();
    std::fs::write(work.path().join("marathon.local.zone"), &zone).expect("zone");
    let knot_port = free_port();
    let kdir = work.path().join("knot");
    std::fs::create_dir_all(kdir.join("db")).expect("dir");
    let conf = format!(
        "server:\n  rundir: \"{k}\"\n  listen: 127.0.0.1@{knot_port}\n  udp-max-payload: 4096\n\
         control:\n  listen: \"{k}/knot.sock\"\ndatabase:\n  storage: \"{k}/db\"\n\
         log:\n  - target: stderr\n    any: error\n\
         template:\n  - id: default\n    storage: \"{w}\"\n    file: \"%s.zone\"\n    zonefile-load: whole\n    zonefile-sync: -1\n    journal-content: none\n\
         zone:\n  - domain: marathon.local\n",
        k = kdir.display(),
        w = work.path().display()
    );
    std::fs::write(work.path().join("knot.conf"), conf).expect("conf");
    let knot = Proc(
        pin(1)
            .arg(&knotd)
            .arg("-c")
            .arg(work.path().join("knot.conf"))
            .stderr(Stdio::null())
            .spawn()
            .expect("knotd starts"),
    );
    let theirs: SocketAddr = ([127, 0, 0, 1], knot_port).into();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if let Some(m) = ask(
            &sock,
            theirs,
            &Cluster::srv_name(&cluster.ids[last]),
            RecordType::SRV,
        ) && m.metadata.response_code == ResponseCode::NoError
            && !m.answers.is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let knot_rss = proc_status(knot.0.id(), "VmRSS:");
    println!(
        "resident memory: marathon-dns {:.1} MiB (peak {:.1} MiB) vs Knot {:.1} MiB → ratio {:.2}",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        knot_rss as f64 / 1024.0,
        rss as f64 / knot_rss.max(1) as f64
    );

    // dnsperf, same query mix for both.
    let mut q = String::new();
    let mut a_names = 0;
    for line in zone.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 4 {
            match f[3] {
                "SRV" => q.push_str(&format!("{} SRV\n", f[0])),
                "A" => {
                    q.push_str(&format!("{} A\n", f[0]));
                    if a_names < 20 {
                        q.push_str(&format!("{} AAAA\n", f[0]));
                        a_names += 1;
                    }
                }
                _ => {}
            }
        }
    }
    for i in 0..20 {
        q.push_str(&format!("nx{i}.marathon.local. A\n"));
    }
    let mut lines: Vec<&str> = q.lines().collect();
    lines.sort_unstable();
    lines.dedup();
    let qfile = work.path().join("queries");
    std::fs::write(&qfile, lines.join("\n") + "\n").expect("queries");
    // Alternate the two servers over three rounds; the median round of each counts.
    let mut rounds_o = Vec::new();
    let mut rounds_k = Vec::new();
    // BENCH_PERF=FILE records a CPU profile of marathon-dns during its first round.
    let mut perf = std::env::var("BENCH_PERF").ok().map(|out| {
        Proc(
            Command::new("perf")
                .args([
                    "record",
                    "-F",
                    "1999",
                    "-g",
                    "-o",
                    &out,
                    "-p",
                    &pid.to_string(),
                ])
                .args(["--", "sleep", &a.seconds.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf starts"),
        )
    });
    for _ in 0..3 {
        rounds_o.push(dnsperf(ours_port, &qfile, a.seconds, pid));
        if let Some(mut p) = perf.take() {
            let _ = p.0.wait();
        }
        rounds_k.push(dnsperf(knot_port, &qfile, a.seconds, knot.0.id()));
    }
    let median = |mut v: Vec<(f64, f64, f64, f64)>| {
        v.sort_by(|x, y| x.3.total_cmp(&y.3));
        v[v.len() / 2]
    };
    let (qps_o, done_o, lost_o, us_o) = median(rounds_o);
    let (qps_k, done_k, lost_k, us_k) = median(rounds_k);
    println!(
        "dnsperf ({} distinct queries, median of 3 alternating rounds of {} s, 4 clients): marathon-dns {:.0} qps, {:.2} µs CPU/query ({} done, {} lost); Knot {:.0} qps, {:.2} µs CPU/query ({} done, {} lost) → CPU ratio {:.2}, qps ratio {:.2}",
        lines.len(),
        a.seconds,
        qps_o,
        us_o,
        done_o,
        lost_o,
        qps_k,
        us_k,
        done_k,
        lost_k,
        us_o / us_k,
        qps_o / qps_k
    );
    drop(knot);

    // Event → answer.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut latencies = Vec::new();
    let mut missed = 0;
    for k in 0..a.samples {
        let i = rand(a.apps);
        if k % 2 == 0 {
            cluster.kill_one(&sim, i);
        } else {
            cluster.start(&sim, i);
        }
        let want = cluster.expected(&cluster.ids[i]);
        match wait_for(
            ours,
            &Cluster::srv_name(&cluster.ids[i]),
            &want,
            Duration::from_secs(20),
        ) {
            Some(ms) => latencies.push(ms),
            None => missed += 1,
        }
        // Lone events, not a burst.
        std::thread::sleep(Duration::from_millis(30));
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "event → answer ({} samples, kill or start in a random app): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} never seen",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        missed
    );

    // Churn: kill + start in random apps at the given event rate, probes running.
    prober.set(true);
    let pairs = a.churn_rate / 2;
    let tick = Duration::from_secs_f64(1.0 / pairs.max(1) as f64);
    let mut touched: Vec<usize> = Vec::new();
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < Duration::from_secs(a.churn_seconds) {
        let i = rand(a.apps);
        cluster.kill_one(&sim, i);
        cluster.start(&sim, i);
        touched.push(i);
        next += tick;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let end = Instant::now();
    let recent: Vec<usize> = touched.iter().rev().take(20).copied().collect();
    let sock = socket(Duration::from_millis(200));
    let converged = loop {
        let all = recent.iter().all(|i| {
            let id = &cluster.ids[*i];
            ask(&sock, ours, &Cluster::srv_name(id), RecordType::SRV)
                .is_some_and(|m| srv_ports(&m) == cluster.expected(id))
        });
        if all {
            break Some(end.elapsed().as_secs_f64() * 1000.0);
        }
        if end.elapsed() > Duration::from_secs(120) {
            break None;
        }
    };
    prober.set(false);
    let distinct: BTreeSet<usize> = touched.iter().copied().collect();
    let wrong = distinct
        .iter()
        .filter(|i| {
            let id = &cluster.ids[**i];
            ask(&sock, ours, &Cluster::srv_name(id), RecordType::SRV)
                .is_none_or(|m| srv_ports(&m) != cluster.expected(id))
        })
        .count();
    println!(
        "churn: {} events/s for {} s ({} kill+start pairs in {} apps): converged {} after the last event; {} apps wrong afterwards; {}",
        a.churn_rate,
        a.churn_seconds,
        touched.len(),
        distinct.len(),
        converged.map_or("never (120 s)".into(), |ms| format!("{ms:.1} ms")),
        wrong,
        prober.report()
    );
    println!(
        "marathon-dns resident memory after the run: {:.1} MiB",
        proc_status(pid, "VmRSS:") as f64 / 1024.0
    );
    drop(prober);
    drop(server);
}
