//! `marathon-dns haproxy-config`: a per-host HAProxy configuration from Marathon's app
//! definitions. Every app port with a service port becomes a frontend on that port and a
//! backend whose `server-template` follows the port's SRV name in marathon-dns, so the
//! service → port map comes from Marathon, and task starts, kills and moves reach HAProxy
//! through DNS without a reload. Pure: definitions in, configuration text out, the same bytes
//! for the same definitions.
//!
//! marathon-lb labels honoured: `HAPROXY_GROUP`, `HAPROXY_{n}_MODE` (`http`/`tcp`),
//! `HAPROXY_{n}_VHOST` (comma-separated host names on the shared HTTP frontend),
//! `HAPROXY_{n}_PATH` (path prefix, with or without a virtual host), `HAPROXY_{n}_BALANCE`.

use std::fmt::Write;

use crate::cluster::{Proto, ServiceApp};
use crate::naming;

/// What the operator chose.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// marathon-dns addresses, `ADDR:PORT` or `tcp@ADDR:PORT`.
    pub nameservers: Vec<String>,
    /// Where the frontends listen.
    pub bind_address: String,
    /// The shared HTTP frontend for virtual hosts and paths.
    pub http_port: u16,
    /// Only apps whose `HAPROXY_GROUP` label is this.
    pub group: Option<String>,
    /// The zone marathon-dns serves (`marathon.local`).
    pub zone: String,
}

/// One backend: an app port with a service port.
struct Backend<'a> {
    name: String,
    app: &'a ServiceApp,
    service_port: u16,
    srv_name: String,
    mode: &'static str,
    balance: String,
    vhosts: Vec<String>,
    path: Option<String>,
}

/// Characters HAProxy accepts in a proxy name.
fn proxy_name(id: &str, port: u16) -> String {
    let base: String = id
        .trim_start_matches('/')
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' => c,
            _ => '_',
        })
        .collect();
    format!("{base}_{port}")
}

/// Slots per backend: rolling deploys run old and new tasks side by side, and removed tasks
/// hold a slot until `hold obsolete` ends.
pub fn slots(instances: u32) -> u32 {
    (instances.saturating_mul(2)).max(4)
}

/// The SRV name of port `index` of `app` by the README's naming rules: its own name if the
/// port is named, the app's short name for the first TCP port, else `_port<i>`.
fn srv_name(app: &ServiceApp, index: usize, zone: &str) -> Option<String> {
    let name = naming::app_name(&app.id, zone)?;
    let spec = app.ports.get(index)?;
    if let Some(port_name) = spec.name.as_deref().filter(|n| !n.is_empty()) {
        return naming::port_srv_name(&name, Some(port_name), index, Proto::Tcp.label());
    }
    let first_tcp = app
        .ports
        .iter()
        .position(|p| p.protocols.contains(&Proto::Tcp));
    if first_tcp == Some(index) {
        naming::app_srv_name(&app.id, Proto::Tcp.label(), zone)
    } else {
        naming::port_srv_name(&name, None, index, Proto::Tcp.label())
    }
}

fn label<'a>(app: &'a ServiceApp, index: usize, key: &str) -> Option<&'a str> {
    app.labels
        .get(&format!("HAPROXY_{index}_{key}"))
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

/// The configuration for `apps`.
pub fn render(apps: &[ServiceApp], opts: &RenderOptions) -> String {
    let mut apps: Vec<&ServiceApp> = apps
        .iter()
        .filter(|a| match &opts.group {
            Some(g) => a.labels.get("HAPROXY_GROUP") == Some(g),
            None => true,
        })
        .collect();
    apps.sort_by(|a, b| a.id.cmp(&b.id));

    let mut out = String::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut backends: Vec<Backend<'_>> = Vec::new();
    for app in apps {
        for (index, spec) in app.ports.iter().enumerate() {
            let Some(service_port) = app.service_ports.get(index).copied().flatten() else {
                skipped.push(format!("{} port {index}: no service port", app.id));
                continue;
            };
            if !spec.protocols.contains(&Proto::Tcp) {
                skipped.push(format!(
                    "{} port {index} ({service_port}): UDP only, HAProxy does not proxy UDP",
                    app.id
                ));
                continue;
            }
            let Some(srv) = srv_name(app, index, &opts.zone) else {
                skipped.push(format!("{} port {index}: its DNS name is too long", app.id));
                continue;
            };
            let vhosts: Vec<String> = label(app, index, "VHOST")
                .map(|v| {
                    v.split(',')
                        .map(|h| h.trim().to_ascii_lowercase())
                        .filter(|h| !h.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let path = label(app, index, "PATH").map(|p| p.trim().to_string());
            let mode = match label(app, index, "MODE") {
                Some("http") => "http",
                Some(_) => "tcp",
                None if !vhosts.is_empty() || path.is_some() => "http",
                None => "tcp",
            };
            backends.push(Backend {
                name: proxy_name(&app.id, service_port),
                app,
                service_port,
                srv_name: srv,
                mode,
                balance: label(app, index, "BALANCE")
                    .unwrap_or("roundrobin")
                    .to_string(),
                vhosts,
                path,
            });
        }
    }

    let tcp_dns = opts.nameservers.iter().any(|n| n.starts_with("tcp@"));
    let _ = writeln!(
        out,
        "# Generated by `marathon-dns haproxy-config` from Marathon's app definitions; do not edit.\n\
         # It changes only when apps, service ports, instance counts or HAPROXY_* labels change:\n\
         # task starts, kills and moves reach HAProxy through DNS (server-template over SRV)."
    );
    // No maxconn in `global`: HAProxy derives it from the file-descriptor limit it gets,
    // while a fixed value can exceed that limit and stop HAProxy from starting.
    out.push_str(
        "global\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    \
         timeout server 60s\n    timeout http-request 10s\n\n",
    );
    out.push_str("resolvers marathon\n");
    for (i, ns) in opts.nameservers.iter().enumerate() {
        let _ = writeln!(out, "    nameserver dns{} {ns}", i + 1);
    }
    let _ = writeln!(
        out,
        "    accepted_payload_size {}\n    resolve_retries 3\n    timeout resolve 1s\n    \
         timeout retry 1s\n    hold obsolete 5s\n    hold nx 30s\n    hold other 30s\n    \
         hold refused 30s\n    hold timeout 30s",
        if tcp_dns { 65535 } else { 8192 }
    );
    for s in &skipped {
        let _ = writeln!(out, "# skipped: {s}");
    }

    let routed: Vec<&Backend<'_>> = backends
        .iter()
        .filter(|b| b.mode == "http" && (!b.vhosts.is_empty() || b.path.is_some()))
        .collect();
    if !routed.is_empty() {
        let _ = writeln!(
            out,
            "\nfrontend marathon_http_{}\n    bind {}:{}\n    mode http",
            opts.http_port, opts.bind_address, opts.http_port
        );
        for b in &routed {
            let mut conds = Vec::new();
            if !b.vhosts.is_empty() {
                let _ = writeln!(
                    out,
                    "    acl host_{} hdr(host),field(1,:) -i {}",
                    b.name,
                    b.vhosts.join(" ")
                );
                conds.push(format!("host_{}", b.name));
            }
            if let Some(p) = &b.path {
                let _ = writeln!(out, "    acl path_{} path_beg {p}", b.name);
                conds.push(format!("path_{}", b.name));
            }
            let _ = writeln!(out, "    use_backend {} if {}", b.name, conds.join(" "));
        }
    }

    for b in &backends {
        let _ = writeln!(
            out,
            "\n# {} port {} (instances: {})\nfrontend {}\n    bind {}:{}\n    mode {}\n    \
             default_backend {}\n\nbackend {}\n    mode {}\n    balance {}\n    \
             server-template t {} {} resolvers marathon resolve-prefer ipv4 init-addr none check",
            b.app.id,
            b.service_port,
            b.app.instances,
            b.name,
            opts.bind_address,
            b.service_port,
            b.mode,
            b.name,
            b.name,
            b.mode,
            b.balance,
            slots(b.app.instances),
            b.srv_name,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PortSpec;

    fn app(id: &str, ports: &[(Option<&str>, &[Proto], Option<u16>)]) -> ServiceApp {
        ServiceApp {
            id: id.into(),
            ports: ports
                .iter()
                .map(|(name, protos, _)| PortSpec {
                    name: name.map(str::to_string),
                    protocols: protos.to_vec(),
                    consumes_host_port: true,
                    container_port: None,
                })
                .collect(),
            service_ports: ports.iter().map(|(_, _, s)| *s).collect(),
            instances: 3,
            labels: Default::default(),
        }
    }

    fn opts() -> RenderOptions {
        RenderOptions {
            nameservers: vec!["127.0.0.1:8053".into()],
            bind_address: "127.0.0.1".into(),
            http_port: 80,
            group: None,
            zone: "marathon.local".into(),
        }
    }

    fn web() -> ServiceApp {
        let mut web = app(
            "/prod/web",
            &[
                (Some("http"), &[Proto::Tcp], Some(10001)),
                (None, &[Proto::Tcp], Some(10002)),
                (None, &[Proto::Udp], Some(10003)),
                (None, &[Proto::Tcp], None),
            ],
        );
        web.labels.insert(
            "HAPROXY_0_VHOST".into(),
            "Web.Example.com, www.example.com".into(),
        );
        web
    }

    #[test]
    fn ports_become_frontends_on_their_service_ports_with_srv_backends() {
        let api = || app("/api", &[(None, &[Proto::Tcp], Some(10010))]);
        let text = render(&[web(), api()], &opts());
        assert!(text.contains("bind 127.0.0.1:10001"));
        assert!(
            text.contains(
                "server-template t 6 _http._tcp.web.prod.marathon.local resolvers marathon"
            )
        );
        assert!(text.contains("server-template t 6 _port1._tcp.web.prod.marathon.local"));
        assert!(text.contains("server-template t 6 _api._tcp.marathon.local"));
        assert!(text.contains("UDP only"));
        assert!(text.contains("no service port"));
        assert!(text.contains(
            "acl host_prod_web_10001 hdr(host),field(1,:) -i web.example.com www.example.com"
        ));
        assert!(text.contains("bind 127.0.0.1:80\n    mode http"));
        // Same definitions, same bytes, whatever their order.
        assert_eq!(text, render(&[api(), web()], &opts()));
    }

    #[test]
    fn groups_filter_and_tcp_nameservers_take_big_answers() {
        let mut a = app("/a", &[(None, &[Proto::Tcp], Some(10001))]);
        a.labels.insert("HAPROXY_GROUP".into(), "internal".into());
        let b = app("/b", &[(None, &[Proto::Tcp], Some(10002))]);
        let mut o = opts();
        o.group = Some("internal".into());
        o.nameservers = vec!["tcp@127.0.0.1:8053".into()];
        let text = render(&[a, b], &o);
        assert!(text.contains(":10001"));
        assert!(!text.contains(":10002"));
        assert!(text.contains("accepted_payload_size 65535"));
        assert!(text.contains("nameserver dns1 tcp@127.0.0.1:8053"));
        assert_eq!(slots(0), 4);
        assert_eq!(slots(10), 20);
    }
}
