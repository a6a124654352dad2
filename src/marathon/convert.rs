//! Wire format → domain model. Version differences are resolved here, once.

use std::net::IpAddr;

use super::wire::{self, WireApp, WireIp, WirePortMapping, WireTask};
use crate::cluster::{
    App, AppId, ClusterEvent, InstanceKey, Network, PortSpec, Proto, ServiceApp, Task, TaskPhase,
    TaskState,
};

/// Why a payload could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Body(String),
    #[error("malformed {what} JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

fn json<T: serde::de::DeserializeOwned>(what: &str, data: &str) -> Result<T, DecodeError> {
    serde_json::from_str(data).map_err(|source| DecodeError::Json {
        what: what.to_string(),
        source,
    })
}

/// What an event on `/v2/events` is, for the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// It changes the model: the stream forwards it to the sync task.
    Model(Decoded),
    /// `event_stream_attached`: the stream is live.
    Attached,
    /// A known type that does not affect DNS (deployments in progress, pods, framework …).
    Irrelevant,
    /// A type this version of marathon-dns does not know.
    Unknown,
}

/// What an event means for the model: the only events that reach the sync task.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Apply to the model directly.
    Apply(ClusterEvent),
    /// Definitions changed: re-fetch these apps over REST (or pods, for ids known as pods).
    Refetch(Vec<AppId>),
    /// Pods changed (`pod_updated_event`, `pod_deleted_event`): re-read these pods' status.
    RefetchPods(Vec<AppId>),
    /// A pod was created (`pod_created_event` names no pod): re-read every pod's status.
    RefetchAllPods,
    /// `instance_changed_event`: an instance of an app or pod changed condition. Only pods
    /// use it (apps' tasks have their own `status_update_event`).
    InstanceChanged {
        run_spec_id: AppId,
        instance: Option<InstanceKey>,
        /// The instance reached a terminal condition.
        ended: bool,
    },
}

/// Mesos task states after which a task is gone for good.
const TERMINAL_STATES: &[&str] = &[
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_ERROR",
    "TASK_LOST",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
    "TASK_UNKNOWN",
];

/// A Mesos state name of a listed task (REST lists only tasks that have not ended).
fn task_state(state: &str) -> TaskState {
    if state == "TASK_RUNNING" {
        TaskState::Running
    } else {
        TaskState::NotRunning(state.to_string())
    }
}

/// A Mesos state name of a status update: has the task ended, and if not, how is it.
fn task_phase(state: &str) -> TaskPhase {
    if TERMINAL_STATES.contains(&state) {
        TaskPhase::Ended
    } else {
        TaskPhase::Active(task_state(state))
    }
}

/// The instance key of a task id or an instance id: the UUID both carry (the last one, so a
/// UUID in the app's path does not count).
///
/// 1.4–1.7 task `web.1b2c…` belongs to instance `web.marathon-1b2c…`; 1.8+ task
/// `web.instance-1b2c…._app.1` to instance `web.instance-1b2c…`.
pub fn instance_key(id: &str) -> Option<InstanceKey> {
    let uuid = crate::naming::find_uuid(id)?;
    let mut key = [0u8; 16];
    let mut digits = uuid.bytes().filter(u8::is_ascii_hexdigit).map(|b| {
        // `find_uuid` returns hex digits only (and four dashes, filtered out above).
        char::from(b).to_digit(16).map_or(0, |d| d as u8)
    });
    for byte in &mut key {
        let hi = digits.next()?;
        let lo = digits.next()?;
        *byte = (hi << 4) | lo;
    }
    Some(InstanceKey(key))
}

/// `instance_changed_event` conditions after which an instance serves nothing
/// (`Condition.scala`; `Killing` included: it is on its way out).
const INSTANCE_ENDED: &[&str] = &[
    "Error", "Failed", "Finished", "Killed", "Killing", "Gone", "Dropped", "Unknown",
];

/// Event types that are valid Marathon events but carry nothing for DNS.
const IRRELEVANT: &[&str] = &[
    "event_stream_detached",
    "deployment_info",
    "deployment_step_success",
    "deployment_step_failure",
    "group_change_success",
    "group_change_failed",
    "failed_health_check_event",
    "add_health_check_event",
    "remove_health_check_event",
    "unhealthy_task_kill_event",
    "unhealthy_instance_kill_event",
    "framework_message_event",
    "unknown_instance_terminated_event",
    "unknown_task_terminated_event",
    "scheduler_registered_event",
    "scheduler_reregistered_event",
    "scheduler_disconnected_event",
    "subscribe_event",
    "unsubscribe_event",
];

/// Decode one SSE message (`event:` name and `data:` JSON).
pub fn decode_event(event_type: &str, data: &str) -> Result<Received, DecodeError> {
    Ok(match event_type {
        "event_stream_attached" => Received::Attached,
        t if IRRELEVANT.contains(&t) => Received::Irrelevant,
        _ => match decode_model_event(event_type, data)? {
            Some(decoded) => Received::Model(decoded),
            None => Received::Unknown,
        },
    })
}

/// The events that change the model; `None` for any other type.
fn decode_model_event(event_type: &str, data: &str) -> Result<Option<Decoded>, DecodeError> {
    Ok(Some(match event_type {
        "status_update_event" => {
            let e: wire::StatusUpdateEvent = json(event_type, data)?;
            Decoded::Apply(ClusterEvent::TaskStatus {
                app_id: e.app_id,
                instance: instance_key(&e.task_id),
                task_id: e.task_id,
                state: task_phase(&e.task_status),
                host: e.host.unwrap_or_default(),
                ip_addresses: ips(e.ip_addresses.as_deref()),
                host_ports: ports(e.ports.as_deref()),
            })
        }
        "health_status_changed_event" => {
            let e: wire::HealthStatusChangedEvent = json(event_type, data)?;
            match e.instance_id.or(e.task_id) {
                Some(id) => Decoded::Apply(ClusterEvent::TaskHealth {
                    app_id: e.app_id,
                    instance: instance_key(&id),
                    instance_or_task_id: id,
                    alive: Some(e.alive),
                }),
                None => Decoded::Refetch(vec![e.app_id]),
            }
        }
        "instance_health_changed_event" => {
            let e: wire::InstanceHealthChangedEvent = json(event_type, data)?;
            Decoded::Apply(ClusterEvent::TaskHealth {
                app_id: e.run_spec_id,
                instance: instance_key(&e.instance_id),
                instance_or_task_id: e.instance_id,
                alive: e.healthy,
            })
        }
        "app_terminated_event" => {
            let e: wire::AppTerminatedEvent = json(event_type, data)?;
            Decoded::Apply(ClusterEvent::AppTerminated { app_id: e.app_id })
        }
        "api_post_event" => {
            let e: wire::ApiPostEvent = json(event_type, data)?;
            let id = e.app_definition.map(|d| d.id).or_else(|| {
                e.uri
                    .as_deref()
                    .and_then(|u| u.strip_prefix("/v2/apps"))
                    .filter(|p| p.len() > 1)
                    .map(str::to_string)
            });
            Decoded::Refetch(id.into_iter().map(|id| normalize_id(&id)).collect())
        }
        "pod_created_event" => Decoded::RefetchAllPods,
        "pod_updated_event" | "pod_deleted_event" => {
            let e: wire::PodEvent = json(event_type, data)?;
            match e.uri.as_deref().and_then(super::pods::pod_id_of_uri) {
                Some(id) => Decoded::RefetchPods(vec![id]),
                None => Decoded::RefetchAllPods,
            }
        }
        "instance_changed_event" => {
            let e: wire::InstanceChangedEvent = json(event_type, data)?;
            Decoded::InstanceChanged {
                run_spec_id: normalize_id(&e.run_spec_id),
                instance: instance_key(&e.instance_id),
                ended: INSTANCE_ENDED.contains(&e.condition.as_str()),
            }
        }
        "deployment_success" | "deployment_failed" => {
            let e: wire::DeploymentEvent = json(event_type, data)?;
            // Pods' actions name `pod` instead of `app`; both are re-fetched by id.
            let mut apps: Vec<AppId> = e
                .plan
                .into_iter()
                .flat_map(|p| p.steps)
                .flat_map(|s| s.actions)
                .filter_map(|a| a.app.or(a.pod))
                .map(|id| normalize_id(&id))
                .collect();
            apps.sort();
            apps.dedup();
            Decoded::Refetch(apps)
        }
        _ => return Ok(None),
    }))
}

/// App ids are absolute paths; tolerate a missing leading slash.
pub(crate) fn normalize_id(id: &str) -> AppId {
    if id.starts_with('/') {
        id.to_string()
    } else {
        format!("/{id}")
    }
}

fn ips(list: Option<&[WireIp]>) -> Vec<IpAddr> {
    list.unwrap_or_default()
        .iter()
        .filter_map(|ip| ip.ip_address.parse().ok())
        .collect()
}

fn ports(list: Option<&[u32]>) -> Vec<u16> {
    list.unwrap_or_default()
        .iter()
        .filter_map(|p| u16::try_from(*p).ok())
        .collect()
}

/// `"udp,tcp"` → both; anything unknown (e.g. pods' `http`) counts as TCP.
pub(crate) fn protocols(p: Option<&str>) -> Vec<Proto> {
    let mut out: Vec<Proto> = p
        .unwrap_or("tcp")
        .split(',')
        .map(|s| match s.trim() {
            "udp" => Proto::Udp,
            _ => Proto::Tcp,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn network_of(app: &WireApp) -> Network {
    if let Some(mode) = app
        .networks
        .as_ref()
        .and_then(|n| n.first())
        .and_then(|n| n.mode.as_deref())
    {
        return match mode {
            "container" => Network::Container,
            "container/bridge" => Network::Bridge,
            _ => Network::Host,
        };
    }
    if app.ip_address.is_some() {
        return Network::Container;
    }
    match app
        .container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .and_then(|d| d.network.as_deref())
    {
        Some("BRIDGE") => Network::Bridge,
        Some("USER") => Network::Container,
        _ => Network::Host,
    }
}

fn port_mappings(app: &WireApp) -> Option<&[WirePortMapping]> {
    let c = app.container.as_ref()?;
    c.port_mappings
        .as_deref()
        .or_else(|| c.docker.as_ref().and_then(|d| d.port_mappings.as_deref()))
}

fn port_specs(app: &WireApp, network: Network) -> Vec<PortSpec> {
    match network {
        Network::Host => {
            if let Some(defs) = &app.port_definitions {
                return defs
                    .iter()
                    .map(|d| PortSpec {
                        name: d.name.clone(),
                        protocols: protocols(d.protocol.as_deref()),
                        consumes_host_port: true,
                        container_port: None,
                    })
                    .collect();
            }
            app.ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|_| PortSpec {
                    name: None,
                    protocols: vec![Proto::Tcp],
                    consumes_host_port: true,
                    container_port: None,
                })
                .collect()
        }
        Network::Bridge => port_mappings(app)
            .unwrap_or_default()
            .iter()
            .map(|m| PortSpec {
                name: m.name.clone(),
                protocols: protocols(m.protocol.as_deref()),
                // In bridge mode an unset hostPort is 0: a dynamic host port, still allocated.
                consumes_host_port: true,
                container_port: m.container_port.and_then(|p| u16::try_from(p).ok()),
            })
            .collect(),
        Network::Container => {
            if let Some(maps) = port_mappings(app) {
                return maps
                    .iter()
                    .map(|m| PortSpec {
                        name: m.name.clone(),
                        protocols: protocols(m.protocol.as_deref()),
                        // In container mode an unset hostPort means no host port at all.
                        consumes_host_port: m.host_port.is_some(),
                        container_port: m.container_port.and_then(|p| u16::try_from(p).ok()),
                    })
                    .collect();
            }
            // 1.4 IP-per-task: ports come from ipAddress.discovery.
            app.ip_address
                .as_ref()
                .and_then(|ip| ip.discovery.as_ref())
                .map(|d| {
                    d.ports
                        .iter()
                        .map(|p| PortSpec {
                            name: p.name.clone(),
                            protocols: protocols(p.protocol.as_deref()),
                            consumes_host_port: false,
                            container_port: p.number.and_then(|n| u16::try_from(n).ok()),
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
    }
}

fn task(t: &WireTask) -> Task {
    Task {
        id: t.id.clone(),
        instance: instance_key(&t.id),
        host: t.host.clone().unwrap_or_default(),
        // Tasks without `state` come from pre-0.15 servers, which list only active tasks.
        state: task_state(t.state.as_deref().unwrap_or("TASK_RUNNING")),
        ip_addresses: ips(t.ip_addresses.as_deref()),
        host_ports: ports(t.ports.as_deref()),
        health: t
            .health_check_results
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|r| r.alive)
            .collect(),
    }
}

/// Convert one app (with embedded tasks, if any).
pub fn app(w: &WireApp) -> App {
    let network = network_of(w);
    App {
        id: normalize_id(&w.id),
        network,
        ports: port_specs(w, network),
        health_checks: w.health_checks.as_ref().map_or(0, Vec::len),
        tasks: w
            .tasks
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(task)
            .collect(),
    }
}

/// An app's definition for a load balancer: ports with service ports, instances, labels
/// (label values that are not strings are skipped).
pub fn service_app(w: &WireApp) -> ServiceApp {
    let network = network_of(w);
    let ports = port_specs(w, network);
    let raw: Vec<Option<u32>> = match network {
        Network::Host => match &w.port_definitions {
            Some(defs) => defs.iter().map(|d| d.port).collect(),
            None => w
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|p| Some(*p))
                .collect(),
        },
        Network::Bridge | Network::Container => port_mappings(w)
            .unwrap_or_default()
            .iter()
            .map(|m| m.service_port)
            .collect(),
    };
    let service_ports: Vec<Option<u16>> = raw
        .into_iter()
        .map(|p| p.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0))
        .collect();
    ServiceApp {
        id: normalize_id(&w.id),
        service_ports: (0..ports.len())
            .map(|i| service_ports.get(i).copied().flatten())
            .collect(),
        ports,
        instances: w.instances.unwrap_or(0),
        labels: w
            .labels
            .iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect(),
    }
}

/// Parse `GET /v2/apps` (definitions only) for a load balancer; apps that fail to parse are
/// skipped with their error.
pub fn service_apps_response(body: &str) -> Result<(Vec<ServiceApp>, Vec<String>), DecodeError> {
    #[derive(serde::Deserialize)]
    struct Loose<'a> {
        #[serde(borrow)]
        apps: Vec<&'a serde_json::value::RawValue>,
    }
    let loose: Loose<'_> = serde_json::from_str(body).map_err(|source| DecodeError::Json {
        what: "/v2/apps".to_string(),
        source,
    })?;
    let mut apps = Vec::with_capacity(loose.apps.len());
    let mut skipped = Vec::new();
    for raw in loose.apps {
        match serde_json::from_str::<WireApp>(raw.get()) {
            Ok(w) => apps.push(service_app(&w)),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    Ok((apps, skipped))
}

/// Where the apps of a `/v2/apps` snapshot go, one at a time as they are parsed.
pub trait AppSink {
    /// One app, converted.
    fn app(&mut self, app: App);
    /// An app that could not be parsed: its id if that much was readable, and why.
    fn skipped(&mut self, id: Option<AppId>, error: String);
}

/// Collects everything (tests, small clusters).
#[derive(Debug, Default)]
pub struct CollectApps {
    pub apps: Vec<App>,
    pub skipped: Vec<String>,
}

impl AppSink for CollectApps {
    fn app(&mut self, app: App) {
        self.apps.push(app);
    }
    fn skipped(&mut self, _id: Option<AppId>, error: String) {
        self.skipped.push(error);
    }
}

/// Parse `GET /v2/apps?embed=apps.tasks` from a reader, handing each app to `sink` as soon
/// as its bytes are in: the body is never held whole, and each app is parsed from its own
/// slice so that one bad app is skipped, never fatal. A body without a complete `apps` array
/// is an error (a proxy's `{}` must not read as "no apps", a cut-off body as "fewer apps").
pub fn apps_stream(
    mut reader: impl std::io::Read,
    sink: &mut impl AppSink,
) -> Result<(), DecodeError> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    let mut splitter = AppsSplitter::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut each = |raw: &[u8]| match serde_json::from_slice::<WireApp>(raw) {
        Ok(w) => match embedded_app(&w) {
            Ok(a) => sink.app(a),
            Err(e) => sink.skipped(Some(normalize_id(&w.id)), e.to_string()),
        },
        Err(e) => {
            let id = serde_json::from_slice::<IdOnly>(raw)
                .ok()
                .map(|i| normalize_id(&i.id));
            sink.skipped(id, e.to_string());
        }
    };
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecodeError::Body(e.to_string())),
        };
        splitter.feed(&chunk[..n], &mut each);
    }
    splitter.finish()
}

/// Cuts the elements of the top-level `apps` array out of a JSON byte stream, chunk by
/// chunk, tracking only nesting and strings. Other top-level keys are skipped; each app's
/// bytes are handed over whole (and then parsed strictly).
#[derive(Debug, Default)]
struct AppsSplitter {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The last string seen at depth 1 (a key), up to 8 bytes.
    key: Vec<u8>,
    capturing_key: bool,
    /// Inside the `apps` array (depth 2).
    in_apps: bool,
    apps_done: bool,
    /// The app being collected (depth ≥ 3).
    app: Vec<u8>,
}

impl AppsSplitter {
    fn feed(&mut self, bytes: &[u8], each: &mut impl FnMut(&[u8])) {
        for &b in bytes {
            let collecting = self.in_apps && self.depth >= 3;
            if self.in_string {
                if collecting {
                    self.app.push(b);
                }
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    self.capturing_key = false;
                } else if self.capturing_key && self.key.len() < 8 {
                    self.key.push(b);
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    if self.depth == 1 {
                        self.key.clear();
                        self.capturing_key = true;
                    }
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == 2 && b == b'[' && self.key == b"apps" && !self.apps_done {
                        self.in_apps = true;
                    }
                }
                b'}' | b']' => {
                    if self.in_apps && self.depth == 3 {
                        self.app.push(b);
                        each(&self.app);
                        self.app.clear();
                        self.depth -= 1;
                        continue;
                    }
                    if self.in_apps && self.depth == 2 {
                        self.in_apps = false;
                        self.apps_done = true;
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                _ => {}
            }
            if self.in_apps && self.depth >= 3 {
                self.app.push(b);
            }
        }
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.apps_done && self.depth == 0 {
            Ok(())
        } else if self.apps_done || self.in_apps {
            Err(DecodeError::Body(
                "the /v2/apps body ends before its JSON does".into(),
            ))
        } else {
            Err(DecodeError::Body(
                "the /v2/apps body has no apps array".into(),
            ))
        }
    }
}

/// Parse a whole `GET /v2/apps?embed=apps.tasks` body (tests, fixtures).
pub fn apps_response(body: &str) -> Result<(Vec<App>, Vec<String>), DecodeError> {
    let mut all = CollectApps::default();
    apps_stream(body.as_bytes(), &mut all)?;
    Ok((all.apps, all.skipped))
}

/// Parse `GET /v2/apps/{id}?embed=app.tasks`.
pub fn app_response(body: &str) -> Result<App, DecodeError> {
    let r: wire::AppResponse = json("/v2/apps/{id}", body)?;
    embedded_app(&r.app)
}

/// An app from a response to `embed=…tasks`: Marathon then always sends `tasks` (`[]` for
/// none). Without it the app's tasks are unknown — a proxy that dropped the query, or not
/// Marathon — which must not read as "no tasks" (every record of the app would go).
fn embedded_app(w: &WireApp) -> Result<App, DecodeError> {
    if w.tasks.is_none() {
        return Err(DecodeError::Body(format!(
            "app {} has no \"tasks\" although they were asked for (embed=apps.tasks): its tasks are unknown",
            w.id
        )));
    }
    Ok(app(w))
}

/// Parse `GET /v2/leader` → `host:port`.
pub fn leader_response(body: &str) -> Result<String, DecodeError> {
    let r: wire::LeaderResponse = json("/v2/leader", body)?;
    Ok(r.leader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn read(rel: &str) -> String {
        std::fs::read_to_string(fixtures().join(rel)).expect("fixture present")
    }

    #[test]
    fn a_snapshot_without_apps_is_an_error_and_bad_apps_keep_their_id() {
        assert!(
            apps_response("{}").is_err(),
            "a proxy's {{}} is not an empty cluster"
        );
        assert!(apps_response(r#"{"message": "x"}"#).is_err());
        assert_eq!(
            apps_response(r#"{"apps": []}"#).map(|(a, _)| a.len()).ok(),
            Some(0)
        );
        let mut sink = CollectIds::default();
        apps_stream(
            r#"{"apps": [{"id": "/ok", "tasks": []}, {"id": "/bad", "tasks": "not a list"}, {"id": "/no-tasks"}], "x": 1}"#
                .as_bytes(),
            &mut sink,
        )
        .expect("parses");
        assert_eq!(sink.apps, ["/ok"]);
        assert_eq!(
            sink.skipped,
            [Some("/bad".to_string()), Some("/no-tasks".to_string())],
            "an app without its tasks is not an app without tasks"
        );
        assert!(apps_response("[]").is_err(), "not an object");
        assert!(
            apps_response(r#"{"apps": {}}"#).is_err(),
            "apps not an array"
        );
        assert!(app_response(r#"{"app": {"id": "/x"}}"#).is_err());
    }

    #[derive(Default)]
    struct CollectIds {
        apps: Vec<String>,
        skipped: Vec<Option<String>>,
    }

    impl AppSink for CollectIds {
        fn app(&mut self, app: App) {
            self.apps.push(app.id);
        }
        fn skipped(&mut self, id: Option<AppId>, _error: String) {
            self.skipped.push(id);
        }
    }

    #[test]
    fn every_event_fixture_decodes_or_is_skipped_cleanly() {
        let dir = fixtures().join("events");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("fixtures dir") {
            let path = entry.expect("entry").path();
            let data = std::fs::read_to_string(&path).expect("read");
            let v: serde_json::Value = serde_json::from_str(&data).expect("fixture is JSON");
            let ty = v["eventType"].as_str().expect("eventType");
            let decoded =
                decode_event(ty, &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_ne!(decoded, Received::Unknown, "{}", path.display());
            n += 1;
        }
        assert!(n >= 30, "only {n} fixtures");
    }

    #[test]
    fn status_update_real_capture() {
        let d = decode_event(
            "status_update_event",
            &read("events/status_update_event-TASK_RUNNING-real-capture.json"),
        )
        .expect("decodes");
        let Received::Model(Decoded::Apply(ClusterEvent::TaskStatus {
            state, host_ports, ..
        })) = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(state, TaskPhase::Active(TaskState::Running));
        assert_eq!(host_ports.len(), 1);
    }

    #[test]
    fn health_events_old_and_new_keys() {
        for f in [
            "events/health_status_changed_event.json",
            "events/health_status_changed_event-v1.3-taskId.json",
        ] {
            let d = decode_event("health_status_changed_event", &read(f)).expect("decodes");
            assert!(
                matches!(
                    d,
                    Received::Model(Decoded::Apply(ClusterEvent::TaskHealth {
                        alive: Some(_),
                        ..
                    }))
                ),
                "{f}: {d:?}"
            );
        }
    }

    #[test]
    fn api_post_refetches_app() {
        let d = decode_event("api_post_event", &read("events/api_post_event.json")).expect("ok");
        assert_eq!(d, Received::Model(Decoded::Refetch(vec!["/my-app".into()])));
    }

    #[test]
    fn malformed_and_unknown() {
        assert!(decode_event("status_update_event", "{not json").is_err());
        assert!(decode_event("status_update_event", r#"{"appId":1}"#).is_err());
        assert_eq!(
            decode_event("brand_new_event", "{}").expect("ok"),
            Received::Unknown
        );
    }

    #[test]
    fn terminal_states_end_tasks() {
        let d = decode_event(
            "status_update_event",
            &read("events/status_update_event-TASK_FAILED-real-capture.json"),
        )
        .expect("decodes");
        let Received::Model(Decoded::Apply(ClusterEvent::TaskStatus { state, .. })) = d else {
            panic!("{d:?}")
        };
        assert_eq!(state, TaskPhase::Ended);
        for s in TERMINAL_STATES {
            assert_eq!(task_phase(s), TaskPhase::Ended, "{s}");
        }
        assert_eq!(
            task_phase("TASK_STAGING"),
            TaskPhase::Active(TaskState::NotRunning("TASK_STAGING".into()))
        );
    }

    #[test]
    fn task_and_instance_ids_share_the_instance_key() {
        // 1.4–1.7: task `nginx.<uuid>`, instance `nginx.marathon-<uuid>`.
        assert_eq!(
            instance_key("nginx-green.marathon-3d4e5f60-0000-11e7-8888-0e2beceebfcc"),
            instance_key("nginx-green.3d4e5f60-0000-11e7-8888-0e2beceebfcc")
        );
        // 1.8+: task `<instance>._app.1`; a UUID in the app path does not count.
        let key = instance_key(
            "jobs_3d4e5f60-0000-11e7-8888-0e2beceebfcc_web.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c._app.1",
        );
        assert_eq!(
            key,
            instance_key("web.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c")
        );
        assert_eq!(
            key,
            Some(InstanceKey([
                0xc7, 0xc3, 0x11, 0xa4, 0xb6, 0x69, 0x11, 0xe6, 0xa4, 0x8f, 0x0e, 0xa4, 0xf4, 0xb1,
                0x77, 0x8c
            ]))
        );
        assert_ne!(
            key,
            instance_key("web.instance-C7C311A4-b669-11e6-a48f-0ea4f4b1778d")
        );
        assert_eq!(instance_key("web.nouuid"), None);
    }

    #[test]
    fn bridge_app_uses_host_ports_not_bridge_ip() {
        let (apps, skipped) = apps_response(&read(
            "marathon-lb/v2-apps-embed-tasks-1.5-bridge-named-port.json",
        ))
        .expect("parses");
        assert!(skipped.is_empty());
        let a = &apps[0];
        assert_eq!(a.network, Network::Bridge);
        assert_eq!(a.ports[0].name.as_deref(), Some("test"));
        assert_eq!(
            a.tasks.values().next().map(|t| t.host_ports.clone()),
            Some(vec![1565])
        );
    }

    #[test]
    fn every_rest_fixture_parses() {
        for f in [
            "marathon-lb/v2-apps-embed-tasks-1.5-bridge-named-port.json",
            "marathon-lb/v2-apps-embed-tasks-1.5-bridge-mesos-http-hc.json",
            "marathon-lb/v2-apps-embed-tasks-pre1.5-bridge-hc-results.json",
        ] {
            let (apps, skipped) = apps_response(&read(f)).expect(f);
            assert!(!apps.is_empty() && skipped.is_empty(), "{f}");
        }
        // Without embed=apps.tasks (definitions only): the load balancer's view.
        let (defs, skipped) =
            service_apps_response(&read("rest/v2-apps-list-legacy-ports.json")).expect("defs");
        assert!(!defs.is_empty() && skipped.is_empty());
        let pre15 = apps_response(&read(
            "marathon-lb/v2-apps-embed-tasks-pre1.5-bridge-hc-results.json",
        ))
        .expect("parses")
        .0;
        assert!(pre15.iter().all(|a| a.network == Network::Bridge));
        assert!(
            pre15
                .iter()
                .flat_map(|a| a.tasks.values())
                .all(|t| t.state == crate::cluster::TaskState::Running && !t.health.is_empty())
        );
        assert_eq!(
            leader_response(&read("rest/v2-leader-v1.4-docs.json")).expect("leader"),
            "127.0.0.1:8080"
        );
    }

    #[test]
    fn task_listings_and_pods_parse_or_are_harmless() {
        #[derive(serde::Deserialize)]
        struct Tasks {
            tasks: Vec<WireTask>,
        }
        for f in [
            "rest/v2-tasks-service-ports.json",
            "rest/v2-apps-id-tasks-group-path.json",
            "rest/v2-tasks-health-check-results-v1.4-docs.json",
        ] {
            let t: Tasks = serde_json::from_str(&read(f)).expect(f);
            assert!(!t.tasks.is_empty(), "{f}");
            assert!(t.tasks.iter().all(|t| !task(t).host.is_empty()), "{f}");
        }
        let hc: Tasks =
            serde_json::from_str(&read("rest/v2-tasks-health-check-results-v1.4-docs.json"))
                .expect("parses");
        assert!(hc.tasks.iter().any(|t| !task(t).health.is_empty()));
        // Pods are not apps: read as an app they publish no ports (and /v2/apps never lists them).
        for f in [
            "rest/v2-pod-definition-container-network.json",
            "definitions/pod-host-network-endpoints.json",
        ] {
            let w: WireApp = serde_json::from_str(&read(f)).expect(f);
            assert!(app(&w).ports.is_empty(), "{f}");
        }
        let info: serde_json::Value =
            serde_json::from_str(&read("rest/v2-info.json")).expect("info");
        assert!(info["leader"].is_string());
    }

    #[test]
    fn definitions_parse_with_the_right_network() {
        let cases = [
            (
                "definitions/app-container-network-ipv6-1.5-syntax.json",
                Network::Container,
            ),
            (
                "definitions/app-ip-per-task-discovery-1.4-syntax.json",
                Network::Container,
            ),
            (
                "definitions/app-host-named-port-health-readiness.json",
                Network::Host,
            ),
            (
                "definitions/app-bridge-fixed-hostport-1.4-syntax.json",
                Network::Bridge,
            ),
            ("rest/v2-app-definition-full.json", Network::Container),
        ];
        for (f, net) in cases {
            let w: WireApp = serde_json::from_str(&read(f)).expect(f);
            let a = app(&w);
            assert_eq!(a.network, net, "{f}");
            assert!(!a.ports.is_empty(), "{f}");
        }
        let w: WireApp = serde_json::from_str(&read(
            "definitions/app-ip-per-task-discovery-1.4-syntax.json",
        ))
        .expect("parses");
        assert!(app(&w).ports.iter().all(|p| !p.consumes_host_port));
    }
}
