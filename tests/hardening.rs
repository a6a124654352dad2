//! Holding under attack, over real sockets: response rate limiting bounds UDP amplification
//! while other networks and TCP keep full answers; `--allow-query` refuses outsiders; the TCP
//! listener caps connections globally and per client, ends idle, trickling, long-lived and
//! long-running connections, and survives running out of file descriptors without spinning.
//!
//! Loopback gives several "networks": 127.0.0.1 and 127.0.1.1 are in different /24s.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use marathon_dns::dns::policy::{NetList, parse_net};
use marathon_dns::server::Settings;
use marathon_dns::sim::{SimApp, SimNetwork, SimPort, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

const ATTACKER: [u8; 4] = [127, 0, 0, 1];
const OTHER: [u8; 4] = [127, 0, 1, 1];

/// An app with 300 tasks: its SRV answer with EDNS 65535 is ~22 kB.
async fn big_app() -> Simulator {
    let sim = Simulator::start().await.expect("sim");
    sim.add_app(SimApp::new(
        "/big",
        SimNetwork::Host,
        vec![SimPort::tcp(None, 0)],
    ));
    for i in 0..300 {
        sim.start_task("/big", &format!("10.0.{}.{}", i / 250, i % 250 + 1), &[])
            .expect("task");
    }
    sim
}

const BIG_SRV: &str = "_big._tcp.marathon.local";

/// The product's defaults for RRL (tests/common turns it off).
fn default_rrl(s: &mut Settings) {
    s.rrl = Settings::new(vec![]).rrl;
}

async fn udp_from(local: [u8; 4]) -> UdpSocket {
    UdpSocket::bind(SocketAddr::from((local, 0)))
        .await
        .expect("bind a loopback address")
}

async fn tcp_from(local: [u8; 4], server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((local, 0)))?;
    socket.connect(server).await
}

/// One query over an open TCP connection; `None` if the server closed it.
async fn ask_tcp(stream: &mut TcpStream, msg: &Message) -> Option<Message> {
    let bytes = msg.to_vec().expect("encode");
    let len = u16::try_from(bytes.len()).expect("fits");
    stream.write_all(&len.to_be_bytes()).await.ok()?;
    stream.write_all(&bytes).await.ok()?;
    let mut len = [0u8; 2];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.ok()?;
    Message::from_vec(&buf).ok()
}

/// Whether the server closes `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn metric(running: &marathon_dns::server::Running, name: &str) -> f64 {
    admin_metric(running, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_bounds_amplification_and_spares_other_networks_and_tcp() {
    let sim = big_app().await;
    let running = start_against(&sim, default_rrl).await;
    let server = running.udp[0];
    let query = query_message(BIG_SRV, RecordType::SRV, Some(65535))
        .to_vec()
        .expect("encode");
    let sender = std::sync::Arc::new(udp_from(ATTACKER).await);
    sender.connect(server).await.expect("connect");
    // Count the replies as they come (a full socket buffer would hide bytes).
    let receiver = {
        let sock = sender.clone();
        tokio::spawn(async move {
            let (mut bytes, mut full, mut slipped) = (0usize, 0usize, 0usize);
            let mut buf = vec![0u8; 65535];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(700), sock.recv(&mut buf)).await
            {
                bytes += n;
                let m = Message::from_vec(&buf[..n]).expect("decodable");
                if m.metadata.truncation && m.answers.is_empty() {
                    slipped += 1;
                } else {
                    full += 1;
                }
            }
            (bytes, full, slipped)
        })
    };
    // 2,000 identical 22 kB-answer queries over one second from one /24 ...
    let sent_bytes = query.len() * 2000;
    let good = tokio::spawn(async move {
        // ... while a client in another /24 asks the same now and then (retrying, as
        // resolvers do, when the flood makes the kernel drop a datagram on the way in).
        let sock = udp_from(OTHER).await;
        let mut full = 0;
        for _ in 0..10 {
            for _attempt in 0..4 {
                let m = query_message(BIG_SRV, RecordType::SRV, Some(65535));
                sock.send_to(&m.to_vec().expect("encode"), server)
                    .await
                    .expect("send");
                let mut buf = vec![0u8; 65535];
                if let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
                {
                    let reply = Message::from_vec(&buf[..n]).expect("decodable");
                    if !reply.metadata.truncation && reply.answers.len() == 300 {
                        full += 1;
                    }
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        full
    });
    let start = Instant::now();
    for i in 0..2000u32 {
        sender.send(&query).await.expect("send");
        if i % 20 == 19 {
            tokio::time::sleep_until((start + Duration::from_millis(u64::from(i) / 2)).into())
                .await;
        }
    }
    // TCP proves the source: never limited, even for the flooding address.
    let mut stream = tcp_from(ATTACKER, running.tcp[0]).await.expect("connect");
    let over_tcp = ask_tcp(&mut stream, &query_message(BIG_SRV, RecordType::SRV, None))
        .await
        .expect("TCP answer");
    assert_eq!(over_tcp.answers.len(), 300);
    assert_eq!(
        good.await.expect("good client"),
        10,
        "the other /24 always got full answers"
    );
    let (bytes, full, slipped) = receiver.await.expect("receiver");
    let ratio = bytes as f64 / sent_bytes as f64;
    println!(
        "2,000 queries ({sent_bytes} bytes) in {:?} → {full} full answers, {slipped} TC slips, {bytes} bytes: {ratio:.2}×",
        start.elapsed()
    );
    assert!(ratio <= 10.0, "amplification {ratio:.1}× > 10×");
    assert!(full >= 1, "the rate still lets some answers through");
    assert!(slipped >= 100, "limited answers slip as TC=1 ({slipped})");
    assert!(metric(&running, "marathon_dns_rrl_slipped_total").await >= 100.0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exempt_networks_are_never_limited() {
    let sim = big_app().await;
    let running = start_against(&sim, |s| {
        default_rrl(s);
        s.rrl.exempt = NetList(vec![parse_net("127.0.0.0/24").expect("net")]);
    })
    .await;
    let sock = udp_from(ATTACKER).await;
    sock.connect(running.udp[0]).await.expect("connect");
    let query = query_message(BIG_SRV, RecordType::SRV, Some(65535))
        .to_vec()
        .expect("encode");
    let mut full = 0;
    let mut buf = vec![0u8; 65535];
    for _ in 0..60 {
        sock.send(&query).await.expect("send");
        let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
            .await
            .expect("answered")
            .expect("recv");
        let m = Message::from_vec(&buf[..n]).expect("decodable");
        if m.answers.len() == 300 {
            full += 1;
        }
    }
    // 60 × 19 units is far above the default rate of 200 per second.
    assert_eq!(full, 60);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_query_refuses_outsiders_over_udp_and_tcp() {
    let sim = big_app().await;
    let running = start_against(&sim, |s| {
        s.allow_query = NetList(vec![parse_net("127.0.1.0/24").expect("net")]);
    })
    .await;
    let msg = query_message("big.marathon.local", RecordType::A, Some(1232));
    let outsider = udp_from(ATTACKER).await;
    outsider
        .send_to(&msg.to_vec().expect("encode"), running.udp[0])
        .await
        .expect("send");
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(TIMEOUT, outsider.recv_from(&mut buf))
        .await
        .expect("answered")
        .expect("recv");
    let refused = Message::from_vec(&buf[..n]).expect("decodable");
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(refused.answers.is_empty());
    let mut stream = tcp_from(ATTACKER, running.tcp[0]).await.expect("connect");
    let refused = ask_tcp(&mut stream, &msg).await.expect("TCP answer");
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);

    let insider = udp_from(OTHER).await;
    insider
        .send_to(&msg.to_vec().expect("encode"), running.udp[0])
        .await
        .expect("send");
    let (n, _) = tokio::time::timeout(TIMEOUT, insider.recv_from(&mut buf))
        .await
        .expect("answered")
        .expect("recv");
    let answered = Message::from_vec(&buf[..n]).expect("decodable");
    assert_eq!(answered.metadata.response_code, ResponseCode::NoError);
    assert!(!answered.answers.is_empty());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_capped_per_client_and_globally() {
    let sim = big_app().await;
    let running = start_against(&sim, |s| {
        s.tcp.max_per_client = 3;
        s.tcp.max_connections = 5;
    })
    .await;
    let server = running.tcp[0];
    let msg = query_message("big.marathon.local", RecordType::A, None);
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = tcp_from(ATTACKER, server).await.expect("connect");
        assert!(ask_tcp(&mut c, &msg).await.is_some());
        open.push(c);
    }
    let mut fourth = tcp_from(ATTACKER, server).await.expect("connect");
    assert!(
        closed_within(&mut fourth, Duration::from_secs(2)).await,
        "a 4th connection from one client is closed"
    );
    for _ in 0..2 {
        let mut c = tcp_from(OTHER, server).await.expect("connect");
        assert!(ask_tcp(&mut c, &msg).await.is_some());
        open.push(c);
    }
    let mut sixth = tcp_from([127, 0, 2, 1], server).await.expect("connect");
    assert!(
        closed_within(&mut sixth, Duration::from_secs(2)).await,
        "a 6th connection overall is closed"
    );
    // The open ones still work, and so does UDP.
    for c in &mut open {
        assert!(ask_tcp(c, &msg).await.is_some());
    }
    assert!(
        !q(running.udp[0], "big.marathon.local", RecordType::A)
            .await
            .answers
            .is_empty()
    );
    // A slot comes back when a connection ends.
    drop(open.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut c = tcp_from([127, 0, 2, 1], server).await.expect("connect");
        if ask_tcp(&mut c, &msg).await.is_some() {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a freed slot is reused");
    assert!(
        metric(
            &running,
            "marathon_dns_tcp_connections_rejected_total{limit=\"global\"}"
        )
        .await
            >= 1.0
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_end_after_their_lifetime_queries_or_a_trickle() {
    let sim = big_app().await;
    let running = start_against(&sim, |s| {
        s.tcp.max_lifetime = Duration::from_millis(700);
        s.tcp.max_queries = 5;
        s.tcp.idle_timeout = Duration::from_millis(400);
    })
    .await;
    let server = running.tcp[0];
    let msg = query_message("big.marathon.local", RecordType::A, None);

    // A client asking every 100 ms is never idle, but its connection ends after the lifetime.
    let mut steady = TcpStream::connect(server).await.expect("connect");
    let start = Instant::now();
    let mut answered = 0;
    while ask_tcp(&mut steady, &msg).await.is_some() {
        answered += 1;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "still open after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        if answered >= 5 {
            break;
        }
    }
    assert!(
        (3..=5).contains(&answered),
        "{answered} answers in {:?}",
        start.elapsed()
    );
    assert!(closed_within(&mut steady, Duration::from_secs(2)).await);

    // Five queries, then the connection is closed.
    let mut busy = TcpStream::connect(server).await.expect("connect");
    for _ in 0..5 {
        assert!(ask_tcp(&mut busy, &msg).await.is_some());
    }
    assert!(closed_within(&mut busy, Duration::from_secs(2)).await);

    // One byte every 100 ms never makes a message: idle.
    let mut trickle = TcpStream::connect(server).await.expect("connect");
    let bytes = msg.to_vec().expect("encode");
    let mut frame = u16::try_from(bytes.len())
        .expect("fits")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(&bytes);
    let start = Instant::now();
    let mut cut = false;
    for b in frame {
        if trickle.write_all(&[b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if start.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    assert!(
        cut || closed_within(&mut trickle, Duration::from_millis(500)).await,
        "a trickling client is cut off"
    );
    assert!(
        !q(running.udp[0], "big.marathon.local", RecordType::A)
            .await
            .answers
            .is_empty()
    );
    running.shutdown().await;
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_neither_kills_nor_spins_the_tcp_listener() {
    use std::os::unix::process::CommandExt;
    let sim = big_app().await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_marathon-dns"));
    command
        .args(["serve", "--marathon", &sim.url(), "--udp-workers", "1"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--zones-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/zones")])
        .args([
            "--tcp-max-connections",
            "1000",
            "--tcp-max-connections-per-client",
            "1000",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's descriptor limit.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = daemon_from(command);
    eventually("synced", || async {
        !q(server.dns, "big.marathon.local", RecordType::A)
            .await
            .answers
            .is_empty()
    })
    .await;
    // Far more connections than descriptors: accept() fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..120 {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(server.dns)).await
        {
            held.push(c);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = server.child.id();
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_seconds(pid) - before;
    println!("CPU while out of descriptors: {used:.2} s in 2 s");
    assert!(used < 0.5, "the accept loop spins: {used:.2} CPU s in 2 s");
    // UDP answers meanwhile.
    assert!(
        !q(server.dns, "big.marathon.local", RecordType::A)
            .await
            .answers
            .is_empty()
    );
    assert!(
        server
            .log_line(
                "backing off until connections close",
                Duration::from_secs(2)
            )
            .is_some(),
        "one clear line"
    );
    drop(held);
    // The listener is alive: TCP answers again once descriptors are free.
    let msg = query_message("big.marathon.local", RecordType::A, None);
    eventually("TCP answers again", || async {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(server.dns)).await
        {
            Ok(Ok(mut c)) => ask_tcp(&mut c, &msg).await.is_some(),
            _ => false,
        }
    })
    .await;
}
