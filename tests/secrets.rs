//! Marathon credentials never reach the logs, even at debug level and while failing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A Marathon that rejects every request (401) and keeps each request's head.
struct Rejecting {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Rejecting {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                if let Ok(mut v) = seen.lock() {
                    v.push(String::from_utf8_lossy(&head).into_owned());
                }
            }
        });
        Self { addr, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Rejected both a REST request and the event stream: both paths that send credentials.
    fn rejected_rest_and_stream(&self) -> bool {
        let requests = self.requests();
        let asked = |path: &str| {
            requests
                .iter()
                .any(|r| r.starts_with(&format!("GET {path}")))
        };
        asked("/v2/apps") && asked("/v2/events")
    }
}

/// Run the server at trace level until `marathon` has rejected a REST request and the event
/// stream and the log says so; return everything it wrote.
fn logs_while_rejected(marathon: &Rejecting, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--zones-dir", "zones"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let logs = Arc::new(Mutex::new(String::new()));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|pipe| {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if let Ok(mut l) = logs.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        })
    })
    .collect();
    let start = Instant::now();
    let done = loop {
        let logged = logs.lock().map(|l| l.contains("401")).unwrap_or(false);
        if logged && marathon.rejected_rest_and_stream() {
            break true;
        }
        if start.elapsed() > TIMEOUT || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    for r in readers {
        let _ = r.join();
    }
    let logs = logs.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        done,
        "no rejected REST and stream request logged within {TIMEOUT:?}: {:?}\n{logs}",
        marathon.requests()
    );
    logs
}

/// The value of every request's `Authorization` header.
fn authorizations(marathon: &Rejecting) -> Vec<String> {
    marathon
        .requests()
        .iter()
        .filter_map(|head| {
            head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("authorization")
                    .then(|| value.trim().to_string())
            })
        })
        .collect()
}

#[test]
fn basic_auth_credentials_are_never_logged() {
    let marathon = Rejecting::start();
    let url = format!("http://alice:pa55-S3CRET@{}", marathon.addr);
    let logs = logs_while_rejected(&marathon, &["--marathon", &url]);
    // The credentials were in use: every request carried them.
    let auth = authorizations(&marathon);
    assert!(!auth.is_empty(), "no request carried credentials");
    assert!(
        auth.iter().all(|a| a == "Basic YWxpY2U6cGE1NS1TM0NSRVQ="),
        "{auth:?}"
    );
    assert!(!logs.contains("S3CRET"), "password leaked:\n{logs}");
    assert!(
        !logs.contains("YWxpY2"),
        "base64 credentials leaked:\n{logs}"
    );
}

#[test]
fn token_is_never_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-S3CRET-VALUE\n").expect("write");
    let marathon = Rejecting::start();
    let url = format!("http://{}", marathon.addr);
    let logs = logs_while_rejected(
        &marathon,
        &[
            "--marathon",
            &url,
            "--marathon-token-file",
            &token.to_string_lossy(),
        ],
    );
    // The token was read and sent (DC/OS form), and rejected: the failure paths ran.
    let auth = authorizations(&marathon);
    assert!(!auth.is_empty(), "no request carried the token");
    assert!(
        auth.iter().all(|a| a == "token=tok-S3CRET-VALUE"),
        "{auth:?}"
    );
    assert!(!logs.contains("S3CRET"), "token leaked:\n{logs}");
}

#[test]
fn tsig_secrets_are_never_logged() {
    // Base64 of "tsig-S3CRET-material-0123456789".
    let secret = "dHNpZy1TM0NSRVQtbWF0ZXJpYWwtMDEyMzQ1Njc4OQ==";
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("transfer.key");
    std::fs::write(
        &file,
        format!("key \"file.key.\" {{\n  algorithm hmac-sha256;\n  secret \"{secret}\";\n}};\n"),
    )
    .expect("write");
    let marathon = Rejecting::start();
    let url = format!("http://{}", marathon.addr);
    let logs = logs_while_rejected(
        &marathon,
        &[
            "--marathon",
            &url,
            "--allow-transfer",
            "127.0.0.0/8",
            "--tsig-key",
            &format!("inline.key.:hmac-sha256:{secret}"),
            "--tsig-key-file",
            &file.to_string_lossy(),
        ],
    );
    assert!(!logs.is_empty());
    assert!(!logs.contains(secret), "TSIG secret leaked:\n{logs}");
    assert!(!logs.contains("dHNpZy1"), "TSIG secret leaked:\n{logs}");
}
