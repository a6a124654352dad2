//! The cluster model: what Marathon told us, in domain terms, and how events change it.
//!
//! Pure data, no I/O and no JSON. [`crate::marathon::convert`] builds these values from the wire
//! format; [`crate::zone::build`] turns a [`Cluster`] into a zone snapshot.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// An absolute Marathon app id such as `/prod/web`.
pub type AppId = String;

/// How an app's tasks are networked; decides which address and port are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// Host networking: the agent's address and the allocated host ports.
    Host,
    /// Docker bridge (`container/bridge`): agent address and host ports; the task's own
    /// `ipAddresses` are container-internal and never published.
    Bridge,
    /// Container network (IP per task): the task's own addresses and container ports.
    Container,
}

/// Transport protocol of a port, as used in SRV owner names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The SRV label, `_tcp` or `_udp`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Tcp => "_tcp",
            Self::Udp => "_udp",
        }
    }
}

/// One port of an app, in the order Marathon lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSpec {
    pub name: Option<String>,
    pub protocols: Vec<Proto>,
    /// Whether this port takes the next entry of the task's allocated host ports
    /// (Marathon's own alignment rule, `NetworkInfo.scala`).
    pub consumes_host_port: bool,
    /// Fixed container port (container networking); `None` or 0 means "same as the host port".
    pub container_port: Option<u16>,
}

/// Lifecycle state of a task, reduced to what publishing needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskState {
    Running,
    /// Any non-terminal state other than running (staging, killing, unreachable …).
    NotRunning(String),
}

/// What a status update says about a task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskPhase {
    /// The task is alive: running, or on its way to or from running.
    Active(TaskState),
    /// The task has ended for good (finished, failed, killed, lost …).
    Ended,
}

/// The instance a task belongs to: health events name instances, the model keeps tasks, and
/// the two meet on this key. Computed from ids by [`crate::marathon::convert`]; here keys are
/// only compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceKey(pub [u8; 16]);

/// One task (for apps: one instance) of an app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Task {
    pub id: String,
    /// The instance the task belongs to, when its id names one.
    pub instance: Option<InstanceKey>,
    /// Agent host name or IP literal (`"unknown"` if Marathon has no agent info).
    pub host: String,
    pub state: TaskState,
    pub ip_addresses: Vec<IpAddr>,
    pub host_ports: Vec<u16>,
    /// One entry per health-check result: `alive`.
    pub health: Vec<bool>,
}

/// An app's tasks, sorted by id, in a vector sized to fit (a `BTreeMap` leaf reserves room
/// for eleven; apps run one to a few tasks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tasks(Vec<Task>);

impl Tasks {
    fn find(&self, id: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|t| t.id.as_str().cmp(id))
    }

    pub fn get(&self, id: &str) -> Option<&Task> {
        self.find(id).ok().map(|i| &self.0[i])
    }

    /// Insert or replace the task with the same id.
    pub fn insert(&mut self, task: Task) {
        match self.find(&task.id) {
            Ok(i) => self.0[i] = task,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, task);
            }
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<Task> {
        let i = self.find(id).ok()?;
        Some(self.0.remove(i))
    }

    pub fn values(&self) -> std::slice::Iter<'_, Task> {
        self.0.iter()
    }

    pub fn values_mut(&mut self) -> std::slice::IterMut<'_, Task> {
        self.0.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Task> for Tasks {
    fn from_iter<I: IntoIterator<Item = Task>>(iter: I) -> Self {
        let mut v: Vec<Task> = iter.into_iter().collect();
        // Later duplicates win, as with repeated inserts.
        v.reverse();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v.dedup_by(|a, b| a.id == b.id);
        v.shrink_to_fit();
        Self(v)
    }
}

impl std::ops::Index<&str> for Tasks {
    type Output = Task;
    fn index(&self, id: &str) -> &Task {
        match self.get(id) {
            Some(t) => t,
            None => panic!("no task {id}"),
        }
    }
}

/// An app definition plus its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct App {
    pub id: AppId,
    pub network: Network,
    pub ports: Vec<PortSpec>,
    /// Number of health checks defined; 0 means health is not considered.
    pub health_checks: usize,
    pub tasks: Tasks,
}

/// An app's definition as a load balancer needs it: its ports with their service ports, its
/// desired instance count and its labels. Read only by `haproxy-config`, never kept by the
/// DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceApp {
    pub id: AppId,
    /// The ports in Marathon's order, as the DNS naming rules see them.
    pub ports: Vec<PortSpec>,
    /// The service port of each port (`None` or 0: none assigned).
    pub service_ports: Vec<Option<u16>>,
    pub instances: u32,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A 64-bit key for an app id (fingerprint maps need no copy of the id).
pub fn id_key(id: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id)
}

impl App {
    /// A digest of everything about the app: equal digests mean nothing to publish changed.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(self)
    }

    /// Marathon's rule: running and, if the app has health checks, every result alive
    /// (`TaskForStatistics.scala`). `include_unhealthy` drops the health part.
    pub fn is_eligible(&self, task: &Task, include_unhealthy: bool) -> bool {
        if task.state != TaskState::Running {
            return false;
        }
        include_unhealthy
            || self.health_checks == 0
            || (!task.health.is_empty() && task.health.iter().all(|alive| *alive))
    }
}

/// A change announced by Marathon's event stream, in domain terms.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    /// `status_update_event`: a task changed state.
    TaskStatus {
        app_id: AppId,
        task_id: String,
        instance: Option<InstanceKey>,
        state: TaskPhase,
        host: String,
        ip_addresses: Vec<IpAddr>,
        host_ports: Vec<u16>,
    },
    /// Health events, about a task by its id or about the instance it belongs to.
    /// `alive: None` means "unknown, re-fetch".
    TaskHealth {
        app_id: AppId,
        instance_or_task_id: String,
        instance: Option<InstanceKey>,
        alive: Option<bool>,
    },
    /// `app_terminated_event`: the app is gone.
    AppTerminated { app_id: AppId },
}

impl ClusterEvent {
    /// The app the event is about.
    pub fn app_id(&self) -> &AppId {
        match self {
            Self::TaskStatus { app_id, .. }
            | Self::TaskHealth { app_id, .. }
            | Self::AppTerminated { app_id } => app_id,
        }
    }
}

/// What applying an event did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The model changed; the zone needs a rebuild.
    pub changed: bool,
    /// The event could not be applied completely; the app should be re-fetched over REST.
    pub refetch: Option<AppId>,
}

/// Everything known about the cluster: apps by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    pub apps: BTreeMap<AppId, App>,
}

impl Cluster {
    /// Replace one app (after a REST re-fetch); `None` removes it.
    pub fn replace_app(&mut self, id: &str, app: Option<App>) -> bool {
        match app {
            Some(app) => self.apps.insert(id.to_string(), app.clone()).as_ref() != Some(&app),
            None => self.apps.remove(id).is_some(),
        }
    }

    /// Remove the tasks of `app_id` that belong to `instance` (a pod instance whose container
    /// ended serves no more: every container must run). True if something was removed.
    pub fn end_instance(&mut self, app_id: &str, instance: InstanceKey) -> bool {
        let Some(app) = self.apps.get_mut(app_id) else {
            return false;
        };
        let ended: Vec<String> = app
            .tasks
            .values()
            .filter(|t| t.instance == Some(instance))
            .map(|t| t.id.clone())
            .collect();
        for id in &ended {
            app.tasks.remove(id);
        }
        !ended.is_empty()
    }

    /// Apply one event. Unknown apps or tasks ask for a re-fetch instead of guessing.
    pub fn apply(&mut self, event: &ClusterEvent) -> Applied {
        match event {
            ClusterEvent::TaskStatus {
                app_id,
                task_id,
                instance,
                state,
                host,
                ip_addresses,
                host_ports,
            } => {
                let Some(app) = self.apps.get_mut(app_id) else {
                    // No definition cached (new app, or a pod): port names are unknown.
                    return Applied {
                        changed: false,
                        refetch: (*state != TaskPhase::Ended).then(|| app_id.clone()),
                    };
                };
                let TaskPhase::Active(state) = state else {
                    return Applied {
                        changed: app.tasks.remove(task_id).is_some(),
                        refetch: None,
                    };
                };
                let health = app
                    .tasks
                    .get(task_id)
                    .map(|t| t.health.clone())
                    .unwrap_or_default();
                let task = Task {
                    id: task_id.clone(),
                    instance: *instance,
                    host: host.clone(),
                    state: state.clone(),
                    ip_addresses: ip_addresses.clone(),
                    host_ports: host_ports.clone(),
                    health,
                };
                let changed = app.tasks.get(task_id) != Some(&task);
                app.tasks.insert(task);
                Applied {
                    changed,
                    refetch: None,
                }
            }
            ClusterEvent::TaskHealth {
                app_id,
                instance_or_task_id,
                instance,
                alive,
            } => {
                let Some(app) = self.apps.get_mut(app_id) else {
                    return Applied::default();
                };
                let task = app.tasks.values_mut().find(|t| {
                    t.id == *instance_or_task_id || (instance.is_some() && t.instance == *instance)
                });
                let (Some(task), Some(alive)) = (task, alive) else {
                    return Applied {
                        changed: false,
                        refetch: Some(app_id.clone()),
                    };
                };
                // An event reports one check flipping. Going down is definite; going up is
                // definite only with a single check, otherwise ask Marathon for all results.
                let checks = app.health_checks.max(1);
                let new_health = if *alive && checks > 1 {
                    None
                } else if *alive {
                    Some(vec![true])
                } else {
                    let mut h = task.health.clone();
                    h.resize(checks, true);
                    h[0] = false;
                    Some(h)
                };
                match new_health {
                    Some(h) => {
                        let changed = task.health != h;
                        task.health = h;
                        Applied {
                            changed,
                            refetch: None,
                        }
                    }
                    None => Applied {
                        changed: false,
                        refetch: Some(app_id.clone()),
                    },
                }
            }
            ClusterEvent::AppTerminated { app_id } => Applied {
                changed: self.apps.remove(app_id).is_some(),
                refetch: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(health_checks: usize) -> App {
        App {
            id: "/web".into(),
            network: Network::Host,
            ports: vec![],
            health_checks,
            tasks: Tasks::default(),
        }
    }

    const RUNNING: TaskPhase = TaskPhase::Active(TaskState::Running);
    const ENDED: TaskPhase = TaskPhase::Ended;
    /// The instance key of [`TASK`] and of its instance id.
    const KEY: InstanceKey = InstanceKey([
        0xc7, 0xc3, 0x11, 0xa4, 0xb6, 0x69, 0x11, 0xe6, 0xa4, 0x8f, 0x0e, 0xa4, 0xf4, 0xb1, 0x77,
        0x8c,
    ]);

    fn status(task: &str, state: TaskPhase) -> ClusterEvent {
        ClusterEvent::TaskStatus {
            app_id: "/web".into(),
            task_id: task.into(),
            instance: Some(KEY),
            state,
            host: "10.0.0.1".into(),
            ip_addresses: vec![],
            host_ports: vec![31000],
        }
    }

    const TASK: &str = "web.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c._app.1";

    #[test]
    fn running_then_killed() {
        let mut c = Cluster::default();
        c.replace_app("/web", Some(app(0)));
        assert!(c.apply(&status(TASK, RUNNING)).changed);
        assert!(!c.apply(&status(TASK, RUNNING)).changed, "idempotent");
        let a = &c.apps["/web"];
        assert!(a.is_eligible(&a.tasks[TASK], false));
        assert!(c.apply(&status(TASK, ENDED)).changed);
        assert!(c.apps["/web"].tasks.is_empty());
    }

    #[test]
    fn unknown_app_asks_for_refetch() {
        let mut c = Cluster::default();
        let r = c.apply(&status(TASK, RUNNING));
        assert_eq!(r.refetch.as_deref(), Some("/web"));
        assert!(!r.changed);
        assert_eq!(c.apply(&status(TASK, ENDED)).refetch, None);
    }

    #[test]
    fn health_by_instance_id() {
        let mut c = Cluster::default();
        c.replace_app("/web", Some(app(1)));
        c.apply(&status(TASK, RUNNING));
        let a = &c.apps["/web"];
        assert!(!a.is_eligible(&a.tasks[TASK], false), "no results yet");
        assert!(a.is_eligible(&a.tasks[TASK], true), "--include-unhealthy");
        let ev = |alive| ClusterEvent::TaskHealth {
            app_id: "/web".into(),
            instance_or_task_id: "web.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c".into(),
            instance: Some(KEY),
            alive,
        };
        assert!(c.apply(&ev(Some(true))).changed);
        let a = &c.apps["/web"];
        assert!(a.is_eligible(&a.tasks[TASK], false));
        assert!(c.apply(&ev(Some(false))).changed);
        let a = &c.apps["/web"];
        assert!(!a.is_eligible(&a.tasks[TASK], false));
        assert_eq!(c.apply(&ev(None)).refetch.as_deref(), Some("/web"));
    }

    #[test]
    fn several_checks_going_up_refetches() {
        let mut c = Cluster::default();
        c.replace_app("/web", Some(app(2)));
        c.apply(&status(TASK, RUNNING));
        let r = c.apply(&ClusterEvent::TaskHealth {
            app_id: "/web".into(),
            instance_or_task_id: TASK.into(),
            instance: Some(KEY),
            alive: Some(true),
        });
        assert_eq!(r.refetch.as_deref(), Some("/web"));
    }

    #[test]
    fn end_instance_removes_only_that_instance() {
        let mut c = Cluster::default();
        c.replace_app("/web", Some(app(0)));
        c.apply(&status(TASK, RUNNING));
        let mut other = status("web.instance-other", RUNNING);
        if let ClusterEvent::TaskStatus { instance, .. } = &mut other {
            *instance = Some(InstanceKey([1; 16]));
        }
        c.apply(&other);
        assert!(c.end_instance("/web", KEY));
        assert!(!c.end_instance("/web", KEY), "already gone");
        assert!(!c.end_instance("/nope", KEY));
        let ids: Vec<_> = c.apps["/web"]
            .tasks
            .values()
            .map(|t| t.id.clone())
            .collect();
        assert_eq!(ids, ["web.instance-other"]);
    }

    #[test]
    fn app_terminated_removes() {
        let mut c = Cluster::default();
        c.replace_app("/web", Some(app(0)));
        let ev = ClusterEvent::AppTerminated {
            app_id: "/web".into(),
        };
        assert!(c.apply(&ev).changed);
        assert!(!c.apply(&ev).changed);
    }
}
