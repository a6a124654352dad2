//! The README's first command: `marathon-dns dev` starts and prints `dig` commands. Every `dig`
//! line the banner prints and the README shows gets the answer it promises from dev mode (read
//! from both, so neither can drift), and the real `dig` gets SRV records with all glue.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// How long dev mode may take to print its banner, whatever it prints (or not) meanwhile.
const STARTUP: Duration = Duration::from_secs(30);

/// `marathon-dns dev` on an ephemeral port, killed on drop.
struct Dev {
    child: std::process::Child,
    /// The address the banner announces.
    dns: SocketAddr,
    /// The banner's `dig` lines, trimmed.
    digs: Vec<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start dev mode and read its banner (up to "Ctrl-C"), all within `STARTUP`.
fn start_dev() -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .args(["dev", "--listen", "127.0.0.1:0", "--churn", "1h"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary runs");
    let stdout = child.stdout.take().expect("stdout");
    // Lines come through a channel so that the deadline holds even if none ever arrives.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut dev = Dev {
        child,
        dns: SocketAddr::from(([0, 0, 0, 0], 0)),
        digs: Vec::new(),
    };
    let deadline = Instant::now() + STARTUP;
    let mut banner = Vec::new();
    let mut dns = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no complete banner within {STARTUP:?}; got: {banner:#?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("dev mode ended before its banner was complete; got: {banner:#?}")
            }
        };
        if let Some(rest) = line.split("DNS on ").nth(1) {
            dns = rest
                .split_whitespace()
                .next()
                .and_then(|a| a.parse::<SocketAddr>().ok());
        }
        if line.trim_start().starts_with("dig ") {
            dev.digs.push(line.trim().to_string());
        }
        let done = line.contains("Ctrl-C");
        banner.push(line);
        if done {
            break;
        }
    }
    dev.dns = dns.unwrap_or_else(|| panic!("dev mode prints its DNS address: {banner:#?}"));
    dev
}

/// A `dig` command line, as far as these docs use it.
#[derive(Debug)]
struct Dig {
    line: String,
    server: Option<String>,
    port: Option<u16>,
    rtype: RecordType,
    name: String,
}

fn parse_dig(line: &str) -> Dig {
    let command = line.split('#').next().unwrap_or_default();
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("dig"), "{line}");
    let (mut server, mut port, mut rtype, mut names) = (None, None, None, Vec::new());
    while let Some(word) = words.next() {
        if let Some(s) = word.strip_prefix('@') {
            server = Some(s.to_string());
        } else if word == "-p" {
            port = words.next().and_then(|p| p.parse().ok());
            assert!(port.is_some(), "bad -p in: {line}");
        } else if word.starts_with('+') {
            // Query options (+norec …) do not change what the answer must contain.
        } else if word.starts_with('-') {
            panic!("option {word} not understood by this test: {line}");
        } else if let Some(t) = RecordType::from_str(word)
            .ok()
            .filter(|t| word == word.to_ascii_uppercase() && !matches!(t, RecordType::Unknown(_)))
        {
            assert!(rtype.replace(t).is_none(), "two types in: {line}");
        } else {
            names.push(word.to_string());
        }
    }
    assert_eq!(names.len(), 1, "one name expected in: {line}");
    Dig {
        line: line.to_string(),
        server,
        port,
        rtype: rtype.unwrap_or(RecordType::A),
        name: names.remove(0),
    }
}

/// What the README shows a `dig` line answering, if it shows the output.
#[derive(Debug)]
struct Shown {
    status: ResponseCode,
    answers: usize,
}

/// Every `dig` line in the README's code blocks (plain or after a `$ ` prompt), with the
/// status and answer count printed under it, if any.
fn readme_digs() -> Vec<(Dig, Option<Shown>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let text = std::fs::read_to_string(path).expect("README.md");
    let lines: Vec<&str> = text.lines().collect();
    let mut in_code = false;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let command = line.trim().trim_start_matches("$ ");
        if !in_code || !command.starts_with("dig ") {
            continue;
        }
        let header = lines.get(i + 1).copied().unwrap_or_default();
        let shown = header.starts_with(";; ->>HEADER<<-").then(|| {
            let status = header
                .split("status: ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .unwrap_or_else(|| panic!("status in: {header}"));
            let status = match status {
                "NOERROR" => ResponseCode::NoError,
                "NXDOMAIN" => ResponseCode::NXDomain,
                other => panic!("status {other} not expected in the README: {header}"),
            };
            let flags = lines.get(i + 2).copied().unwrap_or_default();
            let answers = flags
                .split("ANSWER: ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("ANSWER count under: {line}"));
            Shown { status, answers }
        });
        out.push((parse_dig(command), shown));
    }
    out
}

/// The query as `dig` sends it: UDP, with EDNS.
async fn ask(dns: SocketAddr, dig: &Dig) -> Message {
    let m = q(dns, &dig.name, dig.rtype).await;
    assert!(!m.metadata.truncation, "{}", dig.line);
    m
}

/// The answer a line promises when no output is shown: records of the asked type.
fn assert_has_records(dig: &Dig, m: &Message, source: &str) {
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "{source}: {}",
        dig.line
    );
    let n = m
        .answers
        .iter()
        .filter(|r| r.record_type() == dig.rtype)
        .count();
    assert!(
        n >= 1,
        "{source}: no {} record for: {}",
        dig.rtype,
        dig.line
    );
}

#[tokio::test]
async fn every_dig_line_of_readme_and_banner_answers_in_dev_mode() {
    let dev = start_dev();
    let ip = dev.dns.ip().to_string();
    let port = dev.dns.port();

    assert!(
        dev.digs.len() >= 3,
        "the banner suggests dig commands: {:?}",
        dev.digs
    );
    for line in &dev.digs {
        let dig = parse_dig(line);
        assert_eq!(dig.server.as_deref(), Some(ip.as_str()), "{line}");
        assert_eq!(dig.port, Some(port), "{line}");
        assert_has_records(&dig, &ask(dev.dns, &dig).await, "banner");
    }

    let readme = readme_digs();
    assert!(
        readme.iter().filter(|(_, shown)| shown.is_none()).count() >= 3,
        "the README suggests dig commands: {readme:?}"
    );
    for (dig, shown) in &readme {
        // The README's lines are for `cargo run -- dev` on its default address.
        assert_eq!(dig.server.as_deref(), Some("127.0.0.1"), "{}", dig.line);
        assert_eq!(dig.port, Some(8053), "{}", dig.line);
        let m = ask(dev.dns, dig).await;
        match shown {
            None => assert_has_records(dig, &m, "README"),
            Some(shown) => {
                assert_eq!(
                    m.metadata.response_code, shown.status,
                    "README shows another status for: {}",
                    dig.line
                );
                assert_eq!(
                    m.answers.len(),
                    shown.answers,
                    "README shows another ANSWER count for: {}",
                    dig.line
                );
            }
        }
    }
}

#[test]
fn real_dig_gets_srv_with_all_glue_from_dev_mode() {
    let Some(dig) = require_program("dig", "bind9-dnsutils") else {
        return;
    };
    let dev = start_dev();
    assert!(
        dev.digs
            .iter()
            .any(|l| l.contains("SRV _web._tcp.prod.marathon.local")),
        "{:?}",
        dev.digs
    );
    let out = Command::new(dig)
        .args([
            &format!("@{}", dev.dns.ip()),
            "-p",
            &dev.dns.port().to_string(),
            "SRV",
            "_web._tcp.prod.marathon.local",
            "+norec",
        ])
        .output()
        .expect("dig runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("flags: qr aa;"), "{text}");
    let srv = text.lines().filter(|l| l.contains("\tSRV\t")).count();
    let glue = text.lines().filter(|l| l.contains("\tA\t")).count();
    assert_eq!(srv, 3, "{text}");
    assert_eq!(glue, 3, "one glue record per SRV target:\n{text}");
}
