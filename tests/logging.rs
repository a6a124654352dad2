//! `--log-format json`: every line on stderr is one JSON object with a level and a message,
//! the Marathon outage is one clear line, and the URL's credentials never appear.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn json_logs_are_one_object_per_line() {
    // Nothing listens on port 9 of the loopback: Marathon is down from the start.
    let mut child = Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .args(["--log-format", "json", "serve"])
        .args(["--marathon", "http://alice:s3cret-log@127.0.0.1:9"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(["--zones-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/zones")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let warned = line.contains("\"WARN\"");
        lines.push(line);
        if warned {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("\"WARN\"")),
        "no warning about the unreachable Marathon in {lines:?}"
    );
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
        assert!(
            !line.contains("s3cret-log"),
            "a credential in the log: {line}"
        );
    }
}

/// The example configuration holds every flag of `serve` (as a key or a commented default),
/// and `check-config` accepts it.
#[test]
fn example_config_lists_every_key_and_checks() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = format!("{root}/docs/examples/marathon-dns.toml");
    let text = std::fs::read_to_string(&example).expect("example config");
    let help = Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .args(["serve", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|f| !matches!(*f, "config" | "log-format" | "help"))
    {
        assert!(
            text.contains(&format!("{flag} =")) || text.contains(&format!("{flag} /")),
            "docs/examples/marathon-dns.toml does not mention {flag}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .args(["check-config", "--config", &example])
        .current_dir(root)
        .env_remove("MARATHON_DNS_MARATHON")
        .output()
        .expect("check-config runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));

    // A bad file: non-zero, with file:line.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "marathon = [\"http://m:8080\"]\nttl = \"five\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("check-config runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2: ttl:"), "{err}");

    // A TSIG key file with a bad secret: the file and line, never the secret.
    let key = dir.path().join("transfer.key");
    std::fs::write(
        &key,
        "key \"transfer.key.\" {\n  algorithm hmac-sha256;\n  secret \"not*base64\";\n};\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .args([
            "check-config",
            "--marathon",
            "http://m:8080",
            "--tsig-key-file",
        ])
        .arg(&key)
        .output()
        .expect("check-config runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("transfer.key: line 3:"), "{err}");
    assert!(!err.contains("not*base64"), "{err}");
}
