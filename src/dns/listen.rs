//! Socket wiring: bind UDP and TCP on every listen address and hand them to hickory's server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use super::fast::UdpWorkers;
use super::handler::{AnswerOptions, DnsHandler};
use super::metrics::DnsMetrics;
use crate::zone::store::ZoneStore;

#[derive(Debug, thiserror::Error)]
#[error("cannot bind {proto} {addr}: {source}")]
pub struct BindError {
    proto: &'static str,
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// A running DNS server and the addresses it actually bound (port 0 resolved).
pub struct DnsServer {
    pub server: Server<DnsHandler>,
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    workers: Vec<UdpWorkers>,
}

impl DnsServer {
    /// Stop answering, UDP workers included.
    pub async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
        let workers = std::mem::take(&mut self.workers);
        let _ = tokio::task::spawn_blocking(move || workers.into_iter().for_each(UdpWorkers::stop))
            .await;
    }
}

/// Bind UDP and TCP on each address. Replies must leave from the address the client sent to
/// (connected-UDP clients such as HAProxy drop anything else): on a wildcard address the UDP
/// workers see each query's destination and answer from it.
///
/// UDP is served by `udp_workers` fast-path threads per address (`SO_REUSEPORT`); with 0,
/// hickory's own UDP server answers instead (the reference the fast path is tested against).
pub async fn serve(
    listen: &[SocketAddr],
    zones: Arc<ZoneStore>,
    options: AnswerOptions,
    tcp_idle_timeout: Duration,
    udp_workers: usize,
    metrics: Arc<DnsMetrics>,
) -> Result<DnsServer, BindError> {
    let mut server = Server::new(DnsHandler::with_metrics(
        zones.clone(),
        options,
        metrics.clone(),
    ));
    let fast_handler = Arc::new(DnsHandler::with_metrics(zones, options, metrics));
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    let mut workers = Vec::new();
    for addr in listen {
        // The UDP workers answer a wildcard socket's queries from the address they came to
        // (IP_PKTINFO); hickory's own UDP loop cannot.
        let answers_from_destination = cfg!(target_os = "linux") && udp_workers > 0;
        if addr.ip().is_unspecified() && !answers_from_destination {
            tracing::warn!(
                "listening on {addr}: UDP replies may leave from another local address than the \
                 client sent to, which connected-UDP clients (HAProxy) never receive; prefer \
                 specific addresses"
            );
        }
        // Bind TCP first so that with port 0 the UDP socket can take the same port.
        let listener = TcpListener::bind(addr).await.map_err(|source| BindError {
            proto: "TCP",
            addr: *addr,
            source,
        })?;
        let tcp_addr = listener.local_addr().map_err(|source| BindError {
            proto: "TCP",
            addr: *addr,
            source,
        })?;
        if udp_workers == 0 {
            let socket = UdpSocket::bind(tcp_addr)
                .await
                .map_err(|source| BindError {
                    proto: "UDP",
                    addr: tcp_addr,
                    source,
                })?;
            server.register_socket(socket);
        } else {
            workers.push(
                UdpWorkers::start(
                    tcp_addr,
                    udp_workers,
                    fast_handler.clone(),
                    tokio::runtime::Handle::current(),
                )
                .map_err(|source| BindError {
                    proto: "UDP",
                    addr: tcp_addr,
                    source,
                })?,
            );
        }
        server.register_listener(listener, tcp_idle_timeout, 64 * 1024);
        udp.push(tcp_addr);
        tcp.push(tcp_addr);
    }
    Ok(DnsServer {
        server,
        udp,
        tcp,
        workers,
    })
}
