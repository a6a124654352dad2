//! The `/v2/events` Server-Sent-Events stream: connect to the leader (through
//! [`MarathonClient::get_following`], so a standby's 302, credentials, their re-read after a
//! 401 and TLS are handled as for every other request: the same rustls settings, roots and
//! client certificate), decode events, reconnect with jittered backoff.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use eventsource_client::{Client as _, ClientBuilder, Error as SseError, ReconnectOptions, SSE};
use futures_util::{Stream, StreamExt, TryStreamExt};
use launchdarkly_sdk_transport::{
    ByteStream, HttpTransport, Request, Response, ResponseFuture, TransportError,
};
use reqwest::Url;
use tokio::sync::mpsc;
use tokio_util::bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::MarathonClient;
use super::convert::{Decoded, Received, decode_event};
use crate::backoff::Backoff;

/// The event types marathon-dns needs. Servers older than 1.3.7 ignore the filter and send
/// everything; unknown types are then counted and dropped.
const SUBSCRIBED: &[&str] = &[
    "status_update_event",
    "health_status_changed_event",
    "instance_health_changed_event",
    "app_terminated_event",
    "api_post_event",
    "deployment_success",
    "deployment_failed",
    "event_stream_attached",
];

/// How the stream protects itself, and where it counts what it receives.
#[derive(Debug, Clone, Default)]
pub struct StreamLimits {
    /// Reconnect a stream silent for this long (Marathon sends a heartbeat every 10 s).
    pub read_timeout: Duration,
    /// Longest line or event accepted; beyond it the connection is dropped.
    pub max_event: u64,
    /// Events received, by type (for `/metrics`), if wanted.
    pub counts: Option<std::sync::Arc<EventTypes>>,
}

/// Events received by type: one counter per subscribed type, and one for anything else (a
/// server older than 1.3.7 sends every type). Fixed labels, so a misbehaving Marathon cannot
/// grow the metrics without bound.
#[derive(Debug, Default)]
pub struct EventTypes {
    counts: [std::sync::atomic::AtomicU64; SUBSCRIBED.len() + 1],
}

impl EventTypes {
    fn count(&self, event_type: &str) {
        let i = SUBSCRIBED
            .iter()
            .position(|t| *t == event_type)
            .unwrap_or(SUBSCRIBED.len());
        self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Prometheus text: `marathon_dns_events_received_total{type}`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP marathon_dns_events_received_total Marathon events received, by type (other: types not subscribed to).\n# TYPE marathon_dns_events_received_total counter"
        );
        for (i, c) in self.counts.iter().enumerate() {
            let t = SUBSCRIBED.get(i).copied().unwrap_or("other");
            let _ = writeln!(
                out,
                "marathon_dns_events_received_total{{type=\"{t}\"}} {}",
                c.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
}

/// A stream counts as healthy (its reconnect backoff starts afresh) once it has stayed up
/// this long: during elections Marathon accepts, sends `event_stream_attached` and closes.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// Reconnect delays: from 200 ms, doubling, up to 30 s, with jitter.
pub fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
}

/// What the stream tells the sync task.
#[derive(Debug)]
pub enum StreamMessage {
    /// A stream is open on this Marathon (base URL); a full resync must follow.
    Connected(Url),
    /// One decoded event.
    Event(Decoded),
    /// An event that carries nothing to apply (counted by the sync task, then dropped).
    Skipped(Skipped),
    /// The stream ended or failed; a reconnect is under way.
    Disconnected,
    /// The stream failed and backs off before it tries again.
    Reconnecting,
}

/// Why an event was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// `event_stream_attached`: Marathon confirms the subscription.
    Attached,
    /// A known type that does not affect DNS.
    Irrelevant,
    /// A type this version of marathon-dns does not know.
    Unknown,
    /// Its JSON could not be decoded.
    Malformed,
}

fn events_url(base: &Url) -> Option<Url> {
    let mut url = base.join("v2/events").ok()?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("plan-format", "light");
        for t in SUBSCRIBED {
            q.append_pair("event_type", t);
        }
    }
    Some(url)
}

/// The Marathon base URL of an events URL (`http://m:8080/v2/events?…` → `http://m:8080/`).
fn base_of(events: &Url) -> Url {
    let mut base = events.clone();
    base.set_query(None);
    let path = base.path().trim_end_matches("v2/events").to_string();
    base.set_path(&path);
    base
}

/// Run until `shutdown`: keep one event stream open and forward what it says to `tx`.
pub async fn run(
    client: MarathonClient,
    limits: StreamLimits,
    tx: mpsc::Sender<StreamMessage>,
    shutdown: CancellationToken,
) {
    let mut backoff = reconnect_backoff();
    // Rotates through the candidates on failure, so one dead Marathon is not retried forever.
    let mut failures = 0usize;
    // An outage is logged once, when it starts, and once when it ends; not per retry.
    let mut failing = false;
    let streaming = match client.for_streaming(limits.read_timeout) {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot build the event-stream client, no events will arrive: {e}");
            return;
        }
    };
    loop {
        let candidates = client.candidates().await;
        let events = match candidates.len() {
            0 => None,
            n => events_url(&candidates[failures % n]),
        };
        let why = match events {
            Some(url) => {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    why = connect_once(&streaming, url, &limits, &tx, &mut backoff, &mut failing) => why,
                }
            }
            None => "no Marathon URL".into(),
        };
        if tx.send(StreamMessage::Disconnected).await.is_err() {
            return;
        }
        report(&mut failing, why);
        failures = failures.wrapping_add(1);
        if tx.send(StreamMessage::Reconnecting).await.is_err() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

fn report(failing: &mut bool, why: String) {
    if *failing {
        debug!("event stream still down: {why}");
    } else {
        warn!("event stream down, retrying with backoff (logged once): {why}");
        *failing = true;
    }
}

/// The event-stream client's HTTP transport: every request goes through
/// [`MarathonClient::get_following`]. Remembers the URL that finally answered (after a
/// standby's redirect), which is where REST must go too.
#[derive(Clone)]
struct Transport {
    client: MarathonClient,
    answered_from: Arc<Mutex<Option<Url>>>,
    /// Longest line or event let through to the SSE parser (which buffers without bound).
    max_event: u64,
}

impl HttpTransport for Transport {
    fn request(&self, request: Request<Option<Bytes>>) -> ResponseFuture {
        let this = self.clone();
        Box::pin(SyncCell::new(async move {
            let url = Url::parse(&request.uri().to_string()).map_err(TransportError::new)?;
            let (url, resp) = this
                .client
                .get_following(url, request.headers().clone())
                .await
                .map_err(TransportError::new)?;
            *this
                .answered_from
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(url);
            let status = resp.status();
            let headers = resp.headers().clone();
            let body: ByteStream = Box::pin(SyncCell::new(bounded_events(
                resp.bytes_stream().map_err(TransportError::new),
                this.max_event,
            )));
            let mut out = Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(out)
        }))
    }
}

/// Why an event-stream body was cut.
#[derive(Debug, thiserror::Error)]
#[error("an event-stream {what} is longer than {limit} bytes (--marathon-max-event)")]
pub struct TooLong {
    what: &'static str,
    limit: u64,
}

/// Counts of an SSE byte stream: bytes in the current line and in the current event. Lines
/// end with CRLF, LF or CR; a blank line ends an event.
#[derive(Debug, Default, Clone, Copy)]
pub struct SseBounds {
    line: u64,
    event: u64,
    /// The previous byte was CR (an LF right after it belongs to the same line end).
    after_cr: bool,
}

impl SseBounds {
    /// Account `chunk`; an error if a line or an event grows beyond `limit`.
    pub fn feed(&mut self, chunk: &[u8], limit: u64) -> Result<(), TooLong> {
        for &b in chunk {
            let end = match b {
                b'\r' => true,
                b'\n' => !std::mem::take(&mut self.after_cr),
                _ => false,
            };
            self.after_cr = b == b'\r';
            if b == b'\r' || b == b'\n' {
                if end {
                    if self.line == 0 {
                        self.event = 0;
                    }
                    self.line = 0;
                }
                continue;
            }
            self.line += 1;
            self.event += 1;
            if self.line > limit {
                return Err(TooLong {
                    what: "line",
                    limit,
                });
            }
            if self.event > limit {
                return Err(TooLong {
                    what: "event",
                    limit,
                });
            }
        }
        Ok(())
    }
}

/// The body of an event stream, failing once a line or an event exceeds `limit` bytes.
fn bounded_events<S>(stream: S, limit: u64) -> impl Stream<Item = Result<Bytes, TransportError>>
where
    S: Stream<Item = Result<Bytes, TransportError>>,
{
    let mut bounds = SseBounds::default();
    stream.map(move |chunk| {
        let chunk = chunk?;
        bounds.feed(&chunk, limit).map_err(TransportError::new)?;
        Ok(chunk)
    })
}

/// A future or stream made `Sync` (the transport's contract asks for it; reqwest's are only
/// `Send`). It is only ever polled through `&mut`, so the lock is never taken.
struct SyncCell<T>(Mutex<Pin<Box<T>>>);

impl<T> SyncCell<T> {
    fn new(inner: T) -> Self {
        Self(Mutex::new(Box::pin(inner)))
    }

    fn inner(self: Pin<&mut Self>) -> Pin<&mut T> {
        let cell = self.get_mut().0.get_mut();
        cell.unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
    }
}

impl<F: Future> Future for SyncCell<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.inner().poll(cx)
    }
}

impl<S: Stream> Stream for SyncCell<S> {
    type Item = S::Item;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.inner().poll_next(cx)
    }
}

/// One connection, until it fails or ends: why.
async fn connect_once(
    client: &MarathonClient,
    url: Url,
    limits: &StreamLimits,
    tx: &mpsc::Sender<StreamMessage>,
    backoff: &mut Backoff,
    failing: &mut bool,
) -> String {
    let mut base = base_of(&url);
    let transport = Transport {
        client: client.clone(),
        answered_from: Arc::default(),
        max_event: limits.max_event,
    };
    let mut connected_at: Option<std::time::Instant> = None;
    let builder = match ClientBuilder::for_url(url.as_str()) {
        // Redirects are followed by the transport, never by the event-source client.
        Ok(b) => b
            .reconnect(ReconnectOptions::reconnect(false).build())
            .redirect_limit(0),
        Err(e) => return format!("invalid event-stream URL {base}: {e}"),
    };
    let sse = builder.build_with_transport(transport.clone());
    let mut stream = sse.stream();
    while let Some(item) = stream.next().await {
        match item {
            Ok(SSE::Connected(_)) => {
                let answered = transport
                    .answered_from
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(answered) = answered.map(|u| base_of(&u))
                    && answered != base
                {
                    info!("Marathon standby {base} redirected the event stream to {answered}");
                    base = answered;
                }
                debug!("event stream connected to {base}");
                connected_at = Some(std::time::Instant::now());
                if tx
                    .send(StreamMessage::Connected(base.clone()))
                    .await
                    .is_err()
                {
                    return "shutting down".into();
                }
            }
            Ok(SSE::Event(ev)) => {
                // Only a stream that stays up counts as healthy: during elections Marathon
                // answers 200, may even attach, and closes, which must keep backing off.
                if connected_at.is_some_and(|t| t.elapsed() >= HEALTHY_AFTER) {
                    backoff.reset();
                }
                if std::mem::take(failing) {
                    info!("event stream to {base} is back");
                }
                if let Some(counts) = &limits.counts {
                    counts.count(&ev.event_type);
                }
                let msg = match decode_event(&ev.event_type, &ev.data) {
                    Ok(Received::Model(decoded)) => StreamMessage::Event(decoded),
                    Ok(Received::Attached) => {
                        debug!("event stream to {base} attached");
                        StreamMessage::Skipped(Skipped::Attached)
                    }
                    Ok(Received::Irrelevant) => StreamMessage::Skipped(Skipped::Irrelevant),
                    Ok(Received::Unknown) => {
                        debug!(event_type = %ev.event_type, "ignoring unknown Marathon event type");
                        StreamMessage::Skipped(Skipped::Unknown)
                    }
                    Err(e) => {
                        warn!("skipping Marathon event: {e}");
                        StreamMessage::Skipped(Skipped::Malformed)
                    }
                };
                if tx.send(msg).await.is_err() {
                    return "shutting down".into();
                }
            }
            Ok(SSE::Comment(_)) => {
                if connected_at.is_some_and(|t| t.elapsed() >= HEALTHY_AFTER) {
                    backoff.reset();
                }
            }
            Err(SseError::UnexpectedResponse(resp, _)) => {
                return format!("event stream at {base} answered HTTP {}", resp.status());
            }
            Err(SseError::Transport(e)) => {
                // The client's own error (unreachable, TLS, too many redirects …).
                return format!("event stream at {base} failed: {}", e.inner());
            }
            Err(SseError::Eof) => return format!("event stream at {base} closed"),
            Err(e) => return format!("event stream at {base} failed: {e}"),
        }
    }
    format!("event stream at {base} ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_lines_and_events_are_bounded() {
        let mut b = SseBounds::default();
        assert!(b.feed(b"data: 12345\n\ndata: 1", 11).is_ok());
        assert!(b.feed(b"2345", 11).is_ok(), "a line split across chunks");
        assert!(b.feed(b"67", 11).is_err(), "then too long");
        let mut b = SseBounds::default();
        // Short lines, but one event that never ends.
        let mut fed = Ok(());
        for _ in 0..10 {
            fed = fed.and(b.feed(b"data: x\n", 30));
        }
        assert!(fed.is_err(), "an endless event");
        let mut b = SseBounds::default();
        for _ in 0..100 {
            assert!(b.feed(b"data: x\r\n\r\n", 30).is_ok(), "CRLF events end");
        }
    }

    #[test]
    fn urls() {
        let base = Url::parse("http://m1:8080/marathon/").expect("url");
        let ev = events_url(&base).expect("events url");
        assert!(
            ev.as_str()
                .starts_with("http://m1:8080/marathon/v2/events?plan-format=light&event_type=")
        );
        assert_eq!(base_of(&ev), base);
    }
}
