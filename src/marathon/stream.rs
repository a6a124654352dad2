//! The `/v2/events` Server-Sent-Events stream: connect to the leader, follow a standby's 302,
//! decode events, reconnect with capped exponential backoff.

use std::time::Duration;

use eventsource_client::{Client as _, ClientBuilder, Error as SseError, ReconnectOptions, SSE};
use futures_util::StreamExt;
use launchdarkly_sdk_transport::HyperTransport;
use reqwest::Url;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::MarathonClient;
use super::convert::{Decoded, Received, decode_event};

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

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

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

/// How one connection ended.
enum Ended {
    /// A standby answered 302: connect here next, at once.
    Redirect(Url),
    /// Error or EOF (why): back off, then look the leader up again.
    Failed(String),
}

/// Run until `shutdown`: keep one event stream open and forward what it says to `tx`.
pub async fn run(
    client: MarathonClient,
    read_timeout: Duration,
    tx: mpsc::Sender<StreamMessage>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut next: Option<Url> = None;
    let mut redirects = 0;
    // Rotates through the candidates on failure, so one dead Marathon is not retried forever.
    let mut failures = 0usize;
    // An outage is logged once, when it starts, and once when it ends; not per retry.
    let mut failing = false;
    loop {
        let events = match next.take() {
            Some(u) => Some(u),
            None => {
                let candidates = client.candidates().await;
                match candidates.len() {
                    0 => None,
                    n => events_url(&candidates[failures % n]),
                }
            }
        };
        let ended = match events {
            Some(url) => {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    ended = connect_once(&client, url, read_timeout, &tx, &mut backoff, &mut failing) => ended,
                }
            }
            None => Ended::Failed("no Marathon URL".into()),
        };
        if tx.send(StreamMessage::Disconnected).await.is_err() {
            return;
        }
        match ended {
            Ended::Redirect(url) if redirects < 3 => {
                redirects += 1;
                info!(
                    "Marathon standby redirected the event stream to {}",
                    base_of(&url)
                );
                next = Some(url);
                continue;
            }
            Ended::Redirect(url) => {
                redirects = 0;
                report(
                    &mut failing,
                    format!("too many redirects, last to {}", base_of(&url)),
                );
            }
            Ended::Failed(why) => {
                redirects = 0;
                report(&mut failing, why);
            }
        }
        failures = failures.wrapping_add(1);
        if tx.send(StreamMessage::Reconnecting).await.is_err() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
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

async fn connect_once(
    client: &MarathonClient,
    url: Url,
    read_timeout: Duration,
    tx: &mpsc::Sender<StreamMessage>,
    backoff: &mut Duration,
    failing: &mut bool,
) -> Ended {
    let base = base_of(&url);
    if url.scheme() != "http" {
        return Ended::Failed(format!(
            "cannot follow Marathon to {base}: https is not supported (no TLS built in)"
        ));
    }
    let transport = match HyperTransport::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(read_timeout)
        .build_http()
    {
        Ok(t) => t,
        Err(e) => {
            return Ended::Failed(format!("cannot build the event-stream transport: {e}"));
        }
    };
    let mut builder = match ClientBuilder::for_url(url.as_str()) {
        Ok(b) => b.reconnect(ReconnectOptions::reconnect(false).build()),
        Err(e) => {
            return Ended::Failed(format!("invalid event-stream URL {base}: {e}"));
        }
    };
    if let Some(auth) = client.auth() {
        builder = match builder.header("Authorization", &auth.header_value()) {
            Ok(b) => b,
            Err(_) => {
                return Ended::Failed(
                    "the Marathon credentials do not form a valid HTTP header".into(),
                );
            }
        };
    }
    let sse = builder.build_with_transport(transport);
    let mut stream = sse.stream();
    while let Some(item) = stream.next().await {
        match item {
            Ok(SSE::Connected(_)) => {
                debug!("event stream connected to {base}");
                if tx
                    .send(StreamMessage::Connected(base.clone()))
                    .await
                    .is_err()
                {
                    return Ended::Failed("shutting down".into());
                }
            }
            Ok(SSE::Event(ev)) => {
                // Only a stream that delivers counts as healthy: during elections Marathon
                // answers 200 and closes at once, which must keep backing off.
                *backoff = BACKOFF_MIN;
                if std::mem::take(failing) {
                    info!("event stream to {base} is back");
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
                    return Ended::Failed("shutting down".into());
                }
            }
            Ok(SSE::Comment(_)) => {}
            Err(SseError::UnexpectedResponse(resp, _)) if (300..400).contains(&resp.status()) => {
                let location = resp
                    .get_header_value("location")
                    .ok()
                    .flatten()
                    .and_then(|l| url.join(l).ok());
                return match location {
                    Some(l) => Ended::Redirect(l),
                    None => Ended::Failed(format!(
                        "{base} answered {} without a Location header",
                        resp.status()
                    )),
                };
            }
            Err(SseError::UnexpectedResponse(resp, _)) => {
                return Ended::Failed(format!(
                    "event stream at {base} answered HTTP {}",
                    resp.status()
                ));
            }
            Err(SseError::Eof) => {
                return Ended::Failed(format!("event stream at {base} closed"));
            }
            Err(e) => {
                return Ended::Failed(format!("event stream at {base} failed: {e}"));
            }
        }
    }
    Ended::Failed(format!("event stream at {base} ended"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
