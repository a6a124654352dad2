//! The container and service files the project ships, checked as far as this machine allows
//! (there is no Docker engine here: docker/README.md says what is not run). Every file they
//! name exists, every variable they set is one the binary reads, the compose HAProxy file is
//! the tested template filled in, and systemd accepts the unit.

mod common;

use std::path::Path;

use common::require_program;

fn repo(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `MARATHON_DNS_…` names in `text`.
fn variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("MARATHON_DNS_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if end > "MARATHON_DNS_".len() {
            out.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_marathon-dns"))
        .args(args)
        .arg("--help")
        .output()
        .expect("binary runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dockerfile_and_compose_name_real_files_and_variables() {
    let dockerfile = repo("docker/Dockerfile");
    let compose = repo("docker/docker-compose.yml");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"COPY") && !line.contains("--from") {
            for src in &words[1..words.len() - 1] {
                assert!(root.join(src).exists(), "Dockerfile copies missing {src}");
            }
        }
    }
    assert!(
        dockerfile.contains(r#"CMD ["/usr/local/bin/marathon-dns", "healthcheck"]"#),
        "the HEALTHCHECK runs the binary's own check"
    );
    assert!(help(&["healthcheck"]).contains("--admin-listen"));
    assert!(root.join("docker").join("haproxy.cfg").exists());
    assert!(compose.contains("./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg"));
    assert!(compose.contains("dockerfile: docker/Dockerfile"));
    let known = help(&["serve"]);
    let set: Vec<String> = variables(&dockerfile)
        .into_iter()
        .chain(variables(&compose))
        .chain(variables(&repo("docker/README.md")))
        .collect();
    assert!(set.len() >= 6, "{set:?}");
    for var in set {
        assert!(
            known.contains(&format!("[env: {var}=")),
            "{var} is not a variable marathon-dns reads"
        );
    }
}

/// docs/examples/haproxy/haproxy.cfg with the compose values, as docker/README.md says.
fn filled_template() -> String {
    let template = repo("docs/examples/haproxy/haproxy.cfg");
    let body: Vec<&str> = template
        .split('\n')
        .filter(|l| !l.contains("@NAMESERVER_2@"))
        .collect();
    let header = "# GENERATED from docs/examples/haproxy/haproxy.cfg (the file tests/haproxy.rs runs against a real\n# HAProxy) by substituting its placeholders for the compose setup; tests/docker_files.rs checks\n# that it still matches. Edit the template, not this copy.\n";
    header.to_string()
        + &body
            .join("\n")
            .replace("@ADMIN_SOCKET@", "/var/lib/haproxy/admin.sock")
            .replace("@NAMESERVER_1@", "marathon-dns:53")
            .replace("@FRONTEND_PORT@", "8080")
            .replace("@SRV_NAME@", "_web._tcp.marathon.local")
            .replace("    bind 127.0.0.1:8080\n", "    bind :8080\n")
}

#[test]
fn compose_haproxy_config_is_the_tested_template() {
    let copy = repo("docker/haproxy.cfg");
    assert_eq!(
        copy,
        filled_template(),
        "docker/haproxy.cfg drifted from docs/examples/haproxy/haproxy.cfg"
    );
    let Some(haproxy) = require_program("haproxy", "haproxy") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("haproxy.cfg");
    let local = copy.replace("marathon-dns:53", "127.0.0.1:53").replace(
        "/var/lib/haproxy/admin.sock",
        &dir.path().join("admin.sock").display().to_string(),
    );
    std::fs::write(&cfg, local).expect("write");
    let out = std::process::Command::new(haproxy)
        .args(["-c", "-f"])
        .arg(&cfg)
        .output()
        .expect("haproxy runs");
    assert!(
        out.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_accepts_the_unit() {
    let unit = repo("docs/examples/systemd/marathon-dns.service");
    assert!(unit.contains("Type=notify") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let Some(analyze) = require_program("systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("marathon-dns.service");
    // verify checks that ExecStart's program exists: point it at the binary under test.
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/marathon-dns",
            env!("CARGO_BIN_EXE_marathon-dns"),
        ),
    )
    .expect("write");
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
