//! Replies leave from the address the query came to, even on a wildcard listen address
//! (`0.0.0.0`): HAProxy and most resolvers drop an answer from any other source, and `dig`
//! ignores it ("reply from unexpected source").
//!
//! The server listens on `0.0.0.0` inside a private network namespace that holds nothing but
//! a loopback interface (`unshare --net`), so nothing outside can reach it; queries go to two
//! other loopback addresses, 127.0.0.2 and 127.0.0.3. Hickory's own UDP loop (`--udp-workers
//! 0`) is the control: its replies come from 127.0.0.1, which `dig` rejects.
//!
//! Needs `unshare` (util-linux), `ip` (iproute2), `dig` (bind9-dnsutils) and the right to
//! create a network namespace (root, or unprivileged user namespaces).

mod common;

use std::process::Command;

use common::require_program;

/// Run `dig` for each target inside a fresh network namespace against dev mode on
/// `0.0.0.0:8053` (the namespace is private: no port clash), with `udp_workers`; returns
/// dig's output per target.
fn dig_in_namespace(udp_workers: usize, targets: &[&str]) -> Option<Vec<String>> {
    let bin = env!("CARGO_BIN_EXE_marathon-dns");
    let zones = concat!(env!("CARGO_MANIFEST_DIR"), "/zones");
    let digs: Vec<String> = targets
        .iter()
        .map(|t| {
            format!(
                "echo '== {t}'; dig @{t} -p 8053 +tries=1 +time=2 SRV _web._tcp.prod.marathon.local || true"
            )
        })
        .collect();
    let script = format!(
        "set -e
ip link set lo up
out=$(mktemp)
'{bin}' dev --listen 0.0.0.0:8053 --admin-listen off --zones-dir '{zones}' --udp-workers {udp_workers} >\"$out\" 2>/dev/null &
pid=$!
i=0; while ! grep -q 'DNS on' \"$out\"; do i=$((i+1)); [ $i -lt 300 ] || exit 3; sleep 0.1; done
{}
kill $pid",
        digs.join("\n")
    );
    let out = Command::new("unshare")
        .args(["--map-root-user", "--net", "sh", "-c", &script])
        .output()
        .ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Operation not permitted") || err.contains("unshare failed") {
            return None;
        }
        panic!(
            "namespace script failed ({}): {err}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    Some(
        text.split("== ")
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn answered(output: &str) -> bool {
    output.contains("status: NOERROR") && output.contains("ANSWER: 3")
}

#[test]
fn wildcard_listener_answers_from_the_queried_address() {
    for (program, package) in [
        ("unshare", "util-linux"),
        ("ip", "iproute2"),
        ("dig", "bind9-dnsutils"),
    ] {
        if require_program(program, package).is_none() {
            return;
        }
    }
    let targets = ["127.0.0.2", "127.0.0.3"];
    let Some(fast) = dig_in_namespace(2, &targets) else {
        if std::env::var("MARATHON_DNS_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
            panic!("cannot create a network namespace, and interop tests must not be skipped");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "skipped: needs the right to create a network namespace (root) — or run .ci/run"
        );
        return;
    };
    assert_eq!(fast.len(), targets.len(), "{fast:?}");
    for (target, output) in targets.iter().zip(&fast) {
        assert!(
            answered(output) && !output.contains("unexpected source"),
            "{target}: {output}"
        );
    }
    // The control: hickory's UDP loop answers from the routing's choice of address, which
    // dig rejects; so the check above can fail.
    let control = dig_in_namespace(0, &targets[..1]).unwrap_or_default();
    assert!(
        control.iter().all(|o| !answered(o)),
        "hickory's loop was expected to answer from the wrong address: {control:?}"
    );
}
