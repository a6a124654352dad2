//! The event-stream client against Marathon's exact bytes: the real 2015 capture (LF line
//! endings) and Jetty's CRLF framing with split-CR heartbeats, served by a raw TCP server.

use std::time::Duration;

use marathon_dns::cluster::{ClusterEvent, TaskPhase, TaskState};
use marathon_dns::marathon::convert::Decoded;
use marathon_dns::marathon::stream::{self, Skipped, StreamMessage};
use marathon_dns::server::{Settings, marathon_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Serve `body` as the `/v2/events` response (close-delimited, no chunking); everything else
/// 404, so that leader lookup falls back to the configured URL.
async fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                if req.starts_with("GET /v2/events") {
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream;charset=utf-8\r\nConnection: close\r\n\r\n";
                    let _ = s.write_all(head.as_bytes()).await;
                    // Byte by byte in small pieces, to split lines and CRLF pairs across reads.
                    for chunk in body.chunks(7) {
                        let _ = s.write_all(chunk).await;
                        let _ = s.flush().await;
                    }
                    tokio::time::sleep(Duration::from_secs(30)).await;
                } else {
                    let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                }
            });
        }
    });
    url
}

/// The first `n` events the stream reports (forwarded or skipped), in order.
async fn decoded_events(body: Vec<u8>, n: usize) -> Vec<StreamMessage> {
    let url = serve(body).await;
    let client = marathon_client(&Settings::new(vec![url])).expect("client");
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    tokio::spawn(stream::run(
        client,
        stream::StreamLimits {
            read_timeout: Duration::from_secs(10),
            max_event: 16 << 20,
            counts: None,
        },
        tx,
        shutdown.clone(),
    ));
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("in time")
        {
            Some(m @ (StreamMessage::Event(_) | StreamMessage::Skipped(_))) => out.push(m),
            Some(_) => {}
            None => break,
        }
    }
    shutdown.cancel();
    out
}

fn check(events: &[StreamMessage]) {
    assert!(
        matches!(events[0], StreamMessage::Skipped(Skipped::Attached)),
        "{:?}",
        events[0]
    );
    let states: Vec<&TaskPhase> = events[1..]
        .iter()
        .map(|d| match d {
            StreamMessage::Event(Decoded::Apply(ClusterEvent::TaskStatus { state, .. })) => state,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // TASK_FAILED, then TASK_RUNNING.
    assert_eq!(
        states,
        [&TaskPhase::Ended, &TaskPhase::Active(TaskState::Running)]
    );
}

#[tokio::test]
async fn real_capture_with_lf_endings() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sse/v2-events-stream-sample.txt"
    );
    let body = std::fs::read(path).expect("fixture");
    check(&decoded_events(body, 3).await);
}

#[tokio::test]
async fn jetty_crlf_framing_with_split_heartbeats() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sse/v2-events-stream-sample.txt"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    // Jetty: CRLF everywhere, and a heartbeat (bare CRLF) between events.
    let body = text
        .replace('\n', "\r\n")
        .replace("\r\n\r\n", "\r\n\r\n\r\n");
    check(&decoded_events(body.into_bytes(), 3).await);
}

#[tokio::test]
async fn an_endless_line_drops_the_connection_instead_of_filling_memory() {
    // A valid event, then a line that never ends (a broken proxy, a hostile endpoint).
    let mut body = b"event: status_update_event\ndata: {}\n\ndata: ".to_vec();
    body.extend(std::iter::repeat_n(b'x', 1 << 20));
    let url = serve(body).await;
    let client = marathon_client(&Settings::new(vec![url])).expect("client");
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    tokio::spawn(stream::run(
        client,
        stream::StreamLimits {
            // Far longer than the test: only the size limit can end this connection.
            read_timeout: Duration::from_secs(60),
            max_event: 64 << 10,
            counts: None,
        },
        tx,
        shutdown.clone(),
    ));
    let mut saw_connect = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("cut off within 5 s")
        {
            Some(StreamMessage::Connected(_)) => saw_connect = true,
            Some(StreamMessage::Disconnected) => break,
            Some(_) => {}
            None => panic!("the stream task ended"),
        }
    }
    assert!(saw_connect, "it was connected, then cut off");
    shutdown.cancel();
}

#[tokio::test]
async fn arbitrary_bytes_never_stop_the_stream_task() {
    // SSE-ish noise: field names, line ends of every kind, random bytes, long lines.
    let mut x: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    println!("seed {x}");
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pieces: [&[u8]; 9] = [
        b"data: ",
        b"event: status_update_event\n",
        b"\r\n",
        b"\n",
        b"\r",
        b":comment\n",
        b"data: {\"appId\": \"/x\", \"taskStatus\": \"TASK_RUNNING\"}\n\n",
        b"retry: 10\n",
        b"id: 1\n",
    ];
    for _ in 0..20 {
        let mut body = Vec::new();
        for _ in 0..200 {
            match next() % 4 {
                0 => body.extend((0..next() % 64).map(|_| next() as u8)),
                1 => body.extend(std::iter::repeat_n(b'x', (next() % 5000) as usize)),
                _ => body.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]),
            }
        }
        let url = serve(body).await;
        let client = marathon_client(&Settings::new(vec![url])).expect("client");
        let (tx, mut rx) = mpsc::channel(256);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(stream::run(
            client,
            stream::StreamLimits {
                read_timeout: Duration::from_millis(300),
                max_event: 4096,
                counts: None,
            },
            tx,
            shutdown.clone(),
        ));
        // The task consumes the noise and comes round to reconnect: it is alive.
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the stream reports in time")
            {
                Some(StreamMessage::Reconnecting) => break,
                Some(_) => {}
                None => panic!("the stream task ended"),
            }
        }
        shutdown.cancel();
        task.await.expect("the stream task did not panic");
    }
}
