//! Pods in the sync task. A pod lives in the model as an ordinary app (one task per instance,
//! see `marathon::pods`), so building and publishing need nothing special; what differs is how
//! it is kept current. Pod task events name a *container* of an instance, and Marathon's
//! status of the whole instance (every container, allocated ports, addresses, health) comes
//! only from `GET /v2/pods/{id}::status`: so an event about a pod ends the instance at once
//! when a container ended (it no longer serves) and re-reads the pod's status.

use std::collections::BTreeSet;

use reqwest::Url;
use tracing::{debug, info, warn};

use super::{Snapshot, Syncer, lock};
use crate::cluster::{AppId, ClusterEvent, TaskPhase, id_key};
use crate::marathon::convert::Decoded;
use crate::marathon::pods::PodsListing;

impl Syncer {
    /// Take the pod part of an event; anything that is not about a pod is handed back.
    pub(super) fn pod_event(&mut self, decoded: Decoded) -> Option<Decoded> {
        match decoded {
            Decoded::Apply(event) if self.pods.contains(event.app_id()) => {
                self.on_pod_event(event);
                None
            }
            Decoded::Refetch(ids) => {
                // A deployment names pods and apps alike; known pods are re-read as pods.
                let (pods, apps): (Vec<AppId>, Vec<AppId>) =
                    ids.into_iter().partition(|id| self.pods.contains(id));
                self.refetch_pods.extend(pods);
                (!apps.is_empty()).then_some(Decoded::Refetch(apps))
            }
            Decoded::RefetchPods(ids) => {
                self.refetch_pods.extend(ids);
                None
            }
            Decoded::RefetchAllPods => {
                self.refetch_all_pods = true;
                None
            }
            Decoded::InstanceChanged {
                run_spec_id,
                instance,
                ended,
            } => {
                // Apps' instances are followed through their tasks' own events.
                if self.pods.contains(&run_spec_id) {
                    if let Some(key) = instance.filter(|_| ended) {
                        self.end_pod_instance(&run_spec_id, key);
                    }
                    self.refetch_pods.insert(run_spec_id);
                }
                None
            }
            other => Some(other),
        }
    }

    fn on_pod_event(&mut self, event: ClusterEvent) {
        match &event {
            ClusterEvent::TaskStatus {
                app_id,
                instance,
                state,
                ..
            } => {
                if let (TaskPhase::Ended, Some(key)) = (state, instance) {
                    self.end_pod_instance(app_id, *key);
                }
                self.refetch_pods.insert(app_id.clone());
            }
            // Instances are keyed like app instances: health applies as for apps.
            ClusterEvent::TaskHealth { app_id, .. } => {
                let applied = self.cluster.apply(&event);
                if applied.changed {
                    self.dirty.insert(app_id.clone());
                    self.note_received();
                }
                self.refetch_pods.extend(applied.refetch);
            }
            ClusterEvent::AppTerminated { app_id } => {
                let id = app_id.clone();
                if self.cluster.apply(&event).changed {
                    self.dirty.insert(id.clone());
                    self.note_received();
                }
                self.pods.remove(&id);
                self.refetch_pods.remove(&id);
            }
        }
    }

    fn end_pod_instance(&mut self, pod: &str, key: crate::cluster::InstanceKey) {
        if self.cluster.end_instance(pod, key) {
            self.dirty.insert(pod.to_string());
            self.note_received();
        }
    }

    /// Pod re-reads are waiting.
    pub(super) fn pods_pending(&self) -> bool {
        self.refetch_all_pods || !self.refetch_pods.is_empty()
    }

    /// Re-read the pods events asked for (all of them after a create, else each by id).
    pub(super) async fn refetch_pods_now(&mut self, base: &Url) {
        if std::mem::take(&mut self.refetch_all_pods) {
            match self.client.pods_status(base).await {
                Ok(listing) => {
                    let listed = self.take_pod_listing(listing.unwrap_or_default());
                    self.refetch_pods.retain(|id| !listed.contains(id));
                }
                Err(e) => warn!("re-reading all pods failed, keeping what is known: {e}"),
            }
        }
        let ids = std::mem::take(&mut self.refetch_pods);
        if ids.is_empty() {
            return;
        }
        let client = &self.client;
        let fetched = futures_util::future::join_all(ids.into_iter().map(|id| async move {
            let got = client.pod_status(base, &id).await;
            (id, got)
        }))
        .await;
        for (id, got) in fetched {
            match got {
                Ok(Some(pod)) => {
                    self.pods.insert(id.clone());
                    if self.cluster.replace_app(&id, Some(pod)) {
                        self.dirty.insert(id);
                    }
                }
                Ok(None) => {
                    if self.pods.remove(&id) && self.cluster.replace_app(&id, None) {
                        self.dirty.insert(id);
                    }
                }
                // A pod that fails to parse keeps its records; the periodic resync retries.
                Err(e) => warn!("re-reading pod {id} failed, keeping what is known: {e}"),
            }
        }
    }

    /// Take a full pod listing as the pods of the model (pods it lacks are gone; pods it could
    /// not parse keep what is known). Returns the ids it listed.
    fn take_pod_listing(&mut self, listing: PodsListing) -> BTreeSet<AppId> {
        let mut listed = BTreeSet::new();
        for (id, error) in listing.skipped {
            warn!(
                "skipping a pod Marathon sent that cannot be parsed ({}), keeping what is known: {error}",
                id.as_deref().unwrap_or("id unreadable")
            );
            listed.extend(id);
        }
        for pod in listing.pods {
            let id = pod.id.clone();
            listed.insert(id.clone());
            if self.cluster.replace_app(&id, Some(pod)) {
                self.dirty.insert(id);
            }
        }
        let gone: Vec<AppId> = self.pods.difference(&listed).cloned().collect();
        for id in gone {
            if self.cluster.replace_app(&id, None) {
                self.dirty.insert(id);
            }
        }
        self.pods = listed.clone();
        listed
    }

    /// Merge a resync's pod listing into its snapshot, before the snapshot replaces the model:
    /// pods whose fingerprint changed join the changed apps, every listed pod counts as seen.
    /// If the pods could not be read, the known pods are kept as they are (fail static).
    pub(super) fn merge_snapshot_pods(&mut self, snapshot: &mut Snapshot) {
        self.refetch_pods.clear();
        self.refetch_all_pods = false;
        if let Some(error) = snapshot.pods_error.take() {
            if self.pods_failing {
                debug!("reading pods failed again: {error}");
            } else {
                warn!(
                    "reading pods failed, keeping the known pods and retrying at each resync (logged once): {error}"
                );
                self.pods_failing = true;
            }
            snapshot.seen.extend(self.pods.iter().map(|id| id_key(id)));
            return;
        }
        if std::mem::take(&mut self.pods_failing) {
            info!("pods can be read again");
        }
        let listing = snapshot.pods.take().unwrap_or_default();
        let mut ids = BTreeSet::new();
        for (id, error) in listing.skipped {
            warn!(
                "skipping a pod Marathon sent that cannot be parsed ({}), keeping what is known: {error}",
                id.as_deref().unwrap_or("id unreadable")
            );
            if let Some(id) = id {
                snapshot.seen.insert(id_key(&id));
                ids.insert(id);
            }
        }
        let fingerprints = lock(&self.fingerprints);
        for pod in listing.pods {
            let key = id_key(&pod.id);
            snapshot.seen.insert(key);
            ids.insert(pod.id.clone());
            if fingerprints.get(&key) != Some(&pod.fingerprint()) {
                snapshot.changed.push(pod);
            }
        }
        drop(fingerprints);
        self.pods = ids;
    }
}
