//! The I/O side of `haproxy-config`: app definitions from Marathon's leader, the file written
//! atomically, the reload command, and with `--watch` the event stream. Only definition
//! changes (apps created, changed, scaled, removed) re-render; task starts, kills and moves
//! never do — HAProxy follows those through DNS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::render::{RenderOptions, render};
use crate::cluster::{ClusterEvent, ServiceApp};
use crate::marathon::client::{ClientError, MarathonClient};
use crate::marathon::convert::Decoded;
use crate::marathon::stream::{self, StreamMessage};

/// How to produce and install the configuration.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub render: RenderOptions,
    /// Where to write (atomically); `None`: stdout.
    pub output: Option<PathBuf>,
    /// Run (`sh -c`) after each rewrite, with `--watch`.
    pub reload_cmd: Option<String>,
    /// Reconnect a silent event stream after this long.
    pub stream_timeout: Duration,
    /// Longest event-stream line or event (`--marathon-max-event`).
    pub max_event: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("no Marathon URL answers /v2/apps: {0}")]
    Marathon(#[from] ClientError),
    #[error("no Marathon URL to ask")]
    NoMarathon,
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Every app definition, from the first Marathon (leader first) that answers.
pub async fn fetch(client: &MarathonClient) -> Result<Vec<ServiceApp>, GenerateError> {
    let mut last = GenerateError::NoMarathon;
    for base in client.candidates().await {
        match client.service_apps(&base).await {
            Ok((apps, skipped)) => {
                for s in skipped {
                    warn!("skipping an app Marathon sent that cannot be parsed: {s}");
                }
                return Ok(apps);
            }
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}

/// The configuration for Marathon's current definitions.
pub async fn once(client: &MarathonClient, opts: &RenderOptions) -> Result<String, GenerateError> {
    Ok(render(&fetch(client).await?, opts))
}

/// Write `text` to `path` through a temporary file and a rename: HAProxy never reads half a
/// file.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), GenerateError> {
    let error = |source| GenerateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(error)?;
    std::fs::rename(&tmp, path).map_err(error)
}

async fn reload(cmd: &str, reason: &str) {
    info!("configuration changed ({reason}): running the reload command");
    match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .await
    {
        Ok(status) if status.success() => {}
        Ok(status) => warn!("reload command failed ({status})"),
        Err(e) => warn!("cannot run the reload command: {e}"),
    }
}

/// Keep the file up to date until `shutdown`: render at start, then whenever Marathon reports
/// a definition change (debounced), rewriting and reloading only when the text changes.
pub async fn watch(
    client: MarathonClient,
    opts: GenerateOptions,
    shutdown: CancellationToken,
) -> Result<(), GenerateError> {
    let Some(path) = opts.output.clone() else {
        return Err(GenerateError::Write {
            path: PathBuf::from("-"),
            source: std::io::Error::other("--watch needs --output FILE"),
        });
    };
    let (tx, mut rx) = mpsc::channel(1024);
    tokio::spawn(stream::run(
        client.clone(),
        stream::StreamLimits {
            read_timeout: opts.stream_timeout,
            max_event: opts.max_event,
            counts: None,
        },
        tx,
        shutdown.clone(),
    ));
    let mut current = std::fs::read_to_string(&path).ok();
    let mut due: Option<Instant> = Some(Instant::now());
    let mut reason = String::from("start");
    let mut retry =
        crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut failing = false;
    loop {
        let wake = due;
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            msg = rx.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                let why = match msg {
                    // Definitions may have changed while no stream was open.
                    StreamMessage::Connected(_) => Some("event stream (re)connected".to_string()),
                    StreamMessage::Event(Decoded::Refetch(ids)) => {
                        Some(format!("definition changed: {}", ids.join(", ")))
                    }
                    StreamMessage::Event(Decoded::Apply(ClusterEvent::AppTerminated { app_id })) => {
                        Some(format!("app removed: {app_id}"))
                    }
                    // Task starts, kills, moves and health: DNS carries them.
                    _ => None,
                };
                if let Some(why) = why {
                    if due.is_none() {
                        reason = why;
                    } else if !reason.contains(&why) {
                        reason = format!("{reason}; {why}");
                    }
                    // Deployments send several events at once: one render for all of them.
                    due.get_or_insert(Instant::now() + Duration::from_millis(300));
                }
            }
            () = sleep_until(wake) => {
                due = None;
                match fetch(&client).await {
                    Ok(apps) => {
                        retry.reset();
                        if std::mem::take(&mut failing) {
                            info!("Marathon answers again");
                        }
                        let text = render(&apps, &opts.render);
                        if current.as_deref() != Some(text.as_str()) {
                            write_atomically(&path, &text)?;
                            current = Some(text);
                            match &opts.reload_cmd {
                                Some(cmd) => reload(cmd, &reason).await,
                                None => info!("configuration changed ({reason}): {} rewritten", path.display()),
                            }
                        }
                        reason.clear();
                    }
                    Err(e) => {
                        // Keep the file HAProxy runs with; try again with backoff.
                        if !std::mem::replace(&mut failing, true) {
                            warn!("cannot read Marathon's apps, keeping {} (logged once): {e}", path.display());
                        }
                        due = Some(Instant::now() + retry.next_delay());
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
