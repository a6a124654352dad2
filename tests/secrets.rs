//! Marathon credentials never reach the logs, even at debug level and while failing.

use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn credentials_are_never_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-S3CRET-VALUE\n").expect("write");
    let run = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--zones-dir", "zones"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary runs");
        std::thread::sleep(Duration::from_millis(1500));
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // A Marathon that rejects every request (401): requests carry the credentials, every
    // failure path logs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let url = format!("http://alice:pa55-S3CRET@{addr}");
    let logs = run(&["--marathon", &url]);
    assert!(logs.contains("401"), "the failure is logged:\n{logs}");
    assert!(!logs.contains("S3CRET"), "password leaked:\n{logs}");
    assert!(
        !logs.contains("YWxpY2"),
        "base64 credentials leaked:\n{logs}"
    );
    let plain = format!("http://{addr}");
    let logs = run(&[
        "--marathon",
        &plain,
        "--marathon-token-file",
        &token.to_string_lossy(),
    ]);
    assert!(!logs.contains("S3CRET"), "token leaked:\n{logs}");
}
