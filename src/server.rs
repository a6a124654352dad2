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
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::config::ServeArgs;
use crate::dns::handler::AnswerOptions;
use crate::dns::listen::{self, BindError, ListenOptions};
use crate::dns::policy::{NetList, RrlConfig};
use crate::dns::tcp::TcpLimits;
use crate::marathon::client::{
    self, Auth, AuthFile, ClientConfig, ClientError, MarathonClient, TlsConfig,
};
use crate::marathon::stream;
use crate::resolve::HostCache;
use crate::sync::{Control, SyncConfig, SyncStatus, Syncer};
use crate::zone::build::{self, SoaTemplate, ZoneConfig};
use crate::zone::builder::ZoneBuilder;
use crate::zone::export;
use crate::zone::snapshot::ZoneSnapshot;
use crate::zone::store::ZoneStore;
use crate::zone::zonefile::{self, ZoneFileError};

/// Everything needed to run the server, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub marathon: Vec<String>,
    pub auth: Option<Auth>,
    /// The file `auth` was read from, read again after a 401.
    pub auth_file: Option<AuthFile>,
    /// TLS to an https Marathon: extra CA, client identity.
    pub tls: TlsConfig,
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
    /// TCP connection limits: idle timeout (RFC 7766 §6.2.3), caps, lifetime.
    pub tcp: TcpLimits,
    /// Resyncs after stream reconnects start at least this far apart (not a flag: 5 s).
    pub reconnect_resync_min: Duration,
    /// Marathon input limits and redirect policy.
    pub marathon_max_body: u64,
    pub marathon_max_event: u64,
    pub marathon_read_timeout: Duration,
    pub marathon_redirect_credentials: bool,
    /// `--allow-query`: REFUSED outside (empty: anyone).
    pub allow_query: NetList,
    /// Response rate limiting.
    pub rrl: RrlConfig,
    /// UDP fast-path threads per listen address; 0 lets hickory's UDP server answer.
    pub udp_workers: usize,
    /// The HTTP admin listener, if any.
    pub admin_listen: Option<SocketAddr>,
    /// Answering on with /ready at 503 after a stop signal, before stopping.
    pub lame_duck: Duration,
    /// Zone transfers, NOTIFY and TSIG (docs/scale-out.md).
    pub transfer: TransferSettings,
}

/// `--allow-transfer`, `--ixfr-history`, `--notify`, `--tsig-key(-file)`.
#[derive(Debug, Clone, Default)]
pub struct TransferSettings {
    pub allow: NetList,
    pub history: usize,
    pub notify: Vec<SocketAddr>,
    pub keys: Vec<crate::transfer::tsig::Key>,
}

impl PartialEq for TransferSettings {
    /// Keys compare by name and algorithm (secrets are not kept comparable).
    fn eq(&self, other: &Self) -> bool {
        let keys = |s: &Self| -> Vec<(String, String)> {
            s.keys
                .iter()
                .map(|k| (k.name().to_string(), k.algorithm().to_string()))
                .collect()
        };
        (&self.allow, self.history, &self.notify) == (&other.allow, other.history, &other.notify)
            && keys(self) == keys(other)
    }
}

/// One UDP worker per core.
pub fn default_udp_workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Why the command line does not make settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {}", path.display())]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("give either Marathon credentials or a token, not both")]
    CredentialsAndToken,
    #[error("Marathon credentials must be user:password")]
    BadCredentials,
    #[error("--tsig-key")]
    TsigKey(#[source] crate::transfer::tsig::KeyError),
    #[error("{}", path.display())]
    TsigKeyFile {
        path: PathBuf,
        #[source]
        source: crate::transfer::tsig::KeyError,
    },
}

impl Settings {
    /// Defaults (the CLI's, without the environment) for the given Marathon URLs.
    pub fn new(marathon: Vec<String>) -> Self {
        Self::with_auth(
            &ServeArgs {
                marathon,
                ..ServeArgs::defaults()
            },
            None,
        )
    }

    /// Settings from the command line; reads the credential files it names.
    pub fn from_args(args: &ServeArgs) -> Result<Self, SettingsError> {
        let secret = |inline: &Option<String>, file: &Option<PathBuf>| match (inline, file) {
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| Some(text.trim().to_string()))
                .map_err(|source| SettingsError::SecretFile {
                    path: path.clone(),
                    source,
                }),
            (None, None) => Ok(None),
        };
        let credentials = secret(&args.marathon_credentials, &args.marathon_credentials_file)?;
        let token = secret(&args.marathon_token, &args.marathon_token_file)?;
        let auth = match (credentials, token) {
            (Some(_), Some(_)) => return Err(SettingsError::CredentialsAndToken),
            (Some(c), None) => Some(Auth::basic(&c).ok_or(SettingsError::BadCredentials)?),
            (None, Some(t)) => Some(Auth::Token(t)),
            (None, None) => None,
        };
        let mut settings = Self::with_auth(args, auth);
        for spec in &args.tsig_key {
            let key = crate::transfer::tsig::Key::parse(spec).map_err(SettingsError::TsigKey)?;
            settings.transfer.keys.push(key);
        }
        if let Some(path) = &args.tsig_key_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| SettingsError::SecretFile {
                    path: path.clone(),
                    source,
                })?;
            let keys = crate::transfer::tsig::parse_key_file(&text).map_err(|source| {
                SettingsError::TsigKeyFile {
                    path: path.clone(),
                    source,
                }
            })?;
            settings.transfer.keys.extend(keys);
        }
        // Only a secret that came from a file can change; an inline one wins over its file.
        settings.auth_file = match (args, &settings.auth) {
            (
                ServeArgs {
                    marathon_token: None,
                    marathon_token_file: Some(path),
                    ..
                },
                Some(Auth::Token(_)),
            ) => Some(AuthFile::Token(path.clone())),
            (
                ServeArgs {
                    marathon_credentials: None,
                    marathon_credentials_file: Some(path),
                    ..
                },
                Some(Auth::Basic { .. }),
            ) => Some(AuthFile::Credentials(path.clone())),
            _ => None,
        };
        Ok(settings)
    }

    fn with_auth(args: &ServeArgs, auth: Option<Auth>) -> Self {
        Self {
            marathon: args.marathon.clone(),
            auth,
            auth_file: None,
            tls: TlsConfig {
                ca_file: args.marathon_ca_file.clone(),
                client_cert: args.marathon_client_cert.clone(),
                client_key: args.marathon_client_key.clone(),
            },
            leader_lookup: !args.no_leader_lookup,
            listen: args.listen.clone(),
            zone: args.zone.clone(),
            ttl: args.ttl,
            zones_dir: args.zones_dir.clone(),
            resync_interval: args.resync_interval,
            stream_timeout: args.stream_timeout,
            include_unhealthy: args.include_unhealthy,
            max_udp_payload: args.max_udp_payload,
            coalesce: args.coalesce,
            serial_file: args.serial_file.clone(),
            tcp: TcpLimits {
                max_connections: args.tcp_max_connections,
                max_per_client: args.tcp_max_connections_per_client,
                idle_timeout: args.tcp_idle_timeout,
                max_lifetime: args.tcp_max_lifetime,
                max_queries: args.tcp_max_queries,
            },
            reconnect_resync_min: crate::sync::RECONNECT_RESYNC_MIN,
            marathon_max_body: args.marathon_max_body,
            marathon_max_event: args.marathon_max_event,
            marathon_read_timeout: args.marathon_read_timeout,
            marathon_redirect_credentials: args.marathon_redirect_credentials,
            allow_query: NetList(args.allow_query.clone()),
            rrl: RrlConfig {
                rate: args.rrl_rate,
                slip: args.rrl_slip,
                exempt: NetList(args.rrl_exempt.clone()),
            },
            udp_workers: args.udp_workers.unwrap_or_else(default_udp_workers),
            admin_listen: args.admin_listen.0,
            lame_duck: args.lame_duck,
            transfer: TransferSettings {
                allow: NetList(args.allow_transfer.clone()),
                history: args.ixfr_history,
                notify: args.notify.clone(),
                keys: Vec::new(),
            },
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
    Admin(#[from] crate::admin::AdminBindError),
    #[error(transparent)]
    ZoneFile(#[from] ZoneFileError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// A running server.
pub struct Running {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    /// Where the admin listener is bound, if it runs.
    pub admin: Option<SocketAddr>,
    /// Set once a stop signal came: `/ready` turns 503.
    draining: Arc<std::sync::atomic::AtomicBool>,
    pub store: Arc<ZoneStore>,
    pub status: Arc<SyncStatus>,
    /// The settings in effect (a reload changes the reloadable ones).
    settings: Settings,
    client: MarathonClient,
    control: mpsc::Sender<Control>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    dns: listen::DnsServer,
}

impl Running {
    /// Stopping: `/ready` answers 503 from now on; DNS keeps answering.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Resolves if an internal task (event stream, sync) ends on its own — a panic or a bug:
    /// the process must not go on serving a zone nobody updates.
    pub async fn task_failure(&mut self) -> String {
        match self.tasks.join_next().await {
            Some(Err(e)) if e.is_panic() => format!("an internal task panicked: {e}"),
            Some(Err(e)) => format!("an internal task was cancelled: {e}"),
            Some(Ok(())) => "an internal task ended".to_string(),
            None => std::future::pending().await,
        }
    }

    /// Apply `new` (a SIGHUP): the zone files (static zones and the Marathon zone's own
    /// records and SOA), the credentials (files are read again), and the reloadable keys —
    /// `ttl`, `include-unhealthy`, `resync-interval`, `coalesce`, `zones-dir`. Everything is
    /// read and checked first: on any error nothing changes. Other keys that differ need a
    /// restart; they are returned by name.
    pub async fn reload(&mut self, new: &Settings) -> Result<Reloaded, StartError> {
        let result = self.try_reload(new).await;
        self.status.count_reload(result.is_ok());
        result
    }

    async fn try_reload(&mut self, new: &Settings) -> Result<Reloaded, StartError> {
        let mut next = self.settings.clone();
        next.ttl = new.ttl;
        next.include_unhealthy = new.include_unhealthy;
        next.resync_interval = new.resync_interval;
        next.coalesce = new.coalesce;
        next.zones_dir = new.zones_dir.clone();
        next.auth = new.auth.clone();
        next.auth_file = new.auth_file.clone();
        let (cfg, statics) = load_zones(&next)?;
        // Built only to take its credentials: the same checks as at startup.
        let fresh = marathon_client(&next)?;
        let restart_needed = restart_needed(&self.settings, new);
        let credentials_changed = self.client.take_auth_from(&fresh);
        let static_zones = statics.len();
        self.store.replace_statics(statics);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .control
            .send(Control::Reconfigure(Box::new(cfg), tx))
            .await;
        let serial = match (sent, rx.await) {
            (Ok(()), Ok(serial)) => serial,
            _ => self.status.serial(),
        };
        self.settings = next;
        Ok(Reloaded {
            serial,
            static_zones,
            credentials_changed,
            restart_needed,
        })
    }

    /// Stop everything and wait for it.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        self.dns.shutdown().await;
        while self.tasks.join_next().await.is_some() {}
    }

    /// Wait until the first full sync from Marathon has been published.
    pub async fn wait_synced(&self) {
        self.status.wait_synced().await;
    }

    /// Wait until the event stream is up and the resync that follows it is published.
    pub async fn wait_live(&self) {
        self.status.wait_for(SyncStatus::is_live).await;
    }
}

fn origin(zone: &str) -> Result<Name, StartError> {
    let mut n = Name::from_str(zone).map_err(|_| StartError::Zone(zone.to_string()))?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    /// The Marathon zone's serial after the reload.
    pub serial: u32,
    /// Static zones served beside the Marathon zone.
    pub static_zones: usize,
    pub credentials_changed: bool,
    /// Keys that changed but take effect only at a restart.
    pub restart_needed: Vec<&'static str>,
}

/// The keys that differ between `old` and `new` and that a reload cannot apply.
fn restart_needed(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key: &'static str, differs: bool| {
        if differs {
            keys.push(key);
        }
    };
    check("marathon", old.marathon != new.marathon);
    check("listen", old.listen != new.listen);
    check("zone", old.zone != new.zone);
    check("no-leader-lookup", old.leader_lookup != new.leader_lookup);
    check("marathon-ca-file", old.tls.ca_file != new.tls.ca_file);
    check(
        "marathon-client-cert",
        old.tls.client_cert != new.tls.client_cert,
    );
    check(
        "marathon-client-key",
        old.tls.client_key != new.tls.client_key,
    );
    check("stream-timeout", old.stream_timeout != new.stream_timeout);
    check(
        "max-udp-payload",
        old.max_udp_payload != new.max_udp_payload,
    );
    check("serial-file", old.serial_file != new.serial_file);
    check("tcp-*", old.tcp != new.tcp);
    check("allow-query", old.allow_query != new.allow_query);
    check(
        "marathon-max-body/-max-event/-read-timeout/-redirect-credentials",
        (
            old.marathon_max_body,
            old.marathon_max_event,
            old.marathon_read_timeout,
            old.marathon_redirect_credentials,
        ) != (
            new.marathon_max_body,
            new.marathon_max_event,
            new.marathon_read_timeout,
            new.marathon_redirect_credentials,
        ),
    );
    check("rrl-*", old.rrl != new.rrl);
    check("udp-workers", old.udp_workers != new.udp_workers);
    check("admin-listen", old.admin_listen != new.admin_listen);
    check("lame-duck", old.lame_duck != new.lame_duck);
    check(
        "allow-transfer/ixfr-history/notify/tsig-key*",
        old.transfer != new.transfer,
    );
    keys
}

/// Read `zones/`: the Marathon zone's settings (its zone file's SOA and records, or a
/// default SOA and NS) and the other static zones.
pub fn load_zones(settings: &Settings) -> Result<(SyncConfig, Vec<ZoneSnapshot>), StartError> {
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
        serial_reserved: None,
        reconnect_resync_min: settings.reconnect_resync_min,
    };
    let others = statics
        .into_iter()
        .map(|z| ZoneSnapshot::new(z.soa, z.records))
        .collect();
    Ok((cfg, others))
}

/// The zones to serve at startup: the Marathon zone (SOA + its static records) and every other
/// static zone. Returns the sync settings for the Marathon zone too.
pub fn initial_zones(settings: &Settings) -> Result<(ZoneStore, SyncConfig), StartError> {
    let (cfg, others) = load_zones(settings)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last_serial = match &settings.serial_file {
        Some(path) => match crate::serial_file::read(path) {
            Ok(reserved) => reserved.unwrap_or(0),
            // Never a refusal to start: the clock still moves serials forward.
            Err(e) => {
                warn!("{e}; serials continue from the clock");
                0
            }
        },
        None => 0,
    };
    let serial = build::next_serial(last_serial, now);
    let marathon =
        ZoneBuilder::new(cfg.zone.clone(), cfg.soa.clone(), &cfg.statics, serial).snapshot(serial);
    Ok((ZoneStore::new(marathon, others), cfg))
}

/// Build the Marathon client from the settings.
pub fn marathon_client(settings: &Settings) -> Result<MarathonClient, StartError> {
    if settings.marathon.is_empty() {
        return Err(StartError::NoMarathon);
    }
    let mut urls = Vec::new();
    let mut auth = settings.auth.clone();
    // A file is read again only for the credentials it gave (not for a URL's user info).
    let auth_file = auth.is_some().then(|| settings.auth_file.clone()).flatten();
    for raw in &settings.marathon {
        let (url, url_auth) = client::parse_url(raw)?;
        urls.push(url);
        auth = auth.or(url_auth);
    }
    Ok(MarathonClient::new(ClientConfig {
        urls,
        auth,
        auth_file,
        leader_lookup: settings.leader_lookup,
        read_timeout: settings.marathon_read_timeout,
        max_body: settings.marathon_max_body,
        redirect_credentials: settings.marathon_redirect_credentials,
        tls: settings.tls.clone(),
    })?)
}

/// `marathon-dns export`: one sync, then the Marathon zone as an RFC 1035 master file. One
/// `GET /v2/apps` from the leader (looked up as the server does), agent names resolved as the
/// server does, the zone built as the sync task builds it; no listener, no event stream.
pub async fn export_once(settings: &Settings) -> Result<String, StartError> {
    let (store, cfg) = initial_zones(settings)?;
    let client = marathon_client(settings)?;
    let mut fetched = Err(StartError::NoMarathon);
    let mut pods = Vec::new();
    for base in client.candidates().await {
        fetched = client.apps(&base).await.map_err(StartError::from);
        if fetched.is_ok() {
            pods = export_pods(&client, &base).await;
            break;
        }
    }
    let (apps, skipped) = fetched?;
    for s in &skipped {
        warn!("skipping an app Marathon sent that cannot be parsed: {s}");
    }
    let cluster = Cluster {
        apps: apps
            .into_iter()
            .chain(pods)
            .map(|a| (a.id.clone(), a))
            .collect(),
    };
    let mut hosts = HostCache::default();
    hosts
        .resolve(&build::hosts_to_resolve(
            cluster.apps.values(),
            cfg.zone.include_unhealthy,
        ))
        .await;
    let serial = store.marathon().serial();
    let mut builder = ZoneBuilder::new(cfg.zone, cfg.soa, &cfg.statics, serial);
    let lookup = |h: &str| hosts.addresses(h);
    let updated = builder.update(&cluster, cluster.apps.keys(), &lookup);
    for w in &updated.new_warnings {
        warn!("{w}");
    }
    Ok(export::master_file(&builder.snapshot(serial)))
}

/// The pods for `export` (as apps of the model); without them if they cannot be read.
async fn export_pods(client: &MarathonClient, base: &reqwest::Url) -> Vec<crate::cluster::App> {
    match client.pods_status(base).await {
        Ok(listing) => {
            let listing = listing.unwrap_or_default();
            for (id, e) in &listing.skipped {
                warn!("skipping a pod Marathon sent that cannot be parsed ({id:?}): {e}");
            }
            listing.pods
        }
        Err(e) => {
            warn!("pods could not be read, exporting apps only: {e}");
            Vec::new()
        }
    }
}

/// Start serving: DNS answers at once (SOA/NS and static records), Marathon records follow
/// as soon as the first sync completes.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    let (store, mut sync_cfg) = initial_zones(&settings)?;
    if let Some(path) = &settings.serial_file {
        // The first serial is served as soon as the listeners are up: reserve it first.
        let serial = store.marathon().serial();
        let reserve = crate::serial_file::reservation_for(serial, None).unwrap_or(serial);
        match crate::serial_file::write(path, reserve) {
            Ok(()) => sync_cfg.serial_reserved = Some(reserve),
            Err(e) => warn!(
                "cannot write the serial file {}: {e}; serials may go backwards after a restart",
                path.display()
            ),
        }
    }
    let store = Arc::new(store);
    let client = marathon_client(&settings)?;
    let metrics = Arc::new(crate::dns::metrics::DnsMetrics::default());
    let status = Arc::new(SyncStatus::default());
    if !settings.transfer.allow.0.is_empty() && settings.serial_file.is_none() {
        warn!(
            "--allow-transfer without --serial-file: after a restart, serials may repeat the previous run's and a secondary's IXFR could apply the wrong changes; set --serial-file"
        );
    }
    let journal = (!settings.transfer.allow.0.is_empty())
        .then(|| Arc::new(crate::transfer::Journal::new(settings.transfer.history)));
    let transfers = Arc::new(crate::transfer::Transfers::new(
        crate::transfer::TransferPolicy {
            allow: settings.transfer.allow.clone(),
            allow_query: settings.allow_query.clone(),
            keys: settings.transfer.keys.clone(),
        },
        store.clone(),
        journal
            .clone()
            .unwrap_or_else(|| Arc::new(crate::transfer::Journal::new(0))),
        status.clone(),
    ));
    let dns = listen::serve(
        &settings.listen,
        store.clone(),
        &ListenOptions {
            answer: AnswerOptions {
                max_udp_payload: settings.max_udp_payload,
            },
            tcp: settings.tcp,
            udp_workers: settings.udp_workers,
            allow_query: settings.allow_query.clone(),
            rrl: Some(settings.rrl.clone()),
            transfers: Some(transfers.clone()),
        },
        metrics.clone(),
    )
    .await?;
    for addr in &dns.udp {
        info!("serving DNS for {} on {addr} (UDP and TCP)", settings.zone);
    }
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::channel(1024);
    let (control, control_rx) = mpsc::channel(16);
    let mut tasks = JoinSet::new();
    let event_types = Arc::new(stream::EventTypes::default());
    tasks.spawn(stream::run(
        client.clone(),
        stream::StreamLimits {
            read_timeout: settings.stream_timeout,
            max_event: settings.marathon_max_event,
            counts: Some(event_types.clone()),
        },
        tx,
        shutdown.clone(),
    ));
    let mut syncer = Syncer::new(sync_cfg, client.clone(), store.clone(), status.clone());
    if let Some(journal) = journal {
        syncer = syncer.with_journal(journal);
    }
    tasks.spawn(syncer.run(rx, control_rx, shutdown.clone()));
    let notifier = crate::transfer::notify::Notifier {
        zones: store.clone(),
        status: status.clone(),
        key: settings.transfer.keys.first().cloned(),
        stats: transfers.stats.clone(),
    };
    for target in &settings.transfer.notify {
        tasks.spawn(notifier.clone().run(*target, shutdown.clone()));
    }
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin = match settings.admin_listen {
        Some(addr) => {
            let bound = crate::admin::serve(
                addr,
                crate::admin::Views {
                    store: store.clone(),
                    status: status.clone(),
                    queries: metrics,
                    draining: draining.clone(),
                    control: control.clone(),
                    transfers: transfers.stats.clone(),
                    event_types,
                },
                shutdown.clone(),
            )
            .await?;
            info!(
                "admin HTTP on http://{bound}/ (/health, /ready, /metrics, /v1/apps, /v1/records, /v1/zone)"
            );
            Some(bound)
        }
        None => None,
    };
    Ok(Running {
        admin,
        draining,
        udp: dns.udp.clone(),
        tcp: dns.tcp.clone(),
        store,
        status,
        settings,
        client,
        control,
        shutdown,
        tasks,
        dns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_args_read_secrets_and_keep_the_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "t0ken\n").expect("write");
        let args = ServeArgs {
            marathon: vec!["http://m1:8080".into()],
            marathon_token_file: Some(file.clone()),
            udp_workers: Some(3),
            ..ServeArgs::defaults()
        };
        let s = Settings::from_args(&args).expect("settings");
        assert_eq!(s.auth, Some(Auth::Token("t0ken".into())));
        assert_eq!(s.auth_file, Some(AuthFile::Token(file.clone())));
        assert_eq!(s.udp_workers, 3);
        let d = Settings::new(vec!["http://m1:8080".into()]);
        assert_eq!((s.listen, s.ttl, s.zone), (d.listen, d.ttl, d.zone));
        assert_eq!(d.udp_workers, default_udp_workers());
        assert!(d.leader_lookup);

        let both = ServeArgs {
            marathon_credentials: Some("u:p".into()),
            ..args.clone()
        };
        assert!(matches!(
            Settings::from_args(&both),
            Err(SettingsError::CredentialsAndToken)
        ));
        let missing = ServeArgs {
            marathon_token_file: Some(dir.path().join("absent")),
            ..args
        };
        assert!(matches!(
            Settings::from_args(&missing),
            Err(SettingsError::SecretFile { .. })
        ));
        let bad = ServeArgs {
            marathon_credentials: Some("no-colon".into()),
            ..ServeArgs::defaults()
        };
        assert!(matches!(
            Settings::from_args(&bad),
            Err(SettingsError::BadCredentials)
        ));
    }
}
