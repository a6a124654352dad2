//! The sync task: owns the cluster model, feeds it from Marathon (full REST snapshots and the
//! event stream), and publishes a new zone snapshot when the records change. Bursts of events
//! are coalesced into one publish.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::rr::Record;
use reqwest::Url;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cluster::{App, AppId, Cluster, id_key};
use crate::marathon::client::MarathonClient;
use crate::marathon::convert::{AppSink, Decoded};
use crate::marathon::stream::{Skipped, StreamMessage};
use crate::resolve::HostCache;
use crate::zone::build::{self, SoaTemplate, ZoneConfig};
use crate::zone::builder::{Updated, ZoneBuilder};
use crate::zone::store::ZoneStore;

mod pods;
mod status;
pub use status::SyncStatus;

/// Everything the sync task needs to build zones.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub zone: ZoneConfig,
    pub soa: SoaTemplate,
    /// Static records of the Marathon zone (from its zone file), merged into every snapshot.
    pub statics: Vec<Record>,
    pub resync_interval: Duration,
    pub coalesce: Duration,
    pub serial_file: Option<std::path::PathBuf>,
    /// The serial `serial_file` holds: everything up to it may be served without a write.
    pub serial_reserved: Option<u32>,
    /// Full resyncs triggered by stream reconnects start at least this far apart (the
    /// periodic resync and the first one are not held back).
    pub reconnect_resync_min: Duration,
}

/// Requests to the sync task from the rest of the process (it alone owns the model).
#[derive(Debug)]
pub enum Control {
    /// A reload: rebuild the Marathon zone with these settings (its zone file's records, SOA
    /// and the reloadable keys) and publish it; answers with the new serial.
    Reconfigure(Box<SyncConfig>, tokio::sync::oneshot::Sender<u32>),
    /// The apps as the model has them now, for `/v1/apps`.
    Apps(tokio::sync::oneshot::Sender<Vec<AppView>>),
}

/// One app as `/v1/apps` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AppView {
    pub id: String,
    /// The DNS name its A/AAAA records are at (before any clash handling).
    pub name: Option<String>,
    pub tasks: Vec<TaskView>,
}

/// One task as `/v1/apps` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskView {
    pub id: String,
    pub host: String,
    pub state: String,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub ports: Vec<u16>,
    /// Health-check results (`alive`), one per check.
    pub health: Vec<bool>,
    /// Published in DNS (running and healthy, or `--include-unhealthy`).
    pub published: bool,
}

/// The sync task's state.
pub struct Syncer {
    cfg: SyncConfig,
    client: MarathonClient,
    store: Arc<ZoneStore>,
    status: Arc<SyncStatus>,
    cluster: Cluster,
    /// The zone, updated per app; `None` only while a big update runs on a blocking thread.
    builder: Option<ZoneBuilder>,
    hosts: HostCache,
    /// The Marathon the stream is attached to; REST goes there.
    base: Option<Url>,
    refetch: BTreeSet<AppId>,
    /// Ids that Marathon says are not apps (each is then tried once as a pod). Task events for
    /// them do not trigger app re-fetches until the next full resync.
    not_apps: BTreeSet<AppId>,
    /// Ids that are pods (in the model as apps, but re-read through the pods API).
    pods: BTreeSet<AppId>,
    /// Pods to re-read by id, and whether to re-read all of them (after a create).
    refetch_pods: BTreeSet<AppId>,
    refetch_all_pods: bool,
    /// Reading pods fails during resyncs: logged when it starts and when it ends.
    pods_failing: bool,
    /// Apps whose records may have changed since the last publish.
    dirty: BTreeSet<AppId>,
    /// The stream (re)connected and no full resync has completed since.
    connect_pending: bool,
    /// The last build skipped tasks whose agent name did not resolve: publish again soon.
    unresolved_hosts: bool,
    /// Resyncs are failing: an outage is logged when it starts and when it ends.
    resync_failing: bool,
    /// The stream reconnected while a snapshot was in flight: fetch another one after it.
    resync_again: bool,
    /// What each app looked like when last published, shared with snapshot parsing.
    fingerprints: Fingerprints,
    /// `--serial-file` cannot be written: warned once per streak.
    serial_file_failing: bool,
    /// When the events not yet published arrived.
    received: Vec<Instant>,
    /// The IXFR history, when zone transfers are on.
    journal: Option<Arc<crate::transfer::Journal>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Syncer {
    pub fn new(
        cfg: SyncConfig,
        client: MarathonClient,
        store: Arc<ZoneStore>,
        status: Arc<SyncStatus>,
    ) -> Self {
        let serial = store.marathon().serial();
        status.serial.store(serial, Ordering::Release);
        let builder = ZoneBuilder::new(cfg.zone.clone(), cfg.soa.clone(), &cfg.statics, serial);
        Self {
            cfg,
            client,
            store,
            status,
            cluster: Cluster::default(),
            builder: Some(builder),
            hosts: HostCache::default(),
            base: None,
            refetch: BTreeSet::new(),
            not_apps: BTreeSet::new(),
            pods: BTreeSet::new(),
            refetch_pods: BTreeSet::new(),
            refetch_all_pods: false,
            pods_failing: false,
            dirty: BTreeSet::new(),
            connect_pending: false,
            unresolved_hosts: false,
            resync_failing: false,
            resync_again: false,
            fingerprints: Fingerprints::default(),
            serial_file_failing: false,
            received: Vec::new(),
            journal: None,
        }
    }

    /// Keep the IXFR history in `journal` (one delta per publish, pushed before it is served).
    pub fn with_journal(mut self, journal: Arc<crate::transfer::Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Run until `shutdown`, consuming the stream's messages; the last serial is on disk
    /// when this returns.
    pub async fn run(
        mut self,
        rx: mpsc::Receiver<StreamMessage>,
        control: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) {
        self.follow(rx, control, shutdown).await;
    }

    async fn follow(
        &mut self,
        mut rx: mpsc::Receiver<StreamMessage>,
        mut control: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) {
        // Snapshot at once (the stream may be slow to come up), and again on every connect —
        // but a flapping stream must not pull a full snapshot per reconnect.
        let mut next_resync: Option<Instant> = Some(Instant::now());
        // When the last resync that followed a (re)connect started.
        let mut last_reconnect_resync: Option<Instant> = None;
        let min_apart = self.cfg.reconnect_resync_min;
        let reconnect_resync_at = |last: Option<Instant>| {
            last.map_or_else(Instant::now, |t| t + min_apart)
                .max(Instant::now())
        };
        // Failed resyncs are retried with jittered backoff (many instances after an outage
        // must not hit Marathon in lockstep).
        let mut retry =
            crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut flush_at: Option<Instant> = None;
        // Throttle, not debounce: a lone event is published at once; during a burst at most
        // one publish per coalescing window.
        let mut last_flush: Option<Instant> = None;
        // A full snapshot is fetched on its own task while events keep being applied; those
        // events are replayed over the snapshot when it arrives (it may predate them).
        let (fetched_tx, mut fetched_rx) = mpsc::channel::<(Fetched, Duration)>(1);
        let mut replay: Option<Vec<Decoded>> = None;
        loop {
            if self.unresolved_hosts && flush_at.is_none() {
                // Agents whose names did not resolve: try again without waiting for an event.
                if let Some(b) = &self.builder {
                    self.dirty.extend(b.apps_with_unresolved_hosts());
                }
                flush_at = Some(Instant::now() + crate::resolve::RETRY_FAILED_AFTER);
            }
            let resync_sleep = next_resync.map(tokio::time::Instant::from_std);
            let flush_sleep = flush_at.map(tokio::time::Instant::from_std);
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(request) = control.recv() => match request {
                    Control::Reconfigure(cfg, done) => {
                        let serial = self.reconfigure(*cfg).await;
                        let _ = done.send(serial);
                    }
                    Control::Apps(reply) => {
                        let _ = reply.send(self.app_views());
                    }
                },
                msg = rx.recv() => {
                    let Some(msg) = msg else { return };
                    match msg {
                        StreamMessage::Connected(base) => {
                            self.status.set_stream_connected(true);
                            self.base = Some(base);
                            self.connect_pending = true;
                            self.status.stream_synced.store(false, Ordering::Release);
                            // Stream first, then snapshot: nothing between the two is lost.
                            // (Reconnect storms are bounded by the stream's backoff, which only
                            // resets once a stream delivers events.) A snapshot already in
                            // flight may predate the connect: fetch another after it.
                            if replay.is_some() {
                                self.resync_again = true;
                            } else {
                                let earliest = reconnect_resync_at(last_reconnect_resync);
                                next_resync =
                                    Some(next_resync.map_or(earliest, |n| n.min(earliest)));
                            }
                        }
                        StreamMessage::Event(decoded) => {
                            self.status.count_event();
                            if let Some(replay) = &mut replay {
                                replay.push(decoded.clone());
                            }
                            self.on_event(decoded);
                            if !self.dirty.is_empty() || !self.refetch.is_empty() || self.pods_pending() {
                                let earliest = last_flush
                                    .map_or_else(Instant::now, |t| t + self.cfg.coalesce)
                                    .max(Instant::now());
                                // Sooner than a pending host-lookup retry, never later.
                                flush_at = Some(flush_at.map_or(earliest, |f| f.min(earliest)));
                            }
                        }
                        StreamMessage::Skipped(skipped) => {
                            self.status.count_event();
                            match skipped {
                                Skipped::Unknown => self.status.count_unknown_event(),
                                Skipped::Malformed => self.status.count_malformed_event(),
                                Skipped::Attached | Skipped::Irrelevant => {}
                            }
                        }
                        StreamMessage::Disconnected => {
                            self.status.stream_synced.store(false, Ordering::Release);
                            self.status.set_stream_connected(false);
                        }
                        StreamMessage::Reconnecting => self.status.count_reconnect(),
                    }
                }
                () = sleep_until(resync_sleep), if replay.is_none() => {
                    next_resync = None;
                    if self.connect_pending {
                        last_reconnect_resync = Some(Instant::now());
                    }
                    replay = Some(Vec::new());
                    self.status.resyncs.fetch_add(1, Ordering::Relaxed);
                    let (client, base, tx) = (self.client.clone(), self.base.clone(), fetched_tx.clone());
                    let fingerprints = self.fingerprints.clone();
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let fetched = fetch_snapshot(&client, base.as_ref(), &fingerprints).await;
                        let _ = tx.send((fetched, started.elapsed())).await;
                    });
                }
                Some((fetched, fetch_time)) = fetched_rx.recv() => {
                    let replayed = replay.take().unwrap_or_default();
                    if self.finish_resync(fetched, fetch_time, replayed).await {
                        retry.reset();
                        next_resync = Some(if std::mem::take(&mut self.resync_again) {
                            reconnect_resync_at(last_reconnect_resync)
                        } else {
                            Instant::now() + self.cfg.resync_interval
                        });
                    } else {
                        // Keep serving the last good zone; try again soon.
                        next_resync = Some(Instant::now() + retry.next_delay());
                    }
                }
                () = sleep_until(flush_sleep) => {
                    flush_at = None;
                    self.flush().await;
                    last_flush = Some(Instant::now());
                }
            }
        }
    }

    /// Rebuild the whole Marathon zone with new settings (a reload) and publish it at a new
    /// serial, even if no record changed (the SOA may have). Returns the serial served.
    async fn reconfigure(&mut self, mut cfg: SyncConfig) -> u32 {
        // The serial file is not reloadable.
        cfg.serial_file = self.cfg.serial_file.clone();
        cfg.serial_reserved = self.cfg.serial_reserved;
        let serial = self
            .builder
            .as_ref()
            .map_or_else(|| self.store.marathon().serial(), ZoneBuilder::serial);
        self.builder = Some(ZoneBuilder::new(
            cfg.zone.clone(),
            cfg.soa.clone(),
            &cfg.statics,
            serial,
        ));
        self.cfg = cfg;
        let all: BTreeSet<AppId> = self.cluster.apps.keys().cloned().collect();
        self.hosts
            .resolve(&build::hosts_to_resolve(
                self.cluster.apps.values(),
                self.cfg.zone.include_unhealthy,
            ))
            .await;
        let updated = if all.len() > BLOCKING_BUILD {
            self.update_blocking(all).await
        } else {
            let hosts = &self.hosts;
            let lookup = |h: &str| hosts.addresses(h);
            self.builder
                .as_mut()
                .map(|b| b.update(&self.cluster, &all, &lookup))
        };
        let mut updated = updated.unwrap_or_default();
        updated.changed = true;
        self.publish(updated);
        self.status.serial()
    }

    /// Make `--serial-file` cover `serial` before it is served (see [`crate::serial_file`]).
    /// A write every few hundred publishes, in line: a millisecond-scale fsync is cheaper than
    /// a serial that could go backwards. A failing disk is warned about, never a reason to
    /// stop publishing.
    fn reserve_serial(&mut self, serial: u32) {
        let Some(path) = &self.cfg.serial_file else {
            return;
        };
        let Some(reserve) = crate::serial_file::reservation_for(serial, self.cfg.serial_reserved)
        else {
            return;
        };
        match crate::serial_file::write(path, reserve) {
            Ok(()) => {
                self.cfg.serial_reserved = Some(reserve);
                if std::mem::take(&mut self.serial_file_failing) {
                    info!("the serial file {} is written again", path.display());
                }
            }
            Err(e) => {
                if !self.serial_file_failing {
                    warn!(
                        "cannot record the serial in {}: {e}; serving anyway (a restart may reuse serials)",
                        path.display()
                    );
                    self.serial_file_failing = true;
                }
            }
        }
    }

    /// The model as `/v1/apps` shows it.
    fn app_views(&self) -> Vec<AppView> {
        let zone = self.cfg.zone.origin.to_ascii();
        self.cluster
            .apps
            .values()
            .map(|app| AppView {
                id: app.id.to_string(),
                name: crate::naming::app_name(&app.id, &zone),
                tasks: app
                    .tasks
                    .values()
                    .map(|t| TaskView {
                        id: t.id.clone(),
                        host: t.host.clone(),
                        state: match &t.state {
                            crate::cluster::TaskState::Running => "TASK_RUNNING".to_string(),
                            crate::cluster::TaskState::NotRunning(s) => s.clone(),
                        },
                        ip_addresses: t.ip_addresses.clone(),
                        ports: t.host_ports.clone(),
                        health: t.health.clone(),
                        published: app.is_eligible(t, self.cfg.zone.include_unhealthy),
                    })
                    .collect(),
            })
            .collect()
    }

    fn on_event(&mut self, decoded: Decoded) {
        let Some(decoded) = self.pod_event(decoded) else {
            return;
        };
        match decoded {
            Decoded::Apply(event) => {
                let applied = self.cluster.apply(&event);
                if applied.changed {
                    self.dirty.insert(event.app_id().clone());
                    self.note_received();
                }
                self.refetch
                    .extend(applied.refetch.filter(|id| !self.not_apps.contains(id)));
            }
            // Definition changes always re-fetch, even ids that were not apps before.
            Decoded::Refetch(ids) => {
                for id in ids {
                    self.not_apps.remove(&id);
                    self.refetch.insert(id);
                }
            }
            // Taken by `pod_event`.
            Decoded::RefetchPods(_) | Decoded::RefetchAllPods | Decoded::InstanceChanged { .. } => {
            }
        }
    }

    /// Publish what events changed, then re-fetch the apps events asked for (concurrently:
    /// a slow re-fetch must not hold back changes already known) and publish again.
    async fn flush(&mut self) {
        self.publish_dirty().await;
        let Some(base) = self.base.clone() else {
            return;
        };
        let ids = std::mem::take(&mut self.refetch);
        if ids.is_empty() && !self.pods_pending() {
            return;
        }
        let client = &self.client;
        let fetched = futures_util::future::join_all(ids.into_iter().map(|id| {
            let base = base.clone();
            async move {
                let got = client.app(&base, &id).await;
                (id, got)
            }
        }))
        .await;
        for (id, got) in fetched {
            match got {
                Ok(app) => {
                    if app.is_none() {
                        self.not_apps.insert(id.clone());
                        // Not an app: perhaps a pod whose creation event was missed.
                        self.refetch_pods.insert(id.clone());
                    }
                    if self.cluster.replace_app(&id, app) {
                        self.dirty.insert(id);
                    }
                }
                // The periodic resync heals what is missed here.
                Err(e) => warn!("re-fetching app {id} failed, keeping what is known: {e}"),
            }
        }
        self.refetch_pods_now(&base).await;
        self.publish_dirty().await;
    }

    /// Take a fetched snapshot (and the events that arrived meanwhile) as the model. False if
    /// Marathon could not be read.
    async fn finish_resync(
        &mut self,
        fetched: Fetched,
        fetch_time: Duration,
        replayed: Vec<Decoded>,
    ) -> bool {
        let ok = match fetched {
            Ok(snapshot) => {
                let started = Instant::now();
                let first = !self.status.is_synced();
                let changed = self.replace_model(snapshot, replayed).await;
                let (fetch_ms, build_ms) = (fetch_time.as_millis(), started.elapsed().as_millis());
                if first {
                    let tasks: usize = self.cluster.apps.values().map(|a| a.tasks.len()).sum();
                    info!(
                        apps = self.cluster.apps.len(),
                        tasks, fetch_ms, build_ms, "initial sync from Marathon complete"
                    );
                } else {
                    debug!(changed, fetch_ms, build_ms, "resync complete");
                }
                true
            }
            Err(last_error) => {
                self.status.failed_resyncs.fetch_add(1, Ordering::Relaxed);
                if self.resync_failing {
                    debug!("full resync failed again: {last_error}");
                } else {
                    warn!(
                        "full resync failed, serving the last good zone and retrying with backoff (logged once): {last_error}"
                    );
                    self.resync_failing = true;
                }
                false
            }
        };
        self.status.changed.notify_waiters();
        ok
    }

    /// Take a full snapshot as the model, replay the events that arrived while it was being
    /// fetched, and publish. Only apps that differ from the current model are rebuilt, so a
    /// periodic resync costs a comparison, not a zone build; the initial sync (every app new)
    /// builds on a blocking thread, off the runtime's workers.
    async fn replace_model(&mut self, mut snapshot: Snapshot, replayed: Vec<Decoded>) -> usize {
        self.merge_snapshot_pods(&mut snapshot);
        if let Some(first) = snapshot.skipped.first() {
            // One line per resync, however many apps: they keep their last good records.
            warn!(
                "{} app(s) or pod(s) Marathon sent cannot be parsed and keep their last good records; the first: {first}",
                snapshot.skipped.len()
            );
        }
        // Apps the snapshot no longer has are gone; apps it sent (those whose fingerprint
        // differed while it was parsed) replace ours if they really differ.
        let mut changed: BTreeSet<AppId> = self
            .cluster
            .apps
            .keys()
            .filter(|id| !snapshot.seen.contains(&id_key(id)))
            .cloned()
            .collect();
        for id in &changed {
            self.cluster.apps.remove(id);
        }
        for app in snapshot.changed {
            if self.cluster.apps.get(&app.id) != Some(&app) {
                changed.insert(app.id.clone());
                self.cluster.apps.insert(app.id.clone(), app);
            }
        }
        self.refetch.clear();
        self.not_apps.clear();
        let count = changed.len();
        // What the snapshot alone changes, in apps no event during the fetch touched, is the
        // drift: what the event stream had not told us. The others are built after the replay.
        let touched: BTreeSet<AppId> = replayed
            .iter()
            .flat_map(|d| match d {
                Decoded::Apply(event) => vec![event.app_id().clone()],
                Decoded::Refetch(ids) | Decoded::RefetchPods(ids) => ids.clone(),
                Decoded::RefetchAllPods => Vec::new(),
                Decoded::InstanceChanged { run_spec_id, .. } => vec![run_spec_id.clone()],
            })
            .collect();
        let (drifted, explained): (BTreeSet<AppId>, BTreeSet<AppId>) =
            changed.into_iter().partition(|id| !touched.contains(id));
        self.dirty.extend(explained);
        let drift_apps = drifted.len();
        self.resolve_hosts_of(&drifted).await;
        self.note_fingerprints(&drifted);
        let mut updated = if drifted.len() > BLOCKING_BUILD {
            self.update_blocking(drifted).await
        } else {
            let hosts = &self.hosts;
            let lookup = |h: &str| hosts.addresses(h);
            self.builder
                .as_mut()
                .map(|b| b.update(&self.cluster, &drifted, &lookup))
        };
        if let Some(u) = &updated
            && self.status.is_synced()
        {
            self.status.count_drift(drift_apps, u.records_changed);
            if u.records_changed > 0 {
                info!(
                    apps = drift_apps,
                    records = u.records_changed,
                    "resync corrected records that events had not (missed events)"
                );
            }
        }
        // Then the events that arrived while the snapshot was fetched.
        for decoded in replayed {
            self.on_event(decoded);
        }
        let dirty = std::mem::take(&mut self.dirty);
        if !dirty.is_empty() {
            self.resolve_hosts_of(&dirty).await;
            self.note_fingerprints(&dirty);
            let hosts = &self.hosts;
            let lookup = |h: &str| hosts.addresses(h);
            if let Some(b) = self.builder.as_mut() {
                let more = b.update(&self.cluster, &dirty, &lookup);
                let u = updated.get_or_insert_with(Updated::default);
                u.changed |= more.changed;
                u.new_warnings.extend(more.new_warnings);
            }
        }
        if !self.hosts.is_empty() {
            // Forget agents no app runs on any more (a scan of every task: only when some
            // agents have names rather than addresses).
            let all = build::hosts_to_resolve(
                self.cluster.apps.values(),
                self.cfg.zone.include_unhealthy,
            );
            self.hosts.retain(&all);
        }
        if let Some(updated) = updated {
            self.publish(updated);
        }
        let changed = count;
        // A snapshot that may predate the stream's (re)connect does not make the zone live.
        if self.connect_pending && !self.resync_again {
            self.connect_pending = false;
            self.status.stream_synced.store(true, Ordering::Release);
        }
        if std::mem::take(&mut self.resync_failing) {
            info!("Marathon answers again; the zone is up to date");
        }
        self.status.synced.store(true, Ordering::Release);
        self.status.mark_synced_now();
        release_freed_memory();
        changed
    }

    /// Resolve the agent names of these apps' tasks (cached).
    async fn resolve_hosts_of(&mut self, ids: &BTreeSet<AppId>) {
        let hosts = build::hosts_to_resolve(
            ids.iter().filter_map(|id| self.cluster.apps.get(id)),
            self.cfg.zone.include_unhealthy,
        );
        if !hosts.is_empty() {
            self.hosts.resolve(&hosts).await;
        }
    }

    /// A big update (the initial sync) on a blocking thread: at 100,000 tasks it is real CPU
    /// work, which must not hold up the runtime's other tasks (TCP answers).
    async fn update_blocking(&mut self, changed: BTreeSet<AppId>) -> Option<Updated> {
        let mut builder = self.builder.take()?;
        let cluster = std::mem::take(&mut self.cluster);
        let known = self.hosts.known();
        let joined = tokio::task::spawn_blocking(move || {
            let lookup = |h: &str| known.get(h).cloned().unwrap_or_default();
            let updated = builder.update(&cluster, &changed, &lookup);
            (cluster, builder, updated)
        })
        .await;
        match joined {
            Ok((cluster, builder, updated)) => {
                self.cluster = cluster;
                self.builder = Some(builder);
                Some(updated)
            }
            Err(e) => {
                // Only a panic in the build gets here: start the zone afresh at the next resync.
                warn!("zone build failed, serving the last good zone: {e}");
                self.builder = Some(ZoneBuilder::new(
                    self.cfg.zone.clone(),
                    self.cfg.soa.clone(),
                    &self.cfg.statics,
                    self.store.marathon().serial(),
                ));
                None
            }
        }
    }

    /// Bring the records of the apps events changed up to date and publish them.
    async fn publish_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.dirty);
        self.note_fingerprints(&dirty);
        let hosts = build::hosts_to_resolve(
            dirty.iter().filter_map(|id| self.cluster.apps.get(id)),
            self.cfg.zone.include_unhealthy,
        );
        if !hosts.is_empty() {
            self.hosts.resolve(&hosts).await;
        }
        let Some(builder) = self.builder.as_mut() else {
            return;
        };
        let hosts = &self.hosts;
        let lookup = |h: &str| hosts.addresses(h);
        let updated = builder.update(&self.cluster, &dirty, &lookup);
        self.publish(updated);
    }

    /// An event that will change the zone arrived now (for the event → answer histogram).
    fn note_received(&mut self) {
        if self.received.len() < 10_000 {
            self.received.push(Instant::now());
        }
    }

    /// Record what these apps look like now, for the next snapshot's filter.
    fn note_fingerprints(&self, ids: &BTreeSet<AppId>) {
        let mut fp = lock(&self.fingerprints);
        for id in ids {
            match self.cluster.apps.get(id) {
                Some(app) => fp.insert(id_key(id), app.fingerprint()),
                None => fp.remove(&id_key(id)),
            };
        }
    }

    /// Publish the builder's zone at a new serial if its records changed.
    fn publish(&mut self, updated: Updated) {
        for w in &updated.new_warnings {
            warn!("{w}");
        }
        let Some(builder) = self.builder.as_mut() else {
            return;
        };
        self.unresolved_hosts = !builder.apps_with_unresolved_hosts().is_empty();
        let received = std::mem::take(&mut self.received);
        if !updated.changed {
            return;
        }
        let serial = build::next_serial(builder.serial(), unix_now());
        if let Some(journal) = &self.journal {
            if builder.keeps_changes() {
                let delta = crate::transfer::journal::Delta {
                    from: builder.serial(),
                    to: serial,
                    changes: builder.take_changes(),
                };
                journal.push(delta);
            } else {
                // A new builder (start, reload, a failed build): its first publish is the
                // whole zone, which no secondary can hold a diff against.
                journal.clear();
                builder.keep_changes();
            }
        }
        let zone = builder.snapshot(serial);
        self.reserve_serial(serial);
        self.store.publish(Arc::new(zone));
        self.status.serial.store(serial, Ordering::Release);
        for at in received {
            self.status.event_latency.observe(at.elapsed());
        }
        self.status.publishes.fetch_add(1, Ordering::Relaxed);
        self.status.changed.notify_waiters();
    }
}

/// Fingerprints of the apps in the model by id key: a snapshot being parsed drops the apps
/// that did not change, so a resync costs the sync task only the apps that differ (and the
/// parsed copy of the cluster never exists whole).
type Fingerprints = Arc<Mutex<HashMap<u64, u64>>>;

fn lock(fp: &Fingerprints) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
    fp.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A full snapshot, filtered while parsed.
#[derive(Debug, Default)]
struct Snapshot {
    /// Apps whose fingerprint differed from the model's when they were parsed.
    changed: Vec<App>,
    /// Id keys of every app in the snapshot (parsed or not): the others are gone.
    seen: HashSet<u64>,
    /// Apps that could not be parsed.
    skipped: Vec<String>,
    /// `GET /v2/pods/::status` (merged into the above by the sync task), or why it failed.
    pods: Option<crate::marathon::pods::PodsListing>,
    pods_error: Option<String>,
}

struct FilterSink {
    fingerprints: Fingerprints,
    snapshot: Snapshot,
}

impl AppSink for FilterSink {
    fn app(&mut self, app: App) {
        let key = id_key(&app.id);
        self.snapshot.seen.insert(key);
        if lock(&self.fingerprints).get(&key) != Some(&app.fingerprint()) {
            self.snapshot.changed.push(app);
        }
    }

    fn skipped(&mut self, id: Option<AppId>, error: String) {
        // An app that fails to parse keeps what is known of it rather than disappearing.
        if let Some(id) = id {
            self.snapshot.seen.insert(id_key(&id));
        }
        self.snapshot.skipped.push(error);
    }
}

/// Why no full snapshot could be had.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("no Marathon URL answers")]
    NoMarathon,
    #[error(transparent)]
    Marathon(#[from] crate::marathon::client::ClientError),
}

/// A filtered snapshot, or why Marathon could not be read (the last error).
type Fetched = Result<Snapshot, ResyncError>;

/// The default of [`SyncConfig::reconnect_resync_min`].
pub const RECONNECT_RESYNC_MIN: Duration = Duration::from_secs(5);

/// Updates that change more apps than this run on a blocking thread.
const BLOCKING_BUILD: usize = 1000;

/// `GET /v2/apps?embed=apps.tasks` and `GET /v2/pods/::status` from the stream's Marathon first; only if it fails, from
/// every other candidate.
async fn fetch_snapshot(
    client: &MarathonClient,
    stream_base: Option<&Url>,
    fingerprints: &Fingerprints,
) -> Fetched {
    let fetch = |base: Url| async move {
        let sink = FilterSink {
            fingerprints: fingerprints.clone(),
            snapshot: Snapshot::default(),
        };
        let mut snapshot = client
            .apps_into(&base, sink)
            .await
            .map(|s| s.snapshot)
            .map_err(ResyncError::from)?;
        // Pods from the same Marathon; a failure here keeps the known pods, not the apps.
        match client.pods_status(&base).await {
            Ok(listing) => snapshot.pods = Some(listing.unwrap_or_default()),
            Err(e) => snapshot.pods_error = Some(e.to_string()),
        }
        Ok(snapshot)
    };
    let mut fetched = Err(ResyncError::NoMarathon);
    if let Some(base) = stream_base {
        fetched = fetch(base.clone()).await;
    }
    if fetched.is_err() {
        for base in client.candidates().await {
            if Some(&base) == stream_base {
                continue;
            }
            fetched = fetch(base).await;
            if fetched.is_ok() {
                break;
            }
        }
    }
    fetched
}

/// Hand the memory a snapshot's parse freed back to the system. glibc keeps freed small blocks
/// in its arenas; after parsing tens of megabytes of JSON that is most of the resident size.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
