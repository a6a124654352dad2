//! A Marathon simulator speaking Marathon's real REST and SSE wire format, for dev mode and
//! tests. Tests drive it through hooks: start/kill tasks, flip health, drop the stream, lose
//! events, fail REST calls, act as a standby that answers `/v2/events` with a 302.

pub mod dev;
mod http;
pub mod model;
pub mod pods;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use model::{SimApp, SimNetwork, SimPort, SimTask};
pub use pods::{SimContainer, SimEndpoint, SimPod, SimPodInstance};

/// What the SSE connections are told.
#[derive(Debug, Clone)]
pub(crate) enum Broadcast {
    Event {
        event_type: String,
        data: String,
    },
    /// Close every open stream.
    Close,
}

/// The cluster state shared by a leader and its standbys.
#[derive(Debug, Default)]
pub(crate) struct Cluster {
    pub apps: BTreeMap<String, SimApp>,
    pub tasks: BTreeMap<String, SimTask>,
    /// The next service port to hand out.
    pub next_service_port: u16,
    pub pods: BTreeMap<String, SimPod>,
    pub pod_instances: BTreeMap<String, SimPodInstance>,
    /// When each instance started (a counter), to scale down the newest first.
    pub pod_order: BTreeMap<String, u64>,
}

/// Behaviour switches, per simulated Marathon.
#[derive(Debug, Default, Clone)]
pub(crate) struct Behaviour {
    /// Answer REST calls with this status instead (e.g. 503).
    pub rest_failure: Option<u16>,
    /// Required `Authorization` header value.
    pub auth: Option<String>,
    /// `/v2/leader` answers 503 (leader unknown).
    pub leader_unknown: bool,
    /// REST answers are sent this long after the state they show was taken.
    pub rest_delay: Option<Duration>,
    /// `/v2/apps` answers 200 with exactly this body (a misbehaving proxy, a broken Marathon).
    pub apps_body: Option<String>,
    /// Answer the pods API (`/v2/pods…`) only with this status.
    pub pods_failure: Option<u16>,
}

pub(crate) struct Shared {
    pub cluster: Mutex<Cluster>,
    pub events: broadcast::Sender<Broadcast>,
    /// State changes do not emit events (Marathon ≤ 1.7 dropping events for slow consumers).
    pub suppress_events: std::sync::atomic::AtomicBool,
    pub counter: AtomicU64,
    pub seed: u64,
}

pub(crate) struct Node {
    pub shared: Arc<Shared>,
    pub behaviour: Mutex<Behaviour>,
    /// `Some(leader base URL)` for a standby.
    pub leader: Option<String>,
    pub addr: SocketAddr,
    pub heartbeat: Duration,
    /// Requests served, by path (for tests).
    pub requests: Mutex<BTreeMap<String, u64>>,
    /// The `Authorization` header of the latest request (for tests).
    pub last_auth: Mutex<Option<String>>,
}

/// A running simulated Marathon.
pub struct Simulator {
    node: Arc<Node>,
    shutdown: CancellationToken,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the simulator down with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Simulator {
    /// Start a leader on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Duration::from_secs(10),
        )
        .await
    }

    /// Start a leader on `addr` with the given SSE heartbeat period (Marathon: 10 s).
    pub async fn start_on(addr: SocketAddr, heartbeat: Duration) -> std::io::Result<Self> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let shared = Arc::new(Shared {
            cluster: Mutex::new(Cluster::default()),
            events: broadcast::channel(4096).0,
            suppress_events: false.into(),
            counter: AtomicU64::new(1),
            seed,
        });
        Self::start_node(shared, None, addr, heartbeat).await
    }

    /// Start a standby of this leader: same cluster, `/v2/events` answers 302 to the leader.
    pub async fn standby(&self) -> std::io::Result<Self> {
        Self::start_node(
            self.node.shared.clone(),
            Some(self.url()),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            self.node.heartbeat,
        )
        .await
    }

    async fn start_node(
        shared: Arc<Shared>,
        leader: Option<String>,
        addr: SocketAddr,
        heartbeat: Duration,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let node = Arc::new(Node {
            shared,
            behaviour: Mutex::new(Behaviour::default()),
            leader,
            addr: listener.local_addr()?,
            heartbeat,
            requests: Mutex::new(BTreeMap::new()),
            last_auth: Mutex::new(None),
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(http::serve(listener, node.clone(), shutdown.clone()));
        Ok(Self { node, shutdown })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.node.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.node.addr
    }

    fn emit(&self, event_type: &str, data: Value) {
        if self.node.shared.suppress_events.load(Ordering::Acquire) {
            return;
        }
        self.emit_raw(event_type, &data.to_string());
    }

    /// Send an arbitrary event (malformed JSON, unknown types …).
    pub fn emit_raw(&self, event_type: &str, data: &str) {
        let _ = self.node.shared.events.send(Broadcast::Event {
            event_type: event_type.into(),
            data: data.into(),
        });
    }

    /// Close every open event stream (Marathon restarting, a leader change, a network cut).
    pub fn drop_streams(&self) {
        let _ = self.node.shared.events.send(Broadcast::Close);
    }

    /// Lose events: state changes still happen but no event is sent.
    pub fn suppress_events(&self, on: bool) {
        self.node
            .shared
            .suppress_events
            .store(on, Ordering::Release);
    }

    /// Answer every REST call with this HTTP status (e.g. 503), or serve normally (`None`).
    pub fn fail_rest(&self, status: Option<u16>) {
        lock(&self.node.behaviour).rest_failure = status;
    }

    /// Answer only the pods API with this HTTP status (e.g. 500), or serve it (`None`).
    pub fn fail_pods_api(&self, status: Option<u16>) {
        lock(&self.node.behaviour).pods_failure = status;
    }

    /// Require this `Authorization` header value on every request.
    pub fn require_auth(&self, header_value: Option<String>) {
        lock(&self.node.behaviour).auth = header_value;
    }

    /// Send REST answers `delay` after taking the state they show (a slow Marathon).
    pub fn delay_rest(&self, delay: Option<Duration>) {
        lock(&self.node.behaviour).rest_delay = delay;
    }

    /// Answer `/v2/apps` with 200 and exactly `body` (`None`: the cluster as usual).
    pub fn apps_body(&self, body: Option<String>) {
        lock(&self.node.behaviour).apps_body = body;
    }

    /// Make `/v2/leader` answer 503 ("Could not determine the current leader").
    pub fn leader_unknown(&self, on: bool) {
        lock(&self.node.behaviour).leader_unknown = on;
    }

    /// The `Authorization` header the latest request carried.
    pub fn last_authorization(&self) -> Option<String> {
        lock(&self.node.last_auth).clone()
    }

    /// How many requests this node served for `path` (without query).
    pub fn requests(&self, path: &str) -> u64 {
        lock(&self.node.requests).get(path).copied().unwrap_or(0)
    }

    fn next_uuid(&self) -> String {
        let n = self.node.shared.counter.fetch_add(1, Ordering::Relaxed);
        // xorshift of seed and counter: unique per simulator, random-looking.
        let mut x = self.node.shared.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let hi = x;
        let lo = n;
        format!(
            "{:08x}-{:04x}-11e6-{:04x}-{:012x}",
            (hi >> 32) as u32,
            (hi >> 16) as u16,
            hi as u16 & 0x3fff | 0x8000,
            lo & 0xffff_ffff_ffff
        )
    }

    /// Define an app (as `POST /v2/apps` would): emits `api_post_event`.
    pub fn add_app(&self, mut app: SimApp) {
        {
            let mut cluster = lock(&self.node.shared.cluster);
            // Service ports are Marathon's to assign, once per app port, and they stay.
            let old = cluster.apps.get(&app.id).map(|a| a.ports.clone());
            for (i, port) in app.ports.iter_mut().enumerate() {
                if port.service_port == 0 {
                    port.service_port = old
                        .as_ref()
                        .and_then(|o| o.get(i))
                        .map(|p| p.service_port)
                        .filter(|p| *p != 0)
                        .unwrap_or_else(|| {
                            let n = cluster.next_service_port.max(10_000);
                            cluster.next_service_port = n + 1;
                            n
                        });
                }
            }
            cluster.apps.insert(app.id.clone(), app.clone());
        }
        let def = app.definition_json();
        self.emit(
            "api_post_event",
            json!({"clientIp": "127.0.0.1", "uri": format!("/v2/apps{}", app.id), "appDefinition": def,
                   "eventType": "api_post_event", "timestamp": model::now_iso()}),
        );
    }

    /// Remove an app: its tasks are killed, then `app_terminated_event`.
    pub fn remove_app(&self, app_id: &str) {
        let tasks: Vec<String> = lock(&self.node.shared.cluster)
            .tasks
            .values()
            .filter(|t| t.app_id == app_id)
            .map(|t| t.id.clone())
            .collect();
        for t in tasks {
            self.kill_task(&t);
        }
        lock(&self.node.shared.cluster).apps.remove(app_id);
        self.emit(
            "app_terminated_event",
            json!({"appId": app_id, "eventType": "app_terminated_event", "timestamp": model::now_iso()}),
        );
    }

    /// Start a task of `app_id` on agent `host` (an IP literal or a host name). Host ports are
    /// allocated from 31000 up; container-network tasks get `ip` as their own address, bridge
    /// tasks a Docker bridge address (which must never be published). Emits TASK_RUNNING.
    /// Apps with health checks start with no results (not yet healthy), as in Marathon.
    pub fn start_task(&self, app_id: &str, host: &str, container_ips: &[IpAddr]) -> Option<String> {
        self.start_task_with_ports(app_id, host, container_ips, None)
    }

    /// Like [`Self::start_task`], with the host ports given (for tests that run real backends
    /// on them).
    pub fn start_task_with_ports(
        &self,
        app_id: &str,
        host: &str,
        container_ips: &[IpAddr],
        host_ports: Option<Vec<u16>>,
    ) -> Option<String> {
        let uuid = self.next_uuid();
        let n = self.node.shared.counter.fetch_add(1, Ordering::Relaxed);
        let (task, app) = {
            let mut cluster = lock(&self.node.shared.cluster);
            let app = cluster.apps.get(app_id)?.clone();
            let instance_id = format!("{}.instance-{uuid}", app.safe_path());
            let port_count = match app.network {
                SimNetwork::Container => 0,
                _ => app.ports.len(),
            };
            let base = 31000 + (n % 2000) as u16 * 8;
            let ip_addresses = match app.network {
                SimNetwork::Container => container_ips.to_vec(),
                SimNetwork::Bridge => vec![IpAddr::from([172, 17, 0, (n % 250) as u8 + 2])],
                SimNetwork::Host => host.parse::<IpAddr>().into_iter().collect(),
            };
            let task = SimTask {
                id: format!("{instance_id}._app.1"),
                instance_id,
                app_id: app_id.into(),
                host: host.into(),
                slave_id: "a1b2c3d4-0000-4000-8000-000000000000-S1".into(),
                state: "TASK_RUNNING".into(),
                ports: host_ports
                    .unwrap_or_else(|| (0..port_count as u16).map(|i| base + i).collect()),
                ip_addresses,
                health: Vec::new(),
            };
            cluster.tasks.insert(task.id.clone(), task.clone());
            (task, app)
        };
        self.emit("status_update_event", task.status_event(&app));
        Some(task.id)
    }

    /// Kill a task: TASK_KILLED, and it is gone from the REST listings.
    pub fn kill_task(&self, task_id: &str) -> bool {
        let removed = {
            let mut cluster = lock(&self.node.shared.cluster);
            let task = cluster.tasks.remove(task_id);
            task.and_then(|t| cluster.apps.get(&t.app_id).cloned().map(|a| (t, a)))
        };
        let Some((mut task, app)) = removed else {
            return false;
        };
        task.state = "TASK_KILLED".into();
        self.emit("status_update_event", task.status_event(&app));
        true
    }

    /// Set every health-check result of a task; emits `health_status_changed_event` when it
    /// flips (as Marathon-run checks do).
    pub fn set_health(&self, task_id: &str, alive: bool) -> bool {
        let changed = {
            let mut guard = lock(&self.node.shared.cluster);
            let cluster = &mut *guard;
            let Some(task) = cluster.tasks.get_mut(task_id) else {
                return false;
            };
            let checks = cluster
                .apps
                .get(&task.app_id)
                .map_or(1, |a| a.health_checks.max(1));
            let before = task.health.clone();
            task.health = vec![alive; checks];
            (before != task.health).then(|| (task.app_id.clone(), task.instance_id.clone()))
        };
        if let Some((app_id, instance_id)) = changed {
            self.emit(
                "health_status_changed_event",
                json!({"appId": app_id, "instanceId": instance_id, "version": "2026-11-27T00:00:00.000Z",
                       "alive": alive, "eventType": "health_status_changed_event", "timestamp": model::now_iso()}),
            );
        }
        true
    }

    /// Ids of the tasks of an app.
    pub fn tasks_of(&self, app_id: &str) -> Vec<SimTask> {
        lock(&self.node.shared.cluster)
            .tasks
            .values()
            .filter(|t| t.app_id == app_id)
            .cloned()
            .collect()
    }

    /// Every app id.
    pub fn app_ids(&self) -> Vec<String> {
        lock(&self.node.shared.cluster)
            .apps
            .keys()
            .cloned()
            .collect()
    }
}
