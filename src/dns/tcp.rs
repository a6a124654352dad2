//! DNS over TCP (RFC 7766), our own accept loop: it survives every `accept()` error (hickory
//! 0.26's ends on `ECONNABORTED` and spins on `EMFILE`), caps connections globally and per
//! client, and bounds each connection by an idle timeout, a lifetime and a query count.
//! Queries go to the same [`DnsHandler`] as every other path, as hickory `Request`s; each
//! response (a zone transfer sends several) is one length-prefixed frame, written with
//! backpressure and a timeout so a client that stops reading cannot hold a task forever.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::handler::DnsHandler;

/// Limits of the TCP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Open connections at most (all clients).
    pub max_connections: usize,
    /// Open connections at most per client address.
    pub max_per_client: usize,
    /// Close a connection that sends nothing (or not a whole message) for this long.
    pub idle_timeout: Duration,
    /// Close a connection this long after it opened, after the answer in progress.
    pub max_lifetime: Duration,
    /// Close a connection after this many queries.
    pub max_queries: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_client: 32,
            idle_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(600),
            max_queries: 10_000,
        }
    }
}

/// TCP counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TcpStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected_global: AtomicU64,
    pub rejected_per_client: AtomicU64,
    pub accept_errors: AtomicU64,
}

impl TcpStats {
    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP marathon_dns_tcp_connections Open DNS-over-TCP connections.\n\
             # TYPE marathon_dns_tcp_connections gauge\n\
             marathon_dns_tcp_connections {}\n\
             # HELP marathon_dns_tcp_connections_accepted_total DNS-over-TCP connections accepted and served.\n\
             # TYPE marathon_dns_tcp_connections_accepted_total counter\n\
             marathon_dns_tcp_connections_accepted_total {}\n\
             # HELP marathon_dns_tcp_connections_rejected_total Connections closed at once because a limit was reached.\n\
             # TYPE marathon_dns_tcp_connections_rejected_total counter\n\
             marathon_dns_tcp_connections_rejected_total{{limit=\"global\"}} {}\n\
             marathon_dns_tcp_connections_rejected_total{{limit=\"per_client\"}} {}\n\
             # HELP marathon_dns_tcp_accept_errors_total accept() errors survived (EMFILE, ECONNABORTED …).\n\
             # TYPE marathon_dns_tcp_accept_errors_total counter\n\
             marathon_dns_tcp_accept_errors_total {}",
            load(&self.open),
            load(&self.accepted),
            load(&self.rejected_global),
            load(&self.rejected_per_client),
            load(&self.accept_errors),
        );
    }
}

/// What to do after an `accept()` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// The connection died before we took it (`ECONNABORTED`, `ECONNRESET`, …): next.
    Transient,
    /// Out of descriptors or memory: wait for connections to close, then go on.
    Exhausted,
    /// Anything else: log, pause briefly, go on — the listener never ends on its own.
    Other,
}

/// Classify an `accept()` error.
pub fn classify(e: &io::Error) -> AcceptError {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => AcceptError::Exhausted,
        Some(
            libc::ECONNABORTED
            | libc::ECONNRESET
            | libc::EPROTO
            | libc::EPERM
            | libc::EINTR
            | libc::EAGAIN
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH,
        ) => AcceptError::Transient,
        _ => AcceptError::Other,
    }
}

/// Connections per client address, released when a connection ends.
#[derive(Debug, Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

impl PerClient {
    fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            ip,
            owner: self.clone(),
        })
    }
}

struct ClientSlot {
    ip: IpAddr,
    owner: Arc<PerClient>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self
            .owner
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serve DNS over TCP on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<DnsHandler>,
    limits: TcpLimits,
    stats: Arc<TcpStats>,
    shutdown: CancellationToken,
) {
    let global = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client = Arc::new(PerClient::default());
    // Log each limit or error condition once when it starts, not per connection.
    let (mut at_limit, mut exhausted) = (false, false);
    let mut pause = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(got) => {
                if exhausted {
                    info!("TCP accept works again");
                    exhausted = false;
                }
                pause = Duration::from_millis(10);
                got
            }
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                match classify(&e) {
                    AcceptError::Transient => {
                        debug!("TCP accept: {e} (connection gone before it was taken)");
                        continue;
                    }
                    AcceptError::Exhausted => {
                        if !exhausted {
                            warn!(
                                "TCP accept failed: {e}; backing off until connections close (UDP keeps answering)"
                            );
                            exhausted = true;
                        }
                    }
                    AcceptError::Other => warn!("TCP accept failed: {e}; going on"),
                }
                // Back off (up to 1 s) instead of spinning on an error that persists.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = global.clone().try_acquire_owned() else {
            stats.rejected_global.fetch_add(1, Ordering::Relaxed);
            if !at_limit {
                warn!(
                    "{} TCP connections open (--tcp-max-connections): closing new ones until some end",
                    limits.max_connections
                );
                at_limit = true;
            }
            close_now(stream);
            continue;
        };
        if at_limit && global.available_permits() > limits.max_connections / 10 {
            info!("TCP connections below the limit again");
            at_limit = false;
        }
        let Some(slot) = per_client.try_take(peer.ip(), limits.max_per_client) else {
            stats.rejected_per_client.fetch_add(1, Ordering::Relaxed);
            debug!("TCP connection from {peer} closed: per-client limit reached");
            close_now(stream);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let (handler, stats, shutdown) = (handler.clone(), stats.clone(), shutdown.clone());
        tokio::spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            connection(stream, peer, &handler, limits, &shutdown).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop((permit, slot));
        });
    }
}

/// Close a connection we will not serve: FIN, not a half-open socket left to time out.
fn close_now(stream: TcpStream) {
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    });
}

/// Why a connection ended (for the debug log).
#[derive(Debug)]
enum End {
    Closed,
    Idle,
    Lifetime,
    Queries,
    Shutdown,
    Io(io::Error),
}

/// One connection: read a frame, answer it, until a limit or the client ends it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: &DnsHandler,
    limits: TcpLimits,
    shutdown: &CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let reply = TcpReply {
        writer: Arc::new(tokio::sync::Mutex::new(writer)),
        write_timeout: limits.idle_timeout,
        broken: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let deadline = tokio::time::Instant::now() + limits.max_lifetime;
    let mut served = 0usize;
    let end = loop {
        if served >= limits.max_queries {
            break End::Queries;
        }
        // The whole message within the idle timeout: a client trickling bytes is idle too.
        let read = async {
            let len = usize::from(reader.read_u16().await?);
            let mut buf = vec![0u8; len];
            reader.read_exact(&mut buf).await?;
            Ok::<_, io::Error>(buf)
        };
        let message = tokio::select! {
            () = shutdown.cancelled() => break End::Shutdown,
            () = tokio::time::sleep_until(deadline) => break End::Lifetime,
            read = tokio::time::timeout(limits.idle_timeout, read) => match read {
                Err(_) => break End::Idle,
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break End::Closed,
                Ok(Err(e)) => break End::Io(e),
                Ok(Ok(m)) => m,
            },
        };
        served += 1;
        if let Err(e) = answer(handler, message, peer, reply.clone()).await {
            break End::Io(e);
        }
        if tokio::time::Instant::now() >= deadline {
            break End::Lifetime;
        }
    };
    match &end {
        End::Io(e) => debug!("TCP connection from {peer} ends after {served} queries: {e}"),
        end => debug!("TCP connection from {peer} ends: {end:?} after {served} queries"),
    }
    let mut writer = reply.writer.lock().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
}

/// Answer one message as hickory's server would: ignore responses, FORMERR for a header with
/// an undecodable body, else the handler. An error means the connection is unusable.
async fn answer(
    handler: &DnsHandler,
    message: Vec<u8>,
    peer: SocketAddr,
    mut reply: TcpReply,
) -> io::Result<()> {
    let header = {
        let mut decoder = BinDecoder::new(&message);
        match Header::read(&mut decoder) {
            Ok(h) => h,
            // Not even a header: nothing to answer to.
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "message shorter than a header",
                ));
            }
        }
    };
    if let Some(transfers) = &handler.policy().transfers
        && crate::transfer::Transfers::wants(&message)
    {
        transfers.serve_tcp(&message, peer.ip(), &mut reply).await?;
        return reply.failed();
    }
    match Request::from_bytes(message, peer, Protocol::Tcp) {
        Ok(request) => {
            if request.metadata.message_type == MessageType::Response {
                return Ok(());
            }
            handler
                .handle_request::<_, TokioTime>(&request, reply.clone())
                .await;
        }
        Err(_) => {
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return Ok(());
            };
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            reply
                .send_response(response)
                .await
                .map_err(io::Error::other)?;
        }
    }
    reply.failed()
}

/// Writes hickory-encoded responses as TCP frames.
#[derive(Clone)]
struct TcpReply {
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    write_timeout: Duration,
    /// A write failed or timed out: the stream may hold half a frame, so the connection ends.
    broken: Arc<std::sync::atomic::AtomicBool>,
}

impl TcpReply {
    /// An error if a write on this connection failed.
    fn failed(&self) -> io::Result<()> {
        if self.broken.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "a response could not be written",
            ));
        }
        Ok(())
    }
}

impl crate::transfer::FrameSink for TcpReply {
    /// One message as a frame, with the write timeout: a secondary that stops reading ends
    /// its transfer instead of holding it (and its snapshot) forever.
    async fn send(&mut self, message: &[u8]) -> io::Result<()> {
        let len = u16::try_from(message.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message over 65,535 bytes"))?;
        let mut frame = Vec::with_capacity(message.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(message);
        let mut writer = self.writer.lock().await;
        let error = match tokio::time::timeout(self.write_timeout, writer.write_all(&frame)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(io::ErrorKind::TimedOut, "client not reading"),
        };
        self.broken.store(true, Ordering::Release);
        Err(error)
    }
}

#[async_trait::async_trait]
impl ResponseHandler for TcpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let info = {
            let mut encoder = BinEncoder::new(&mut bytes);
            encoder.set_max_size(u16::MAX);
            response.destructive_emit(&mut encoder)
        };
        let info = match info {
            Ok(info) => info,
            Err(_) => {
                // As hickory: SERVFAIL with the query's id when the answer cannot be encoded.
                bytes.clear();
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: Default::default(),
                };
                let mut encoder = BinEncoder::new(&mut bytes);
                header.emit(&mut encoder).map_err(NetError::from)?;
                ResponseInfo::from(header)
            }
        };
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        let mut frame = Vec::with_capacity(bytes.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&bytes);
        let mut writer = self.writer.lock().await;
        let written = match tokio::time::timeout(self.write_timeout, writer.write_all(&frame)).await
        {
            Ok(Ok(())) => return Ok(info),
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(io::ErrorKind::TimedOut, "client not reading"),
        };
        self.broken.store(true, Ordering::Release);
        Err(NetError::from(written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accept_error_is_survived() {
        let e = |code| io::Error::from_raw_os_error(code);
        assert_eq!(classify(&e(libc::ECONNABORTED)), AcceptError::Transient);
        assert_eq!(classify(&e(libc::EMFILE)), AcceptError::Exhausted);
        assert_eq!(classify(&e(libc::ENFILE)), AcceptError::Exhausted);
        assert_eq!(classify(&e(libc::EINVAL)), AcceptError::Other);
    }

    #[test]
    fn per_client_slots_are_released() {
        let pc = Arc::new(PerClient::default());
        let ip: IpAddr = [192, 0, 2, 1].into();
        let a = pc.try_take(ip, 2).expect("first");
        let _b = pc.try_take(ip, 2).expect("second");
        assert!(pc.try_take(ip, 2).is_none(), "third refused");
        assert!(
            pc.try_take([192, 0, 2, 2].into(), 2).is_some(),
            "other client"
        );
        drop(a);
        assert!(pc.try_take(ip, 2).is_some(), "a slot came back");
    }
}
