//! The simulator's HTTP/1.1 server, written by hand so that the event stream has Jetty's exact
//! framing: `Connection: close`, no chunked encoding, CRLF lines, a bare CRLF heartbeat.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{Broadcast, Node, lock};

pub(crate) async fn serve(listener: TcpListener, node: Arc<Node>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let node = node.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = handle(stream, node) => {}
            }
        });
    }
}

struct Req {
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| char::from(b).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_request(stream: &mut TcpStream) -> Option<Req> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let _method = first.next()?;
    let target = first.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Req {
        path: percent_decode(path),
        query,
        headers,
    })
}

async fn respond(
    stream: &mut TcpStream,
    node: &Node,
    status: u16,
    reason: &str,
    body: &Value,
    extra: &[(&str, String)],
) {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    let leader = node
        .leader
        .clone()
        .unwrap_or_else(|| format!("http://{}", node.addr));
    head.push_str(&format!("X-Marathon-Leader: {leader}\r\n"));
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn handle(mut stream: TcpStream, node: Arc<Node>) {
    let Some(req) = read_request(&mut stream).await else {
        return;
    };
    *lock(&node.requests).entry(req.path.clone()).or_default() += 1;
    *lock(&node.last_auth) = req.header("Authorization").map(str::to_string);
    let behaviour = lock(&node.behaviour).clone();
    if let Some(expected) = &behaviour.auth
        && req.header("Authorization") != Some(expected.as_str())
    {
        let body = json!({"message": "Unauthorized"});
        respond(
            &mut stream,
            &node,
            401,
            "Unauthorized",
            &body,
            &[("WWW-Authenticate", "Basic realm=\"Mesosphere\"".into())],
        )
        .await;
        return;
    }
    if req.path == "/v2/events" {
        return events(stream, &node, &req).await;
    }
    if let Some(code) = behaviour.rest_failure {
        let body = json!({"message": "simulated failure"});
        respond(&mut stream, &node, code, "Simulated Failure", &body, &[]).await;
        return;
    }
    if let (Some(raw), "/v2/apps") = (&behaviour.apps_body, req.path.as_str()) {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            raw.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(raw.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let via: Vec<(&str, String)> = match &node.leader {
        Some(_) => vec![("X-Marathon-Via", format!("1.1 {}", node.addr))],
        None => vec![],
    };
    let leader_host = node
        .leader
        .clone()
        .unwrap_or_else(|| format!("http://{}", node.addr))
        .trim_start_matches("http://")
        .to_string();
    let embed_tasks = req
        .query
        .iter()
        .any(|(k, v)| k == "embed" && v.ends_with("tasks"));
    let (status, body) = {
        let cluster = lock(&node.shared.cluster);
        // Tasks by app, once per request (not once per app: 100,000 tasks × 33,000 apps).
        let mut by_app: std::collections::HashMap<&str, Vec<&super::SimTask>> =
            std::collections::HashMap::new();
        if embed_tasks {
            for t in cluster.tasks.values() {
                by_app.entry(t.app_id.as_str()).or_default().push(t);
            }
        }
        let app_json = |app: &super::SimApp| {
            if embed_tasks {
                let tasks = by_app.get(app.id.as_str()).map_or(&[][..], Vec::as_slice);
                app.with_tasks_json(tasks)
            } else {
                app.definition_json()
            }
        };
        match req.path.as_str() {
            "/v2/leader" if behaviour.leader_unknown => (
                503,
                json!({"message": "Could not determine the current leader"}),
            ),
            "/v2/leader" => (200, json!({"leader": leader_host})),
            "/ping" => (200, json!("pong")),
            "/v2/info" => (
                200,
                json!({"name": "marathon", "version": "1.10.26", "buildref": "simulated", "elected": node.leader.is_none(),
                       "leader": leader_host, "frameworkId": "sim-0000",
                       "marathon_config": {"hostname": "127.0.0.1", "ha": true},
                       "zookeeper_config": {"zk": "zk://localhost:2181/marathon"},
                       "http_config": {"http_port": node.addr.port(), "https_port": 8443}}),
            ),
            "/v2/apps" => (
                200,
                json!({"apps": cluster.apps.values().map(app_json).collect::<Vec<_>>()}),
            ),
            "/v2/tasks" => (
                200,
                json!({"tasks": cluster.tasks.values().filter_map(|t| cluster.apps.get(&t.app_id).map(|a| t.to_json(a))).collect::<Vec<_>>()}),
            ),
            p if p.starts_with("/v2/apps/") => {
                let id = p.trim_start_matches("/v2/apps").trim_end_matches('/');
                let (id, tasks_only) = match id.strip_suffix("/tasks") {
                    Some(id) => (id, true),
                    None => (id, false),
                };
                match cluster.apps.get(id) {
                    Some(app) if tasks_only => (
                        200,
                        json!({"tasks": cluster.tasks.values().filter(|t| t.app_id == app.id).map(|t| t.to_json(app)).collect::<Vec<_>>()}),
                    ),
                    Some(app) => (200, json!({"app": app_json(app)})),
                    None => (
                        404,
                        json!({"message": format!("App '{id}' does not exist")}),
                    ),
                }
            }
            p if p.starts_with("/v2/pods") => match behaviour.pods_failure {
                Some(code) => (code, json!({"message": "simulated pods failure"})),
                None => super::pods::route(&cluster, p)
                    .unwrap_or_else(|| (404, json!({"message": "not found"}))),
            },
            _ => (404, json!({"message": "not found"})),
        }
    };
    let reason = if status == 200 { "OK" } else { "Error" };
    // A slow Marathon: the state above is already taken, the answer comes later.
    if let Some(delay) = behaviour.rest_delay {
        tokio::time::sleep(delay).await;
    }
    respond(&mut stream, &node, status, reason, &body, &via).await;
}

/// `/v2/events`: Jetty's EventSourceServlet as Marathon uses it.
async fn events(mut stream: TcpStream, node: &Node, req: &Req) {
    if req.header("Accept") != Some("text/event-stream") {
        let body = json!({"message": "HTTP method GET is not supported by this URL"});
        respond(&mut stream, node, 405, "Method Not Allowed", &body, &[]).await;
        return;
    }
    if let Some(leader) = &node.leader {
        // Marathon ≥ 1.7 standby: redirect to the leader, keeping the query.
        let query: Vec<String> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let location = format!("{leader}/v2/events?{}", query.join("&"));
        let body = json!({});
        respond(
            &mut stream,
            node,
            302,
            "Found",
            &body,
            &[("Location", location)],
        )
        .await;
        return;
    }
    let filter: Vec<&str> = req
        .query
        .iter()
        .filter(|(k, _)| k == "event_type")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut rx = node.shared.events.subscribe();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream;charset=utf-8\r\nConnection: close\r\n\
         Cache-Control: no-cache, no-store, must-revalidate\r\nPragma: no-cache\r\nExpires: 0\r\n\
         X-Marathon-Leader: http://{}\r\nX-Frame-Options: DENY\r\nX-XSS-Protection: 1; mode=block\r\n\r\n",
        node.addr
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    // Every subscriber sees every attach, its own first.
    let attached = json!({"remoteAddress": "127.0.0.1", "eventType": "event_stream_attached", "timestamp": super::model::now_iso()});
    let _ = node.shared.events.send(Broadcast::Event {
        event_type: "event_stream_attached".into(),
        data: attached.to_string(),
    });
    let mut heartbeat = tokio::time::interval(node.heartbeat);
    heartbeat.tick().await;
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = heartbeat.tick() => {
                // Jetty writes CR and LF in two flushes.
                if stream.write_all(b"\r").await.is_err() || stream.flush().await.is_err()
                    || stream.write_all(b"\n").await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                continue;
            }
        };
        match msg {
            Ok(Broadcast::Event { event_type, data }) => {
                if !filter.is_empty() && !filter.contains(&event_type.as_str()) {
                    continue;
                }
                let frame = format!("event: {event_type}\r\ndata: {data}\r\n\r\n");
                if stream.write_all(frame.as_bytes()).await.is_err() {
                    return;
                }
            }
            // Marathon 1.8+ drops slow consumers.
            Ok(Broadcast::Close) | Err(RecvError::Closed) | Err(RecvError::Lagged(_)) => {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}
