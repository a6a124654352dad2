//! Socket wiring: bind UDP and TCP on every listen address; UDP to the fast-path workers (or
//! hickory's server), TCP to our own listener ([`super::tcp`]).

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use super::fast::UdpWorkers;
use super::handler::{AnswerOptions, DnsHandler, Policy};
use super::metrics::DnsMetrics;
use super::policy::{NetList, Rrl, RrlConfig};
use super::tcp::{self, TcpLimits};
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
    tcp_listeners: tokio::task::JoinSet<()>,
    stop_tcp: tokio_util::sync::CancellationToken,
}

/// How the listeners answer.
#[derive(Debug, Clone, Default)]
pub struct ListenOptions {
    pub answer: AnswerOptions,
    pub tcp: TcpLimits,
    /// UDP fast-path threads per address; 0: hickory's UDP server.
    pub udp_workers: usize,
    /// `--allow-query`.
    pub allow_query: NetList,
    /// Response rate limiting (UDP).
    pub rrl: Option<RrlConfig>,
    /// Zone transfers and signed queries (AXFR/IXFR, TSIG).
    pub transfers: Option<Arc<crate::transfer::Transfers>>,
}

impl DnsServer {
    /// Stop answering, UDP workers included.
    pub async fn shutdown(mut self) {
        self.stop_tcp.cancel();
        while self.tcp_listeners.join_next().await.is_some() {}
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
    options: &ListenOptions,
    metrics: Arc<DnsMetrics>,
) -> Result<DnsServer, BindError> {
    let udp_workers = options.udp_workers;
    // One rate table for every UDP path: a client spreading queries over source ports
    // reaches several workers.
    let policy = || Policy {
        allow_query: options.allow_query.clone(),
        rrl: None,
        transfers: options.transfers.clone(),
    };
    let rrl = options.rrl.as_ref().and_then(Rrl::new);
    let mut server = Server::new(
        DnsHandler::with_metrics(zones.clone(), options.answer, metrics.clone())
            .with_policy(policy()),
    );
    let fast_handler = Arc::new(
        DnsHandler::with_metrics(zones.clone(), options.answer, metrics.clone())
            .with_policy(Policy { rrl, ..policy() }),
    );
    let tcp_handler = Arc::new(
        DnsHandler::with_metrics(zones, options.answer, metrics.clone()).with_policy(policy()),
    );
    let stop_tcp = tokio_util::sync::CancellationToken::new();
    let mut tcp_listeners = tokio::task::JoinSet::new();
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
        tcp_listeners.spawn(tcp::serve(
            listener,
            tcp_handler.clone(),
            options.tcp,
            metrics.tcp.clone(),
            stop_tcp.clone(),
        ));
        udp.push(tcp_addr);
        tcp.push(tcp_addr);
    }
    Ok(DnsServer {
        server,
        udp,
        tcp,
        workers,
        tcp_listeners,
        stop_tcp,
    })
}
