//! The simulator's cluster and how it renders as Marathon 1.5+ JSON (the shapes of
//! `tests/fixtures/`).

use std::net::IpAddr;

use serde_json::{Value, json};

/// Networking of a simulated app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimNetwork {
    Host,
    Bridge,
    Container,
}

/// A port of a simulated app.
#[derive(Debug, Clone)]
pub struct SimPort {
    pub name: Option<String>,
    /// `tcp`, `udp` or `udp,tcp`.
    pub protocol: String,
    /// Container port (bridge and container networking).
    pub container_port: u16,
    /// Service port; 0 until the simulator assigns one (from 10000 up, as Marathon does).
    pub service_port: u16,
}

impl SimPort {
    pub fn tcp(name: Option<&str>, container_port: u16) -> Self {
        Self {
            name: name.map(str::to_string),
            protocol: "tcp".into(),
            container_port,
            service_port: 0,
        }
    }
    pub fn with_protocol(mut self, protocol: &str) -> Self {
        self.protocol = protocol.into();
        self
    }
}

/// A simulated app definition.
#[derive(Debug, Clone)]
pub struct SimApp {
    pub id: String,
    pub network: SimNetwork,
    pub ports: Vec<SimPort>,
    /// Number of Marathon HTTP health checks.
    pub health_checks: usize,
    pub version: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Desired instances; `None`: as many as there are tasks.
    pub instances: Option<u32>,
}

impl SimApp {
    pub fn new(id: &str, network: SimNetwork, ports: Vec<SimPort>) -> Self {
        Self {
            id: id.into(),
            network,
            ports,
            health_checks: 0,
            version: "2026-11-27T00:00:00.000Z".into(),
            labels: Default::default(),
            instances: None,
        }
    }
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
    pub fn with_instances(mut self, n: u32) -> Self {
        self.instances = Some(n);
        self
    }
    pub fn with_health_checks(mut self, n: usize) -> Self {
        self.health_checks = n;
        self
    }
    /// Marathon's safe path: `/prod/web` → `prod_web`.
    pub fn safe_path(&self) -> String {
        self.id.trim_start_matches('/').replace('/', "_")
    }
}

/// A simulated task.
#[derive(Debug, Clone)]
pub struct SimTask {
    pub id: String,
    pub instance_id: String,
    pub app_id: String,
    pub host: String,
    pub slave_id: String,
    pub state: String,
    pub ports: Vec<u16>,
    pub ip_addresses: Vec<IpAddr>,
    /// Result of every health check; empty before the first check ran.
    pub health: Vec<bool>,
}

fn ip_json(ips: &[IpAddr]) -> Value {
    Value::Array(
        ips.iter()
            .map(|ip| {
                json!({"ipAddress": ip.to_string(), "protocol": if ip.is_ipv4() { "IPv4" } else { "IPv6" }})
            })
            .collect(),
    )
}

pub fn now_iso() -> String {
    // Fixed-format timestamp; exact wall time does not matter to consumers.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("2026-11-27T{h:02}:{m:02}:{s:02}.000Z")
}

impl SimTask {
    pub fn to_json(&self, app: &SimApp) -> Value {
        let health: Vec<Value> = self
            .health
            .iter()
            .map(|alive| {
                json!({
                    "alive": alive, "consecutiveFailures": if *alive { 0 } else { 1 },
                    "firstSuccess": "2026-11-27T00:00:01.000Z",
                    "lastSuccess": if *alive { Value::from("2026-11-27T00:00:02.000Z") } else { Value::Null },
                    "lastFailure": if *alive { Value::Null } else { Value::from("2026-11-27T00:00:03.000Z") },
                    "lastFailureCause": Value::Null,
                    "instanceId": self.instance_id,
                })
            })
            .collect();
        json!({
            "appId": self.app_id, "id": self.id, "host": self.host, "slaveId": self.slave_id,
            "state": self.state, "stagedAt": "2026-11-27T00:00:00.000Z",
            "startedAt": "2026-11-27T00:00:01.000Z", "version": app.version,
            "ports": self.ports, "servicePorts": [], "ipAddresses": ip_json(&self.ip_addresses),
            "healthCheckResults": health, "localVolumes": [], "region": "local", "zone": "a", "role": "*",
        })
    }

    /// `status_update_event`, shaped like the real capture plus `ipAddresses` (0.14+).
    pub fn status_event(&self, app: &SimApp) -> Value {
        json!({
            "slaveId": self.slave_id, "taskId": self.id, "taskStatus": self.state, "message": "",
            "appId": self.app_id, "host": self.host, "ipAddresses": ip_json(&self.ip_addresses),
            "ports": self.ports, "version": app.version, "eventType": "status_update_event",
            "timestamp": now_iso(),
        })
    }
}

impl SimApp {
    /// The app definition (Marathon 1.5+ RAML shape).
    pub fn definition_json(&self) -> Value {
        let mut app = json!({
            "id": self.id, "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "disk": 0,
            "instances": self.instances.unwrap_or(1),
            "labels": self.labels, "version": self.version, "requirePorts": false,
            "versionInfo": {"lastScalingAt": self.version, "lastConfigChangeAt": self.version},
            "upgradeStrategy": {"maximumOverCapacity": 1, "minimumHealthCapacity": 1},
            "killSelection": "YOUNGEST_FIRST",
            "unreachableStrategy": {"inactiveAfterSeconds": 300, "expungeAfterSeconds": 600},
        });
        let health: Vec<Value> = (0..self.health_checks)
            .map(|i| {
                json!({"protocol": "HTTP", "path": format!("/health/{i}"), "portIndex": 0,
                       "gracePeriodSeconds": 5, "intervalSeconds": 10, "timeoutSeconds": 2,
                       "maxConsecutiveFailures": 3, "ignoreHttp1xx": false})
            })
            .collect();
        app["healthChecks"] = Value::Array(health);
        match self.network {
            SimNetwork::Host => {
                app["networks"] = json!([{"mode": "host"}]);
                app["portDefinitions"] = Value::Array(
                    self.ports
                        .iter()
                        .map(|p| {
                            let mut d = json!({"port": p.service_port, "protocol": p.protocol, "labels": {}});
                            if let Some(n) = &p.name {
                                d["name"] = json!(n);
                            }
                            d
                        })
                        .collect(),
                );
            }
            SimNetwork::Bridge | SimNetwork::Container => {
                app["networks"] = if self.network == SimNetwork::Bridge {
                    json!([{"mode": "container/bridge"}])
                } else {
                    json!([{"mode": "container", "name": "dcos"}])
                };
                let maps: Vec<Value> = self
                    .ports
                    .iter()
                    .map(|p| {
                        let mut m = json!({"containerPort": p.container_port, "servicePort": p.service_port,
                                           "protocol": p.protocol, "labels": {}});
                        if self.network == SimNetwork::Bridge {
                            m["hostPort"] = json!(0);
                        }
                        if let Some(n) = &p.name {
                            m["name"] = json!(n);
                        }
                        m
                    })
                    .collect();
                app["container"] = json!({"type": "DOCKER", "volumes": [],
                    "docker": {"image": "nginx:alpine", "forcePullImage": false, "privileged": false, "parameters": []},
                    "portMappings": maps});
            }
        }
        app
    }

    /// The app with counts and embedded tasks (`embed=apps.tasks`).
    pub fn with_tasks_json(&self, tasks: &[&SimTask]) -> Value {
        let mut app = self.definition_json();
        let running = tasks.iter().filter(|t| t.state == "TASK_RUNNING").count();
        let healthy = tasks
            .iter()
            .filter(|t| !t.health.is_empty() && t.health.iter().all(|h| *h))
            .count();
        app["instances"] = json!(self.instances.unwrap_or(tasks.len() as u32));
        app["tasksStaged"] = json!(0);
        app["tasksRunning"] = json!(running);
        app["tasksHealthy"] = json!(healthy);
        app["tasksUnhealthy"] = json!(
            tasks
                .iter()
                .filter(|t| t.health.iter().any(|h| !*h))
                .count()
        );
        app["deployments"] = json!([]);
        app["tasks"] = Value::Array(tasks.iter().map(|t| t.to_json(self)).collect());
        app
    }
}
