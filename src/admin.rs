//! The HTTP admin listener (`--admin-listen`, default `127.0.0.1:8054`): liveness, readiness,
//! Prometheus metrics and a read-only view of the zone. Everything here reads the same
//! snapshot and counters the DNS paths and the sync task publish; nothing here can change
//! them, and no credential is ever in a reply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hickory_proto::rr::RecordType;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dns::metrics::DnsMetrics;
use crate::sync::{Control, SyncStatus};
use crate::zone::export;
use crate::zone::name;
use crate::zone::store::ZoneStore;

/// What the admin listener reads.
#[derive(Clone)]
pub struct Views {
    pub store: Arc<ZoneStore>,
    pub status: Arc<SyncStatus>,
    pub queries: Arc<DnsMetrics>,
    /// A stop signal came: not ready any more.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Asks the sync task (the model's owner) for `/v1/apps`.
    pub control: tokio::sync::mpsc::Sender<Control>,
    /// Zone transfer and NOTIFY counters.
    pub transfers: Arc<crate::transfer::TransferStats>,
    /// Marathon events received, by type.
    pub event_types: Arc<crate::marathon::stream::EventTypes>,
}

type Admin = Views;

#[derive(Debug, thiserror::Error)]
#[error("cannot bind the admin listener {addr}: {source}")]
pub struct AdminBindError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Bind `addr` and serve until `shutdown`; returns the bound address (port 0 resolved).
pub async fn serve(
    addr: SocketAddr,
    views: Views,
    shutdown: CancellationToken,
) -> Result<SocketAddr, AdminBindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminBindError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminBindError { addr, source })?;
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/zone", get(zone))
        .route("/v1/records", get(records))
        .route("/v1/apps", get(apps))
        .with_state(views);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(bound)
}

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr}: not an HTTP response")]
    NotHttp { addr: SocketAddr },
}

/// `GET path` from the admin listener at `addr` (an unspecified address means loopback):
/// the HTTP status. Plain HTTP/1.0 by hand: this runs as a container health check, where
/// nothing else is installed.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, ProbeError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let io = |source| ProbeError::Io { addr, source };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(io)?;
        let mut head = Vec::new();
        // The status line is all we need.
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let n = stream.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        line.strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse().ok())
            .ok_or(ProbeError::NotHttp { addr })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout { addr, timeout })?
}

/// The process is alive and serving HTTP.
async fn health() -> &'static str {
    "ok\n"
}

/// 200 once the first full Marathon sync is published (the DNS listeners are bound before the
/// sync starts); it stays 200 while the last good zone is served during a Marathon outage —
/// fail static is the design — and the body says how stale the zone may be.
async fn ready(State(a): State<Admin>) -> Response {
    let synced = a.status.is_synced();
    let draining = a.draining.load(std::sync::atomic::Ordering::Acquire);
    let ready = synced && !draining;
    let body = serde_json::json!({
        "ready": ready,
        "stopping": draining,
        "marathon_synced": synced,
        "event_stream_live": a.status.is_live(),
        "serial": a.status.serial(),
        "seconds_since_last_sync": a.status.since_last_sync().map(|d| d.as_secs_f64()),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// Prometheus text exposition (version 0.0.4).
async fn metrics(State(a): State<Admin>) -> Response {
    let s = &a.status;
    let zone = a.store.marathon();
    let mut out = format!(
        "# HELP marathon_dns_build_info The running version (always 1).\n\
         # TYPE marathon_dns_build_info gauge\n\
         marathon_dns_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP marathon_dns_{name} {help}\n# TYPE marathon_dns_{name} {kind}\nmarathon_dns_{name} {value}\n"
        ));
    };
    metric(
        "zone_serial",
        "gauge",
        "SOA serial of the published Marathon zone.",
        zone.serial().to_string(),
    );
    metric(
        "zone_records",
        "gauge",
        "Records in the published Marathon zone, the SOA excluded.",
        zone.record_count().to_string(),
    );
    metric(
        "zone_names",
        "gauge",
        "Names in the published Marathon zone, empty non-terminals included.",
        zone.names().to_string(),
    );
    metric(
        "marathon_synced",
        "gauge",
        "1 once a full Marathon snapshot has been published.",
        u8::from(s.is_synced()).to_string(),
    );
    metric(
        "event_stream_connected",
        "gauge",
        "1 while the Marathon event stream is connected.",
        u8::from(s.stream_connected()).to_string(),
    );
    metric(
        "seconds_since_last_sync",
        "gauge",
        "Seconds since the last full Marathon snapshot (-1 before the first).",
        s.since_last_sync()
            .map_or(-1.0, |d: Duration| d.as_secs_f64())
            .to_string(),
    );
    for (name, help, value) in [
        ("events_total", "Marathon events applied.", s.events()),
        (
            "unknown_events_total",
            "Marathon events of unknown types (ignored).",
            s.unknown_events(),
        ),
        (
            "malformed_events_total",
            "Marathon events that could not be decoded (skipped).",
            s.malformed_events(),
        ),
        (
            "event_stream_reconnects_total",
            "Reconnects of the Marathon event stream.",
            s.reconnects(),
        ),
        (
            "resyncs_total",
            "Full Marathon snapshots started.",
            s.resyncs(),
        ),
        (
            "resync_failures_total",
            "Full Marathon snapshots that failed (the last good zone kept).",
            s.failed_resyncs(),
        ),
        (
            "zone_publishes_total",
            "Zone versions published.",
            s.publishes(),
        ),
        (
            "resync_drift_apps_total",
            "Apps periodic resyncs found different from what events had built (missed events).",
            s.drift_apps(),
        ),
        (
            "resync_drift_records_total",
            "Records periodic resyncs added or removed (missed events).",
            s.drift_records(),
        ),
        (
            "reloads_total",
            "Configuration reloads (SIGHUP).",
            s.reloads(),
        ),
        (
            "reload_failures_total",
            "Reloads that failed (the previous configuration kept).",
            s.failed_reloads(),
        ),
    ] {
        metric(name, "counter", help, value.to_string());
    }
    a.queries.render(&mut out);
    a.transfers.render(&mut out);
    a.event_types.render(&mut out);
    s.render_event_latency(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The Marathon zone as an RFC 1035 master file.
async fn zone(State(a): State<Admin>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        export::master_file(&a.store.marathon()),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct AppsQuery {
    id: Option<String>,
}

/// The apps and tasks the model holds, as JSON (what Mesos-DNS had in `/v1/services`);
/// `?id=/prod/web` for one app, 404 if Marathon has no such app.
async fn apps(State(a): State<Admin>, Query(q): Query<AppsQuery>) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if a.control.send(Control::Apps(tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    let Ok(mut apps) = rx.await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    };
    if let Some(id) = &q.id {
        let id = format!("/{}", id.trim_matches('/'));
        apps.retain(|app| app.id == id);
        let Some(app) = apps.pop() else {
            return (StatusCode::NOT_FOUND, "no such app\n").into_response();
        };
        return axum::Json(app).into_response();
    }
    axum::Json(serde_json::json!({ "apps": apps })).into_response()
}

#[derive(serde::Deserialize)]
struct RecordsQuery {
    name: String,
}

/// The records at one name of the Marathon zone, as JSON; 404 if the name does not exist.
async fn records(State(a): State<Admin>, Query(q): Query<RecordsQuery>) -> Response {
    let zone = a.store.marathon();
    let Some(wire) = name::parse_ascii(&q.name) else {
        return (StatusCode::BAD_REQUEST, "not a domain name\n").into_response();
    };
    if !zone.contains(&wire) {
        return (StatusCode::NOT_FOUND, "outside the zone\n").into_response();
    }
    let mut found = Vec::new();
    let mut exists = false;
    for rtype in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::CNAME,
        RecordType::TXT,
        RecordType::MX,
        RecordType::NS,
        RecordType::SOA,
    ] {
        let lookup = zone.lookup(&wire, rtype);
        if lookup.outcome == crate::zone::Outcome::NxDomain {
            break;
        }
        exists = true;
        if lookup.outcome != crate::zone::Outcome::Answer {
            continue;
        }
        for i in 0..lookup.len() {
            let Some(entry) = lookup.entry(i, 0) else {
                continue;
            };
            if entry.owner != &wire[..] {
                continue;
            }
            if let Some(data) = entry.rec.rdata.to_hickory() {
                found.push(serde_json::json!({
                    "name": name::to_name(entry.owner).to_ascii(),
                    "type": rtype.to_string(),
                    "ttl": entry.rec.ttl,
                    "data": data.to_string(),
                }));
            }
        }
    }
    if !exists {
        return (StatusCode::NOT_FOUND, "no such name\n").into_response();
    }
    axum::Json(serde_json::json!({ "name": q.name, "records": found })).into_response()
}
