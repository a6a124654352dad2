//! What the sync task reports: readiness and counters, for readers (the server's waits,
//! tests, a future metrics endpoint). Only the sync task writes it (the fields are private to
//! [`crate::sync`]); the event stream reports to the sync task by message.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;

/// Observable state of the sync task (readiness, tests, metrics).
#[derive(Debug, Default)]
pub struct SyncStatus {
    pub(super) synced: AtomicBool,
    pub(super) stream_connected: AtomicBool,
    /// A full resync completed since the stream (re)connected: the zone is live.
    pub(super) stream_synced: AtomicBool,
    pub(super) serial: AtomicU32,
    pub(super) events: AtomicU64,
    pub(super) unknown_events: AtomicU64,
    pub(super) malformed_events: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) resyncs: AtomicU64,
    pub(super) failed_resyncs: AtomicU64,
    pub(super) publishes: AtomicU64,
    /// Apps and records periodic resyncs found different from what events had built.
    pub(super) drift_apps: AtomicU64,
    pub(super) drift_records: AtomicU64,
    /// SIGHUP reloads, and those that failed (the old state kept).
    pub(super) reloads: AtomicU64,
    pub(super) failed_reloads: AtomicU64,
    /// When the last full snapshot from Marathon was taken (Unix milliseconds; 0: never).
    pub(super) last_sync_ms: AtomicU64,
    /// From receiving a Marathon event to publishing the zone that reflects it.
    pub(super) event_latency: Latency,
    /// Wakes waiters on every publish and resync.
    pub(super) changed: Notify,
}

impl SyncStatus {
    /// Wait until the first full sync from Marathon has been published.
    pub async fn wait_synced(&self) {
        self.wait_for(Self::is_synced).await;
    }

    /// Wait until `done` holds.
    pub async fn wait_for(&self, done: impl Fn(&Self) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    /// A full snapshot from Marathon has been loaded at least once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
    /// The stream is up and a full resync followed its connect: events now keep the zone live.
    pub fn is_live(&self) -> bool {
        self.stream_synced.load(Ordering::Acquire) && self.stream_connected()
    }
    pub fn stream_connected(&self) -> bool {
        self.stream_connected.load(Ordering::Acquire)
    }
    pub(super) fn set_stream_connected(&self, v: bool) {
        self.stream_connected.store(v, Ordering::Release);
        self.changed.notify_waiters();
    }
    pub fn serial(&self) -> u32 {
        self.serial.load(Ordering::Acquire)
    }
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
    pub(super) fn count_event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }
    pub fn unknown_events(&self) -> u64 {
        self.unknown_events.load(Ordering::Relaxed)
    }
    pub(super) fn count_unknown_event(&self) {
        self.unknown_events.fetch_add(1, Ordering::Relaxed);
    }
    pub fn malformed_events(&self) -> u64 {
        self.malformed_events.load(Ordering::Relaxed)
    }
    pub(super) fn count_malformed_event(&self) {
        self.malformed_events.fetch_add(1, Ordering::Relaxed);
    }
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
    pub(super) fn count_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn count_drift(&self, apps: usize, records: usize) {
        self.drift_apps.fetch_add(apps as u64, Ordering::Relaxed);
        self.drift_records
            .fetch_add(records as u64, Ordering::Relaxed);
    }
    /// Apps periodic resyncs found different from the event-built model (missed events).
    pub fn drift_apps(&self) -> u64 {
        self.drift_apps.load(Ordering::Relaxed)
    }
    /// Records periodic resyncs added or removed (missed events).
    pub fn drift_records(&self) -> u64 {
        self.drift_records.load(Ordering::Relaxed)
    }
    /// A reload finished (ok or not).
    pub fn count_reload(&self, ok: bool) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed_reloads.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }
    pub fn failed_reloads(&self) -> u64 {
        self.failed_reloads.load(Ordering::Relaxed)
    }
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }
    pub fn failed_resyncs(&self) -> u64 {
        self.failed_resyncs.load(Ordering::Relaxed)
    }
    pub fn publishes(&self) -> u64 {
        self.publishes.load(Ordering::Relaxed)
    }
    /// How long ago the last full snapshot from Marathon was taken; `None` before the first.
    pub fn since_last_sync(&self) -> Option<std::time::Duration> {
        let at = self.last_sync_ms.load(Ordering::Acquire);
        (at != 0).then(|| std::time::Duration::from_millis(unix_ms().saturating_sub(at)))
    }
    pub(super) fn mark_synced_now(&self) {
        self.last_sync_ms.store(unix_ms(), Ordering::Release);
    }
    /// Prometheus text for the event → answer latency histogram.
    pub fn render_event_latency(&self, out: &mut String) {
        self.event_latency.render(
            "marathon_dns_event_to_answer_seconds",
            "From receiving a Marathon event to serving the zone that reflects it.",
            out,
        );
    }
    /// Resolves at the next publish, resync or stream state change.
    pub fn wait_change(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Upper bounds (milliseconds) of the latency histogram; the last bucket is +Inf.
const LATENCY_BUCKETS_MS: [u64; 11] = [1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000];

/// A Prometheus histogram of durations.
#[derive(Debug, Default)]
pub(super) struct Latency {
    buckets: [AtomicU64; 12],
    sum_us: AtomicU64,
}

impl Latency {
    pub(super) fn observe(&self, d: std::time::Duration) {
        let ms = d.as_millis();
        let b = LATENCY_BUCKETS_MS
            .iter()
            .position(|limit| ms <= u128::from(*limit))
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, limit) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *limit as f64 / 1000.0
            );
        }
        cumulative += self.buckets[LATENCY_BUCKETS_MS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {}\n{name}_count {cumulative}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
}
