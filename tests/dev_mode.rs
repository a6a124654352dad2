//! The README's first command: `marathon-dns dev` starts, prints the dig commands, and real
//! `dig` gets SRV records with all glue from it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dev_mode_answers_dig_at_once() {
    let child = Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .args(["dev", "--listen", "127.0.0.1:0", "--churn", "1h"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary runs");
    let mut child = Kill(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let start = Instant::now();
    let mut port = None;
    let mut suggested = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.split("DNS on 127.0.0.1:").nth(1) {
            port = rest.split_whitespace().next().map(str::to_string);
        }
        if line.trim_start().starts_with("dig ") {
            suggested.push(line.trim().to_string());
        }
        if line.contains("Ctrl-C") || start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let port = port.expect("dev mode prints its DNS address");
    assert!(
        suggested
            .iter()
            .any(|l| l.contains("SRV _web._tcp.prod.marathon.local")),
        "{suggested:?}"
    );

    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port,
            "SRV",
            "_web._tcp.prod.marathon.local",
            "+norec",
        ])
        .output()
        .expect("dig is installed (bind9-dnsutils; .ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("flags: qr aa;"), "{text}");
    let srv = text.lines().filter(|l| l.contains("\tSRV\t")).count();
    let glue = text.lines().filter(|l| l.contains("\tA\t")).count();
    assert_eq!(srv, 3, "{text}");
    assert_eq!(glue, 3, "one glue record per SRV target:\n{text}");
}
