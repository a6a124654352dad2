//! Marathon's JSON wire format, as real Marathon versions (0.11 … 1.10) send it.
//!
//! Only this module and the simulator know these shapes. Every field is optional or defaulted
//! because Marathon omitted empty arrays before 1.6 and renamed fields across versions
//! (real payloads of each era are in `tests/fixtures/`; its README notes where Marathon's docs
//! and code differ). Conversion into the domain model lives in [`crate::marathon::convert`].

use serde::Deserialize;

/// `GET /v2/apps/{id}?embed=app.tasks`.
#[derive(Debug, Deserialize)]
pub struct AppResponse {
    pub app: WireApp,
}

/// `GET /v2/leader`.
#[derive(Debug, Deserialize)]
pub struct LeaderResponse {
    pub leader: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireApp {
    pub id: String,
    /// 1.5+: `[{mode: host|container|container/bridge, name?}]`.
    #[serde(default)]
    pub networks: Option<Vec<WireNetwork>>,
    /// 1.0+: host-mode port metadata.
    #[serde(default)]
    pub port_definitions: Option<Vec<WirePortDefinition>>,
    /// ≤1.4: bare service ports (deprecated by `portDefinitions`).
    #[serde(default)]
    pub ports: Option<Vec<u32>>,
    #[serde(default)]
    pub container: Option<WireContainer>,
    /// ≤1.4 IP-per-task; `null` on apps without it.
    #[serde(default)]
    pub ip_address: Option<WireIpAddress>,
    #[serde(default)]
    pub health_checks: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub tasks: Option<Vec<WireTask>>,
    /// Free-form `string → string`; marathon-lb's `HAPROXY_*` labels live here.
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Desired number of instances.
    #[serde(default)]
    pub instances: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct WireNetwork {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WirePortDefinition {
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireContainer {
    /// 1.5+ location of the port mappings.
    #[serde(default)]
    pub port_mappings: Option<Vec<WirePortMapping>>,
    #[serde(default)]
    pub docker: Option<WireDocker>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireDocker {
    /// ≤1.4: `BRIDGE`, `HOST`, `USER`, `NONE`.
    #[serde(default)]
    pub network: Option<String>,
    /// ≤1.4 location of the port mappings.
    #[serde(default)]
    pub port_mappings: Option<Vec<WirePortMapping>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WirePortMapping {
    #[serde(default)]
    pub container_port: Option<u32>,
    /// The port a load balancer exposes the app on (10000–20000 when Marathon picks it).
    #[serde(default)]
    pub service_port: Option<u32>,
    #[serde(default)]
    pub host_port: Option<u32>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WireIpAddress {
    #[serde(default)]
    pub discovery: Option<WireDiscovery>,
}

#[derive(Debug, Deserialize)]
pub struct WireDiscovery {
    #[serde(default)]
    pub ports: Vec<WireDiscoveryPort>,
}

#[derive(Debug, Deserialize)]
pub struct WireDiscoveryPort {
    #[serde(default)]
    pub number: Option<u32>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireTask {
    pub id: String,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// Missing before 0.15: such tasks are listed only while active, so treat as running.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub ports: Option<Vec<u32>>,
    #[serde(default)]
    pub ip_addresses: Option<Vec<WireIp>>,
    #[serde(default)]
    pub health_check_results: Option<Vec<WireHealthResult>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireIp {
    pub ip_address: String,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WireHealthResult {
    #[serde(default)]
    pub alive: bool,
}

/// `status_update_event`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdateEvent {
    pub app_id: String,
    pub task_id: String,
    pub task_status: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub ports: Option<Vec<u32>>,
    #[serde(default)]
    pub ip_addresses: Option<Vec<WireIp>>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// `health_status_changed_event` (`instanceId` since 1.4, `taskId` before).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatusChangedEvent {
    pub app_id: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub task_id: Option<String>,
    pub alive: bool,
}

/// `instance_health_changed_event` (1.4+); `healthy` may be `null`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceHealthChangedEvent {
    pub instance_id: String,
    pub run_spec_id: String,
    #[serde(default)]
    pub healthy: Option<bool>,
}

/// `app_terminated_event`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppTerminatedEvent {
    pub app_id: String,
}

/// `api_post_event`: only `appDefinition.id` matters; the app is re-fetched.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiPostEvent {
    #[serde(default)]
    pub app_definition: Option<IdOnly>,
    #[serde(default)]
    pub uri: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct IdOnly {
    pub id: String,
}

/// `deployment_success` / `deployment_failed`: the plan names the affected apps (light format
/// since 1.5.9; older servers send only `id`).
#[derive(Debug, Deserialize)]
pub struct DeploymentEvent {
    #[serde(default)]
    pub plan: Option<WirePlan>,
}

#[derive(Debug, Deserialize)]
pub struct WirePlan {
    #[serde(default)]
    pub steps: Vec<WireStep>,
}

#[derive(Debug, Deserialize)]
pub struct WireStep {
    #[serde(default)]
    pub actions: Vec<WireAction>,
}

#[derive(Debug, Deserialize)]
pub struct WireAction {
    #[serde(default)]
    pub app: Option<String>,
    /// Set instead of `app` when the action is about a pod.
    #[serde(default)]
    pub pod: Option<String>,
}

/// `pod_created_event`, `pod_updated_event`, `pod_deleted_event`: `{clientIp, uri}` only.
#[derive(Debug, Deserialize)]
pub struct PodEvent {
    #[serde(default)]
    pub uri: Option<String>,
}

/// `instance_changed_event` (1.4+): no ports, no addresses.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceChangedEvent {
    pub instance_id: String,
    pub run_spec_id: String,
    pub condition: String,
}
