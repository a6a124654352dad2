//! Simulated pods, in the shapes Marathon's RAML defines (`types/pod.raml`,
//! `types/podStatus.raml`) and `raml/PodStatusConversion.scala` writes: `GET /v2/pods`,
//! `GET /v2/pods/::status`, `GET /v2/pods/{id}::status`, and the events a pod's life sends
//! (`pod_created_event` with the create request's URI `/v2/pods`, `pod_updated_event`,
//! `pod_deleted_event`, per-container `status_update_event`, `instance_changed_event`,
//! `instance_health_changed_event`, `app_terminated_event`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::model::now_iso;
use super::{Cluster, SimNetwork, Simulator, lock};

/// An endpoint of a pod container (`types/network.raml` `Endpoint`).
#[derive(Debug, Clone)]
pub struct SimEndpoint {
    pub name: String,
    pub container_port: Option<u16>,
    /// `Some(0)`: a dynamic host port; `None`: no host port.
    pub host_port: Option<u16>,
    /// `tcp`, `udp`, `http` …
    pub protocol: Vec<String>,
}

impl SimEndpoint {
    /// A TCP endpoint on a dynamic host port (host networking).
    pub fn host(name: &str) -> Self {
        Self {
            name: name.into(),
            container_port: None,
            host_port: Some(0),
            protocol: vec!["tcp".into()],
        }
    }
    /// A TCP endpoint on a container port, without a host port (container networking).
    pub fn container(name: &str, port: u16) -> Self {
        Self {
            name: name.into(),
            container_port: Some(port),
            host_port: None,
            protocol: vec!["tcp".into()],
        }
    }
    pub fn with_protocols(mut self, protocols: &[&str]) -> Self {
        self.protocol = protocols.iter().map(|p| p.to_string()).collect();
        self
    }
}

/// A container of a pod.
#[derive(Debug, Clone)]
pub struct SimContainer {
    pub name: String,
    pub endpoints: Vec<SimEndpoint>,
    /// An HTTP health check on its first endpoint.
    pub health_check: bool,
}

impl SimContainer {
    pub fn new(name: &str, endpoints: Vec<SimEndpoint>) -> Self {
        Self {
            name: name.into(),
            endpoints,
            health_check: false,
        }
    }
    pub fn with_health_check(mut self) -> Self {
        self.health_check = true;
        self
    }
}

/// A simulated pod definition.
#[derive(Debug, Clone)]
pub struct SimPod {
    pub id: String,
    pub network: SimNetwork,
    pub containers: Vec<SimContainer>,
    pub labels: BTreeMap<String, String>,
    pub instances: u32,
    pub version: String,
    /// Its status is served malformed (`instances` not an array), to test parse failures.
    pub malformed: bool,
}

impl SimPod {
    pub fn new(id: &str, network: SimNetwork, containers: Vec<SimContainer>) -> Self {
        Self {
            id: id.into(),
            network,
            containers,
            labels: BTreeMap::new(),
            instances: 1,
            version: "2026-11-27T00:00:00.000Z".into(),
            malformed: false,
        }
    }

    /// Marathon's safe path: `/prod/db` → `prod_db`.
    pub fn safe_path(&self) -> String {
        self.id.trim_start_matches('/').replace('/', "_")
    }

    /// The `Pod` definition as Marathon echoes it.
    pub fn spec_json(&self) -> Value {
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let endpoints: Vec<Value> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let mut v = json!({"name": e.name, "protocol": e.protocol, "labels": {}});
                        if let Some(p) = e.container_port {
                            v["containerPort"] = json!(p);
                        }
                        if let Some(p) = e.host_port {
                            v["hostPort"] = json!(p);
                        }
                        v
                    })
                    .collect();
                let mut v = json!({
                    "name": c.name,
                    "exec": {"command": {"shell": "sleep 1000"}},
                    "resources": {"cpus": 0.1, "mem": 32, "disk": 0, "gpus": 0},
                    "endpoints": endpoints,
                });
                if let (true, Some(e)) = (c.health_check, c.endpoints.first()) {
                    v["healthCheck"] = json!({
                        "http": {"endpoint": e.name, "path": "/health", "scheme": "HTTP"},
                        "gracePeriodSeconds": 5, "intervalSeconds": 10, "maxConsecutiveFailures": 3,
                        "timeoutSeconds": 2, "delaySeconds": 15,
                    });
                }
                v
            })
            .collect();
        let networks = match self.network {
            SimNetwork::Host => json!([{"mode": "host"}]),
            SimNetwork::Bridge => json!([{"mode": "container/bridge", "labels": {}}]),
            SimNetwork::Container => json!([{"name": "dcos", "mode": "container", "labels": {}}]),
        };
        json!({
            "id": self.id, "labels": self.labels, "version": self.version,
            "containers": containers, "networks": networks, "volumes": [],
            "scaling": {"kind": "fixed", "instances": self.instances},
            "scheduling": {
                "backoff": {"backoff": 1, "backoffFactor": 1.15, "maxLaunchDelay": 300},
                "upgrade": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
                "placement": {"constraints": [], "acceptedResourceRoles": []},
            },
            "executorResources": {"cpus": 0.1, "mem": 32, "disk": 10},
            "role": "*",
        })
    }

    /// `PodStatus` with these instances.
    pub fn status_json(&self, instances: &[&SimPodInstance]) -> Value {
        if self.malformed {
            return json!({"id": self.id, "spec": self.spec_json(), "status": "STABLE",
                          "instances": "not an array"});
        }
        let stable = instances.len() as u32 >= self.instances
            && instances.iter().all(|i| i.state(self) == "STABLE");
        json!({
            "id": self.id, "spec": self.spec_json(),
            "status": if stable { "STABLE" } else { "DEGRADED" },
            "statusSince": "2026-11-27T00:00:00.000Z",
            "instances": instances.iter().map(|i| i.to_json(self)).collect::<Vec<_>>(),
            "terminationHistory": [],
            "lastUpdated": now_iso(), "lastChanged": now_iso(),
        })
    }
}

/// One container of a running instance.
#[derive(Debug, Clone)]
pub struct SimContainerState {
    pub name: String,
    /// The Mesos task id: `<safe path>.instance-<uuid>.<container>`.
    pub task_id: String,
    pub status: String,
    /// Allocated host port of each endpoint that has one, by endpoint name.
    pub allocated: Vec<(String, u16)>,
}

/// A simulated pod instance.
#[derive(Debug, Clone)]
pub struct SimPodInstance {
    pub id: String,
    pub pod_id: String,
    pub agent: String,
    pub agent_id: String,
    /// Container-network addresses.
    pub ips: Vec<IpAddr>,
    pub containers: Vec<SimContainerState>,
    /// Health of the containers with health checks; `None`: not reported yet.
    pub healthy: Option<bool>,
}

impl SimPodInstance {
    fn state(&self, pod: &SimPod) -> &'static str {
        let checked = pod.containers.iter().any(|c| c.health_check);
        if checked && self.healthy != Some(true) {
            "DEGRADED"
        } else {
            "STABLE"
        }
    }

    /// `PodInstanceStatus`.
    pub fn to_json(&self, pod: &SimPod) -> Value {
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let spec = pod.containers.iter().find(|s| s.name == c.name);
                let checked = spec.is_some_and(|s| s.health_check);
                // Marathon lists endpoints with a host port first, then the others.
                let mut endpoints: Vec<Value> = c
                    .allocated
                    .iter()
                    .map(|(name, port)| json!({"name": name, "allocatedHostPort": port}))
                    .collect();
                endpoints.extend(
                    spec.iter()
                        .flat_map(|s| &s.endpoints)
                        .filter(|e| e.host_port.is_none())
                        .map(|e| json!({"name": e.name})),
                );
                let mut conditions = Vec::new();
                if checked {
                    let health_endpoint = spec.and_then(|s| s.endpoints.first()).map(|e| &e.name);
                    if let Some(healthy) = self.healthy {
                        for e in &mut endpoints {
                            if Some(&e["name"]) == health_endpoint.map(|n| json!(n)).as_ref() {
                                e["healthy"] = json!(healthy);
                            }
                        }
                    }
                    conditions.push(json!({
                        "name": "healthy", "lastChanged": now_iso(), "lastUpdated": now_iso(),
                        "value": self.healthy.unwrap_or(false).to_string(),
                        "reason": if self.healthy.is_some() { "health-reported-by-mesos" } else { "health-unreported-by-mesos" },
                    }));
                }
                json!({
                    "name": c.name, "status": c.status, "statusSince": "2026-11-27T00:00:01.000Z",
                    "containerId": c.task_id, "endpoints": endpoints, "conditions": conditions,
                    "resources": {"cpus": 0.1, "mem": 32, "disk": 0, "gpus": 0},
                    "lastUpdated": now_iso(), "lastChanged": now_iso(),
                })
            })
            .collect();
        let networks = match pod.network {
            SimNetwork::Container => {
                json!([{"name": "dcos", "addresses": self.ips.iter().map(IpAddr::to_string).collect::<Vec<_>>()}])
            }
            // Host and bridge: Mesos reports the agent's address.
            _ => match self.agent.parse::<IpAddr>() {
                Ok(ip) => json!([{"addresses": [ip.to_string()]}]),
                Err(_) => json!([]),
            },
        };
        json!({
            "id": self.id, "status": self.state(pod), "statusSince": "2026-11-27T00:00:01.000Z",
            "agentHostname": self.agent, "agentId": self.agent_id, "agentRegion": "local", "agentZone": "a",
            "resources": {"cpus": 0.3, "mem": 96, "disk": 10, "gpus": 0},
            "networks": networks, "containers": containers,
            "specReference": format!("/v2/pods{}::versions/{}", pod.id, pod.version),
            "localVolumes": [], "lastUpdated": now_iso(), "lastChanged": now_iso(), "role": "*",
        })
    }

    /// `status_update_event` of one container (`appId` is the pod id).
    fn status_event(&self, c: &SimContainerState, status: &str, version: &str) -> Value {
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| json!({"ipAddress": ip.to_string(), "protocol": if ip.is_ipv4() { "IPv4" } else { "IPv6" }}))
            .collect();
        json!({
            "slaveId": self.agent_id, "taskId": c.task_id, "taskStatus": status, "message": "",
            "appId": self.pod_id, "host": self.agent, "ipAddresses": ips,
            "ports": c.allocated.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            "version": version, "eventType": "status_update_event", "timestamp": now_iso(),
        })
    }

    fn changed_event(&self, condition: &str, version: &str) -> Value {
        json!({
            "instanceId": self.id, "condition": condition, "runSpecId": self.pod_id,
            "agentId": self.agent_id, "host": self.agent, "runSpecVersion": version,
            "timestamp": now_iso(), "eventType": "instance_changed_event",
        })
    }
}

/// The pods' REST routes; `None` for any other path.
pub(crate) fn route(cluster: &Cluster, path: &str) -> Option<(u16, Value)> {
    let instances_of = |id: &str| -> Vec<&SimPodInstance> {
        cluster
            .pod_instances
            .values()
            .filter(|i| i.pod_id == id)
            .collect()
    };
    let rest = path.strip_prefix("/v2/pods")?;
    let missing = |id: &str| {
        (
            404,
            json!({"message": format!("pod with {id} does not exist")}),
        )
    };
    Some(match rest {
        "" | "/" => (
            200,
            Value::Array(cluster.pods.values().map(SimPod::spec_json).collect()),
        ),
        "/::status" => (
            200,
            Value::Array(
                cluster
                    .pods
                    .values()
                    .map(|p| p.status_json(&instances_of(&p.id)))
                    .collect(),
            ),
        ),
        _ => match rest.strip_suffix("::status") {
            Some(id) => match cluster.pods.get(id) {
                Some(p) => (200, p.status_json(&instances_of(id))),
                None => missing(id),
            },
            None => match cluster.pods.get(rest) {
                Some(p) => (200, p.spec_json()),
                None => missing(rest),
            },
        },
    })
}

impl Simulator {
    /// Define a pod (`POST /v2/pods`: `pod_created_event` with URI `/v2/pods`, as Marathon
    /// sends it; `PUT` of a known pod: `pod_updated_event`). Instances are started separately.
    pub fn add_pod(&self, pod: SimPod) {
        let existed = lock(&self.node.shared.cluster)
            .pods
            .insert(pod.id.clone(), pod.clone())
            .is_some();
        let (kind, uri) = if existed {
            ("pod_updated_event", format!("/v2/pods{}", pod.id))
        } else {
            ("pod_created_event", "/v2/pods".to_string())
        };
        self.emit(
            kind,
            json!({"clientIp": "127.0.0.1", "uri": uri, "eventType": kind, "timestamp": now_iso()}),
        );
    }

    /// Start an instance of `pod_id` on agent `host`: every container TASK_RUNNING, host ports
    /// allocated from 31000 up (or `host_ports`, in endpoint order), `container_ips` for
    /// container networking. One `status_update_event` per container, then
    /// `instance_changed_event`. Health checks start unreported (not healthy).
    pub fn start_pod_instance(
        &self,
        pod_id: &str,
        host: &str,
        container_ips: &[IpAddr],
        host_ports: Option<Vec<u16>>,
    ) -> Option<String> {
        let uuid = self.next_uuid();
        let n = self.node.shared.counter.fetch_add(1, Ordering::Relaxed);
        let (instance, version) = {
            let mut cluster = lock(&self.node.shared.cluster);
            let pod = cluster.pods.get(pod_id)?.clone();
            let id = format!("{}.instance-{uuid}", pod.safe_path());
            let mut given = host_ports.unwrap_or_default().into_iter();
            let mut next = 31000 + (n % 2000) as u16 * 8;
            let containers = pod
                .containers
                .iter()
                .map(|c| SimContainerState {
                    name: c.name.clone(),
                    task_id: format!("{id}.{}", c.name),
                    status: "TASK_RUNNING".into(),
                    allocated: c
                        .endpoints
                        .iter()
                        .filter_map(|e| {
                            let fixed = e.host_port?;
                            let port = given.next().unwrap_or(if fixed != 0 {
                                fixed
                            } else {
                                next += 1;
                                next - 1
                            });
                            Some((e.name.clone(), port))
                        })
                        .collect(),
                })
                .collect();
            let instance = SimPodInstance {
                id,
                pod_id: pod_id.into(),
                agent: host.into(),
                agent_id: "a1b2c3d4-0000-4000-8000-000000000000-S1".into(),
                ips: match pod.network {
                    SimNetwork::Container => container_ips.to_vec(),
                    _ => Vec::new(),
                },
                containers,
                healthy: None,
            };
            cluster.pod_order.insert(instance.id.clone(), n);
            cluster
                .pod_instances
                .insert(instance.id.clone(), instance.clone());
            (instance, pod.version)
        };
        for c in &instance.containers {
            self.emit(
                "status_update_event",
                instance.status_event(c, "TASK_RUNNING", &version),
            );
        }
        self.emit(
            "instance_changed_event",
            instance.changed_event("Running", &version),
        );
        Some(instance.id)
    }

    /// Kill an instance: TASK_KILLED for each container, `instance_changed_event` Killed, and
    /// it is gone from the status.
    pub fn kill_pod_instance(&self, instance_id: &str) -> bool {
        let removed = {
            let mut cluster = lock(&self.node.shared.cluster);
            cluster.pod_order.remove(instance_id);
            let i = cluster.pod_instances.remove(instance_id);
            i.map(|i| {
                let version = cluster
                    .pods
                    .get(&i.pod_id)
                    .map(|p| p.version.clone())
                    .unwrap_or_default();
                (i, version)
            })
        };
        let Some((instance, version)) = removed else {
            return false;
        };
        for c in &instance.containers {
            self.emit(
                "status_update_event",
                instance.status_event(c, "TASK_KILLED", &version),
            );
        }
        self.emit(
            "instance_changed_event",
            instance.changed_event("Killed", &version),
        );
        true
    }

    /// Scale a pod to `n` instances (`PUT /v2/pods/{id}`: `pod_updated_event`), starting new
    /// ones on `host` or killing the newest. Returns the instance ids after scaling.
    pub fn scale_pod(
        &self,
        pod_id: &str,
        n: usize,
        host: &str,
        container_ips: &[IpAddr],
    ) -> Vec<String> {
        let Some(mut pod) = lock(&self.node.shared.cluster).pods.get(pod_id).cloned() else {
            return Vec::new();
        };
        pod.instances = n as u32;
        self.add_pod(pod);
        let mut current = self.pod_instance_ids(pod_id);
        while current.len() < n {
            match self.start_pod_instance(pod_id, host, container_ips, None) {
                Some(id) => current.push(id),
                None => break,
            }
        }
        while current.len() > n {
            if let Some(id) = current.pop() {
                self.kill_pod_instance(&id);
            }
        }
        self.pod_instance_ids(pod_id)
    }

    /// Set the health of an instance's checked containers; emits
    /// `instance_health_changed_event` when it flips (Mesos-run checks, as pods use).
    pub fn set_pod_health(&self, instance_id: &str, healthy: bool) -> bool {
        let changed = {
            let mut cluster = lock(&self.node.shared.cluster);
            let Some(i) = cluster.pod_instances.get_mut(instance_id) else {
                return false;
            };
            let before = i.healthy.replace(healthy);
            (before != Some(healthy)).then(|| i.pod_id.clone())
        };
        if let Some(pod_id) = changed {
            self.emit(
                "instance_health_changed_event",
                json!({"instanceId": instance_id, "runSpecId": pod_id, "healthy": healthy,
                       "runSpecVersion": "2026-11-27T00:00:00.000Z", "timestamp": now_iso(),
                       "eventType": "instance_health_changed_event"}),
            );
        }
        true
    }

    /// Delete a pod (`DELETE /v2/pods/{id}`): `pod_deleted_event`, its instances killed, then
    /// `app_terminated_event` (Marathon sends it for pods too).
    pub fn remove_pod(&self, pod_id: &str) -> bool {
        if lock(&self.node.shared.cluster)
            .pods
            .remove(pod_id)
            .is_none()
        {
            return false;
        }
        self.emit(
            "pod_deleted_event",
            json!({"clientIp": "127.0.0.1", "uri": format!("/v2/pods{pod_id}"),
                   "eventType": "pod_deleted_event", "timestamp": now_iso()}),
        );
        for id in self.pod_instance_ids(pod_id) {
            let removed = {
                let mut cluster = lock(&self.node.shared.cluster);
                cluster.pod_order.remove(&id);
                cluster.pod_instances.remove(&id)
            };
            if let Some(i) = removed {
                for c in &i.containers {
                    self.emit(
                        "status_update_event",
                        i.status_event(c, "TASK_KILLED", "2026-11-27T00:00:00.000Z"),
                    );
                }
            }
        }
        self.emit(
            "app_terminated_event",
            json!({"appId": pod_id, "eventType": "app_terminated_event", "timestamp": now_iso()}),
        );
        true
    }

    /// Serve this pod's status malformed (or well-formed again); no event.
    pub fn malform_pod(&self, pod_id: &str, on: bool) -> bool {
        match lock(&self.node.shared.cluster).pods.get_mut(pod_id) {
            Some(p) => {
                p.malformed = on;
                true
            }
            None => false,
        }
    }

    /// The ids of a pod's instances, oldest first.
    pub fn pod_instance_ids(&self, pod_id: &str) -> Vec<String> {
        let cluster = lock(&self.node.shared.cluster);
        let mut v: Vec<(u64, String)> = cluster
            .pod_instances
            .values()
            .filter(|i| i.pod_id == pod_id)
            .map(|i| {
                (
                    cluster.pod_order.get(&i.id).copied().unwrap_or(0),
                    i.id.clone(),
                )
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// A pod's instances.
    pub fn pod_instances(&self, pod_id: &str) -> Vec<SimPodInstance> {
        let ids = self.pod_instance_ids(pod_id);
        let cluster = lock(&self.node.shared.cluster);
        ids.iter()
            .filter_map(|id| cluster.pod_instances.get(id).cloned())
            .collect()
    }
}
