//! Process wiring: zones from disk, the DNS listeners, the Marathon stream and the sync task,
//! under one cancellation token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::rr::rdata::NS;
use hickory_proto::rr::{Name, RData, Record};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::dns::handler::AnswerOptions;
use crate::dns::listen::{self, BindError};
use crate::marathon::client::{self, Auth, ClientConfig, ClientError, MarathonClient};
use crate::marathon::stream;
use crate::sync::{SyncConfig, SyncStatus, Syncer};
use crate::zone::build::{self, SoaTemplate, ZoneConfig};
use crate::zone::builder::ZoneBuilder;
use crate::zone::snapshot::ZoneSnapshot;
use crate::zone::store::ZoneStore;
use crate::zone::zonefile::{self, ZoneFileError};

/// Everything needed to run the server, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub marathon: Vec<String>,
    pub auth: Option<Auth>,
    pub leader_lookup: bool,
    pub listen: Vec<SocketAddr>,
    pub zone: String,
    pub ttl: u32,
    pub zones_dir: PathBuf,
    pub resync_interval: Duration,
    pub stream_timeout: Duration,
    pub include_unhealthy: bool,
    pub max_udp_payload: Option<u16>,
    pub coalesce: Duration,
    /// Where the last SOA serial is kept across restarts (none: the clock only).
    pub serial_file: Option<PathBuf>,
    /// Close TCP connections idle for this long (RFC 7766 §6.2.3).
    pub tcp_idle_timeout: Duration,
    /// UDP fast-path threads per listen address; 0 lets hickory's UDP server answer.
    pub udp_workers: usize,
}

/// One UDP worker per core.
pub fn default_udp_workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

impl Settings {
    /// Defaults for the given Marathon URLs (as the CLI would give them).
    pub fn new(marathon: Vec<String>) -> Self {
        Self {
            marathon,
            auth: None,
            leader_lookup: true,
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8053))],
            zone: "marathon.local".into(),
            ttl: 5,
            zones_dir: PathBuf::from("zones"),
            resync_interval: Duration::from_secs(300),
            stream_timeout: Duration::from_secs(60),
            include_unhealthy: false,
            max_udp_payload: None,
            coalesce: Duration::from_millis(20),
            serial_file: None,
            tcp_idle_timeout: Duration::from_secs(10),
            udp_workers: default_udp_workers(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid zone name {0:?}")]
    Zone(String),
    #[error("no Marathon URL given (--marathon)")]
    NoMarathon,
    #[error(transparent)]
    ZoneFile(#[from] ZoneFileError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("serial file {0}")]
    SerialFile(String),
}

/// A running server.
pub struct Running {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub store: Arc<ZoneStore>,
    pub status: Arc<SyncStatus>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    dns: listen::DnsServer,
}

impl Running {
    /// Stop everything and wait for it.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        self.dns.shutdown().await;
        while self.tasks.join_next().await.is_some() {}
    }

    /// Wait until the first full sync from Marathon has been published.
    pub async fn wait_synced(&self) {
        self.wait_for(SyncStatus::is_synced).await;
    }

    /// Wait until the event stream is up and the resync that follows it is published.
    pub async fn wait_live(&self) {
        self.wait_for(SyncStatus::is_live).await;
    }

    async fn wait_for(&self, done: impl Fn(&SyncStatus) -> bool) {
        loop {
            let changed = self.status.wait_change();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.status) {
                return;
            }
            changed.await;
        }
    }
}

fn origin(zone: &str) -> Result<Name, StartError> {
    let mut n = Name::from_str(zone).map_err(|_| StartError::Zone(zone.to_string()))?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

/// The zones to serve at startup: the Marathon zone (SOA + its static records) and every other
/// static zone. Returns the sync settings for the Marathon zone too.
pub fn initial_zones(settings: &Settings) -> Result<(ZoneStore, SyncConfig), StartError> {
    let origin = origin(&settings.zone)?;
    let mut statics = zonefile::load_dir(&settings.zones_dir)?;
    let own = statics
        .iter()
        .position(|z| z.origin == origin)
        .map(|i| statics.remove(i));
    let (soa, records) = match own {
        Some(z) => (z.soa_template(), z.records),
        None => {
            // No zone file: still a proper zone, with an NS at the apex (RFC 1034 §4.2.1).
            let soa = SoaTemplate::default_for(&origin);
            let ns = Record::from_rdata(origin.clone(), soa.ttl, RData::NS(NS(soa.mname.clone())));
            (soa, vec![ns])
        }
    };
    let cfg = SyncConfig {
        zone: ZoneConfig {
            origin: origin.clone(),
            ttl: settings.ttl,
            include_unhealthy: settings.include_unhealthy,
        },
        soa,
        statics: records,
        resync_interval: settings.resync_interval,
        coalesce: settings.coalesce,
        serial_file: settings.serial_file.clone(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last_serial = match &settings.serial_file {
        Some(path) => crate::serial_file::read(path)
            .map_err(StartError::SerialFile)?
            .unwrap_or(0),
        None => 0,
    };
    let serial = build::next_serial(last_serial, now);
    let marathon =
        ZoneBuilder::new(cfg.zone.clone(), cfg.soa.clone(), &cfg.statics, serial).snapshot(serial);
    let others = statics
        .into_iter()
        .map(|z| ZoneSnapshot::new(z.soa, z.records))
        .collect();
    Ok((ZoneStore::new(marathon, others), cfg))
}

/// Build the Marathon client from the settings.
pub fn marathon_client(settings: &Settings) -> Result<MarathonClient, StartError> {
    if settings.marathon.is_empty() {
        return Err(StartError::NoMarathon);
    }
    let mut urls = Vec::new();
    let mut auth = settings.auth.clone();
    for raw in &settings.marathon {
        let (url, url_auth) = client::parse_url(raw)?;
        urls.push(url);
        auth = auth.or(url_auth);
    }
    Ok(MarathonClient::new(ClientConfig {
        urls,
        auth,
        leader_lookup: settings.leader_lookup,
        request_timeout: Duration::from_secs(10),
    })?)
}

/// Start serving: DNS answers at once (SOA/NS and static records), Marathon records follow
/// as soon as the first sync completes.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    let (store, sync_cfg) = initial_zones(&settings)?;
    let store = Arc::new(store);
    let client = marathon_client(&settings)?;
    let dns = listen::serve(
        &settings.listen,
        store.clone(),
        AnswerOptions {
            max_udp_payload: settings.max_udp_payload,
        },
        settings.tcp_idle_timeout,
        settings.udp_workers,
    )
    .await?;
    for addr in &dns.udp {
        info!("serving DNS for {} on {addr} (UDP and TCP)", settings.zone);
    }
    let status = Arc::new(SyncStatus::default());
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::channel(1024);
    let mut tasks = JoinSet::new();
    tasks.spawn(stream::run(
        client.clone(),
        settings.stream_timeout,
        tx,
        shutdown.clone(),
    ));
    tasks.spawn(
        Syncer::new(sync_cfg, client, store.clone(), status.clone()).run(rx, shutdown.clone()),
    );
    Ok(Running {
        udp: dns.udp.clone(),
        tcp: dns.tcp.clone(),
        store,
        status,
        shutdown,
        tasks,
        dns,
    })
}
