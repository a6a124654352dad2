//! Marathon pods (1.4+): the `PodStatus` wire shape and its conversion into the domain model.
//!
//! The shapes follow Marathon's RAML (`types/podStatus.raml`, `types/pod.raml`,
//! `types/network.raml`) and its writer (`raml/PodStatusConversion.scala`); Marathon ships no
//! captured example, so `tests/fixtures/rest/v2-pods-status-documented-shape.json` is built from
//! those definitions. Every field is optional or defaulted, as for apps.
//!
//! A pod becomes an ordinary [`App`]: one [`Task`] per *instance* (its id is the instance id, so
//! task labels and instance keys work unchanged), one [`PortSpec`] per endpoint in spec order,
//! and the pod's network mode. The zone builder, clash handling, fingerprints and fail-static
//! resyncs then apply to pods exactly as to apps.

use serde::Deserialize;

use super::convert::{DecodeError, instance_key, normalize_id, protocols};
use crate::cluster::{App, AppId, Network, PortSpec, Proto, Task, TaskState, Tasks};

/// `GET /v2/pods/{id}::status` (and each element of `GET /v2/pods/::status`).
#[derive(Debug, Deserialize)]
pub struct WirePodStatus {
    pub id: String,
    /// The latest pod definition.
    #[serde(default)]
    pub spec: Option<WirePod>,
    #[serde(default)]
    pub instances: Option<Vec<WirePodInstance>>,
}

/// `Pod` (`types/pod.raml`): only what DNS needs.
#[derive(Debug, Default, Deserialize)]
pub struct WirePod {
    #[serde(default)]
    pub containers: Option<Vec<WirePodContainer>>,
    /// `[{mode: host|container|container/bridge, name?}]`; omitted when empty (host).
    #[serde(default)]
    pub networks: Option<Vec<WirePodNetwork>>,
}

#[derive(Debug, Deserialize)]
pub struct WirePodNetwork {
    /// RAML default: `container`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// `PodContainer`: its name, endpoints and whether it has a health check.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WirePodContainer {
    pub name: String,
    #[serde(default)]
    pub endpoints: Option<Vec<WireEndpoint>>,
    #[serde(default)]
    pub health_check: Option<serde_json::Value>,
}

/// `Endpoint` (`types/network.raml`). Pods have no service ports.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireEndpoint {
    pub name: String,
    /// Container networking; 0 means "the allocated host port".
    #[serde(default)]
    pub container_port: Option<u32>,
    /// Present (0 = dynamic) when the endpoint takes a host port.
    #[serde(default)]
    pub host_port: Option<u32>,
    /// An array: `["tcp"]`, `["udp", "tcp"]`, `["http"]`.
    #[serde(default)]
    pub protocol: Option<Vec<String>>,
}

/// `PodInstanceStatus`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WirePodInstance {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub agent_hostname: Option<String>,
    #[serde(default)]
    pub networks: Option<Vec<WireNetworkStatus>>,
    #[serde(default)]
    pub containers: Option<Vec<WireContainerStatus>>,
}

/// `NetworkStatus`: the addresses Mesos reported for one network.
#[derive(Debug, Deserialize)]
pub struct WireNetworkStatus {
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
}

/// `ContainerStatus`.
#[derive(Debug, Deserialize)]
pub struct WireContainerStatus {
    pub name: String,
    /// A Mesos task state name (`TASK_RUNNING` …).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub endpoints: Option<Vec<WireEndpointStatus>>,
    #[serde(default)]
    pub conditions: Option<Vec<WireCondition>>,
}

/// `ContainerEndpointStatus`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireEndpointStatus {
    pub name: String,
    #[serde(default)]
    pub allocated_host_port: Option<u32>,
    #[serde(default)]
    pub healthy: Option<bool>,
}

/// `StatusCondition`: the one used here is `{name: "healthy", value: "true"|"false"}`.
#[derive(Debug, Deserialize)]
pub struct WireCondition {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
}

fn network_of(spec: &WirePod) -> Network {
    let mode = spec
        .networks
        .as_deref()
        .and_then(<[WirePodNetwork]>::first)
        .map(|n| n.mode.as_deref().unwrap_or("container"));
    match mode {
        Some("container") => Network::Container,
        Some("container/bridge") => Network::Bridge,
        // No networks at all is Marathon's default, host networking.
        _ => Network::Host,
    }
}

/// `["tcp"]`, `["udp","tcp"]`; `http` (and anything else) means TCP; none given means TCP.
fn endpoint_protocols(list: Option<&[String]>) -> Vec<Proto> {
    match list {
        Some(l) if !l.is_empty() => protocols(Some(&l.join(","))),
        _ => vec![Proto::Tcp],
    }
}

/// The spec's endpoints in order (containers in order, then each container's endpoints),
/// with the container they belong to.
fn endpoints(spec: &WirePod) -> impl Iterator<Item = (&WirePodContainer, &WireEndpoint)> {
    spec.containers
        .iter()
        .flatten()
        .flat_map(|c| c.endpoints.iter().flatten().map(move |e| (c, e)))
}

fn port_specs(spec: &WirePod) -> Vec<PortSpec> {
    endpoints(spec)
        .map(|(_, e)| PortSpec {
            name: Some(e.name.clone()),
            protocols: endpoint_protocols(e.protocol.as_deref()),
            consumes_host_port: e.host_port.is_some(),
            container_port: e.container_port.and_then(|p| u16::try_from(p).ok()),
        })
        .collect()
}

/// One instance as a task: running when every container is, one health result per container
/// that has a health check, the allocated host port of each endpoint that takes one.
fn instance_task(spec: &WirePod, i: &WirePodInstance) -> Task {
    let containers = i.containers.as_deref().unwrap_or_default();
    let container = |name: &str| containers.iter().find(|c| c.name == name);
    let not_running = containers
        .iter()
        .find_map(|c| match c.status.as_deref() {
            Some("TASK_RUNNING") => None,
            other => Some(other.unwrap_or("TASK_STAGING").to_string()),
        })
        .or_else(|| {
            containers
                .is_empty()
                .then(|| i.status.clone().unwrap_or_else(|| "PENDING".into()))
        });
    let state = not_running.map_or(TaskState::Running, TaskState::NotRunning);
    let health = spec
        .containers
        .iter()
        .flatten()
        .filter(|c| c.health_check.as_ref().is_some_and(|h| !h.is_null()))
        .map(|c| container(&c.name).is_some_and(container_healthy))
        .collect();
    // The builder pairs host ports with the endpoints that take one, in order: stop at the
    // first endpoint without an allocation so that no port is ever paired with the wrong one.
    let mut host_ports = Vec::new();
    for (c, e) in endpoints(spec).filter(|(_, e)| e.host_port.is_some()) {
        let allocated = container(&c.name)
            .and_then(|s| s.endpoints.as_deref())
            .and_then(|eps| eps.iter().find(|s| s.name == e.name))
            .and_then(|s| s.allocated_host_port)
            .and_then(|p| u16::try_from(p).ok());
        match allocated {
            Some(p) => host_ports.push(p),
            None => break,
        }
    }
    Task {
        id: i.id.clone(),
        instance: instance_key(&i.id),
        host: i.agent_hostname.clone().unwrap_or_default(),
        state,
        ip_addresses: i
            .networks
            .iter()
            .flatten()
            .flat_map(|n| n.addresses.iter().flatten())
            .filter_map(|a| a.parse().ok())
            .collect(),
        host_ports,
        health,
    }
}

/// Marathon's `healthy` condition (command and endpoint checks alike); without one, the
/// health-checked endpoint's `healthy`.
fn container_healthy(c: &WireContainerStatus) -> bool {
    let conditions = c.conditions.as_deref().unwrap_or_default();
    match conditions.iter().find(|k| k.name == "healthy") {
        Some(k) => k.value.as_deref() == Some("true"),
        None => c
            .endpoints
            .iter()
            .flatten()
            .any(|e| e.healthy == Some(true)),
    }
}

/// Convert one pod status into the domain model.
pub fn pod(w: &WirePodStatus) -> App {
    let empty = WirePod::default();
    let spec = w.spec.as_ref().unwrap_or(&empty);
    let health_checks = spec
        .containers
        .iter()
        .flatten()
        .filter(|c| c.health_check.as_ref().is_some_and(|h| !h.is_null()))
        .count();
    App {
        id: normalize_id(&w.id),
        network: network_of(spec),
        ports: port_specs(spec),
        health_checks,
        tasks: w
            .instances
            .iter()
            .flatten()
            .map(|i| instance_task(spec, i))
            .collect::<Tasks>(),
    }
}

/// Parse `GET /v2/pods/{id}::status`.
pub fn pod_status_response(body: &str) -> Result<App, DecodeError> {
    serde_json::from_str::<WirePodStatus>(body)
        .map(|w| pod(&w))
        .map_err(|source| DecodeError::Json {
            what: "/v2/pods/{id}::status".into(),
            source,
        })
}

/// The pods of `GET /v2/pods/::status`, each parsed alone so that one bad pod is skipped,
/// never fatal. A body that is not a JSON array is an error.
#[derive(Debug, Default)]
pub struct PodsListing {
    pub pods: Vec<App>,
    /// Pods that could not be parsed: their id if readable, and why.
    pub skipped: Vec<(Option<AppId>, String)>,
}

pub fn pods_status_response(body: &str) -> Result<PodsListing, DecodeError> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    let raw: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(body).map_err(|source| DecodeError::Json {
            what: "/v2/pods/::status".into(),
            source,
        })?;
    let mut out = PodsListing::default();
    for r in raw {
        match serde_json::from_str::<WirePodStatus>(r.get()) {
            Ok(w) => out.pods.push(pod(&w)),
            Err(e) => {
                let id = serde_json::from_str::<IdOnly>(r.get())
                    .ok()
                    .map(|i| normalize_id(&i.id));
                out.skipped.push((id, e.to_string()));
            }
        }
    }
    Ok(out)
}

/// `pod_updated_event` / `pod_deleted_event` name their pod in `uri` (`/v2/pods/<id>`);
/// `pod_created_event` carries the create request's `/v2/pods`, with no id.
pub fn pod_id_of_uri(uri: &str) -> Option<AppId> {
    let rest = uri.strip_prefix("/v2/pods")?;
    let rest = rest
        .split("::")
        .next()
        .unwrap_or(rest)
        .trim_end_matches('/');
    (rest.len() > 1).then(|| normalize_id(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> String {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rest/v2-pods-status-documented-shape.json");
        std::fs::read_to_string(path).expect("fixture present")
    }

    #[test]
    fn documented_shape_converts() {
        let listing = pods_status_response(&fixture()).expect("parses");
        assert!(listing.skipped.is_empty(), "{:?}", listing.skipped);
        assert_eq!(listing.pods.len(), 2);

        // Host networking: agent address and allocated host ports, in endpoint order.
        let host = &listing.pods[0];
        assert_eq!(host.id, "/ports-pod");
        assert_eq!(host.network, Network::Host);
        assert_eq!(host.health_checks, 2);
        let names: Vec<_> = host.ports.iter().map(|p| p.name.as_deref()).collect();
        assert_eq!(names, [Some("httpendpoint"), Some("httpendpoint2")]);
        assert!(host.ports.iter().all(|p| p.consumes_host_port));
        // `http` is TCP.
        assert_eq!(host.ports[1].protocols, [Proto::Tcp]);
        assert_eq!(host.tasks.len(), 2);
        let tasks: Vec<_> = host.tasks.values().collect();
        let healthy = tasks
            .iter()
            .find(|t| t.host == "10.0.1.12")
            .expect("instance on 10.0.1.12");
        assert_eq!(healthy.state, TaskState::Running);
        assert_eq!(healthy.host_ports, [31012, 31013]);
        assert_eq!(healthy.health, [true, true]);
        assert!(host.is_eligible(healthy, false));
        assert!(healthy.instance.is_some());
        // One container not healthy: the instance is not eligible (unless unhealthy allowed).
        let degraded = tasks
            .iter()
            .find(|t| t.host == "10.0.1.13")
            .expect("instance on 10.0.1.13");
        assert_eq!(degraded.health, [true, false]);
        assert!(!host.is_eligible(degraded, false));
        assert!(host.is_eligible(degraded, true));

        // Container networking: instance IPs and container ports, no host ports.
        let ct = &listing.pods[1];
        assert_eq!(ct.id, "/prod/db");
        assert_eq!(ct.network, Network::Container);
        assert_eq!(ct.health_checks, 0);
        assert_eq!(ct.ports[0].container_port, Some(5432));
        assert!(!ct.ports[0].consumes_host_port);
        assert_eq!(ct.ports[1].protocols, [Proto::Tcp, Proto::Udp]);
        let running: Vec<_> = ct
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Running)
            .collect();
        assert_eq!(running.len(), 1);
        assert_eq!(
            running[0].ip_addresses,
            ["9.0.0.5".parse::<std::net::IpAddr>().expect("ip")]
        );
        // One container still staging: the instance is not running.
        assert!(
            ct.tasks
                .values()
                .any(|t| t.state == TaskState::NotRunning("TASK_STAGING".into()))
        );
    }

    #[test]
    fn a_bad_pod_is_skipped_with_its_id() {
        let body =
            r#"[{"id":"/ok","spec":{"id":"/ok","containers":[]}},{"id":"/bad","instances":"x"}]"#;
        let l = pods_status_response(body).expect("parses");
        assert_eq!(l.pods.len(), 1);
        assert_eq!(l.skipped[0].0.as_deref(), Some("/bad"));
        assert!(pods_status_response(r#"{"message":"x"}"#).is_err());
    }

    #[test]
    fn missing_allocation_never_misaligns_ports() {
        let body = r#"{"id":"/p","spec":{"id":"/p","containers":[{"name":"a","endpoints":[
            {"name":"one","hostPort":0,"protocol":["tcp"]},{"name":"two","hostPort":0,"protocol":["tcp"]}]}],
            "networks":[{"mode":"host"}]},
            "instances":[{"id":"p.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c","agentHostname":"10.0.0.1",
            "containers":[{"name":"a","status":"TASK_RUNNING","endpoints":[{"name":"two","allocatedHostPort":31002}]}]}]}"#;
        let p = pod_status_response(body).expect("parses");
        let t = p.tasks.values().next().expect("task");
        assert!(t.host_ports.is_empty(), "{:?}", t.host_ports);
    }

    #[test]
    fn pod_events_decode() {
        use crate::marathon::convert::{Decoded, Received, decode_event};
        let read = |f: &str| {
            let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/events")
                .join(f);
            std::fs::read_to_string(path).expect("fixture present")
        };
        // The docs' example names a pod, but Marathon sends the create request's `/v2/pods`:
        // a create always re-reads every pod.
        assert_eq!(
            decode_event("pod_created_event", &read("pod_created_event.json")).ok(),
            Some(Received::Model(Decoded::RefetchAllPods))
        );
        for (t, f) in [
            ("pod_updated_event", "pod_updated_event.json"),
            ("pod_deleted_event", "pod_deleted_event.json"),
        ] {
            assert_eq!(
                decode_event(t, &read(f)).ok(),
                Some(Received::Model(Decoded::RefetchPods(vec![
                    "/my-pod".into()
                ]))),
                "{f}"
            );
        }
        assert_eq!(
            decode_event(
                "pod_updated_event",
                r#"{"clientIp":"1.2.3.4","uri":"/v2/pods","eventType":"pod_updated_event"}"#
            )
            .ok(),
            Some(Received::Model(Decoded::RefetchAllPods))
        );
        let Ok(Received::Model(Decoded::InstanceChanged {
            run_spec_id,
            instance,
            ended,
        })) = decode_event(
            "instance_changed_event",
            &read("instance_changed_event.json"),
        )
        else {
            panic!("instance_changed_event decodes");
        };
        assert_eq!(run_spec_id, "/app-id");
        assert!(instance.is_some() && !ended);
        let killed = read("instance_changed_event.json").replace("\"Running\"", "\"Killed\"");
        assert!(matches!(
            decode_event("instance_changed_event", &killed),
            Ok(Received::Model(Decoded::InstanceChanged {
                ended: true,
                ..
            }))
        ));
        // A deployment's pod actions name `pod`, not `app`.
        let deployment = r#"{"id":"d","plan":{"id":"d","steps":[{"actions":[
            {"action":"ScalePod","pod":"/prod/db"},{"action":"ScaleApplication","app":"/web"}]}]},
            "eventType":"deployment_success"}"#;
        assert_eq!(
            decode_event("deployment_success", deployment).ok(),
            Some(Received::Model(Decoded::Refetch(vec![
                "/prod/db".into(),
                "/web".into()
            ])))
        );
    }

    #[test]
    fn event_uris() {
        assert_eq!(pod_id_of_uri("/v2/pods/my-pod").as_deref(), Some("/my-pod"));
        assert_eq!(
            pod_id_of_uri("/v2/pods/prod/db::status").as_deref(),
            Some("/prod/db")
        );
        assert_eq!(pod_id_of_uri("/v2/pods"), None);
        assert_eq!(pod_id_of_uri("/v2/pods/"), None);
        assert_eq!(pod_id_of_uri("/v2/apps/x"), None);
    }
}
