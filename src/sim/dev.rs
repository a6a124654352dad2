//! Dev mode's sample cluster: a handful of apps covering every naming rule, with tasks that
//! churn so that `dig` shows records changing.

use std::net::IpAddr;
use std::time::Duration;

use super::{SimApp, SimContainer, SimEndpoint, SimNetwork, SimPod, SimPort, Simulator};

/// Agents of the sample cluster (documentation addresses, RFC 5737).
const AGENTS: &[&str] = &["192.0.2.11", "192.0.2.12", "192.0.2.13"];

/// Populate `sim` with the sample apps and their tasks.
pub fn populate(sim: &Simulator) {
    let apps = [
        SimApp::new(
            "/prod/web",
            SimNetwork::Host,
            vec![SimPort::tcp(Some("http"), 0), SimPort::tcp(None, 0)],
        )
        .with_health_checks(1),
        SimApp::new(
            "/prod/api",
            SimNetwork::Bridge,
            vec![SimPort::tcp(Some("api"), 8080)],
        ),
        SimApp::new(
            "/infra/syslog",
            SimNetwork::Host,
            vec![SimPort::tcp(Some("syslog"), 0).with_protocol("udp,tcp")],
        ),
        SimApp::new(
            "/db/cache",
            SimNetwork::Container,
            vec![SimPort::tcp(Some("redis"), 6379)],
        ),
        SimApp::new("/web", SimNetwork::Host, vec![SimPort::tcp(None, 0)]),
    ];
    for app in apps {
        let id = app.id.clone();
        let healthy = app.health_checks > 0;
        sim.add_app(app);
        for i in 0..3 {
            start(sim, &id, i, healthy);
        }
    }
    // A pod: two containers, one endpoint each, host networking (agent and host port).
    sim.add_pod(SimPod::new(
        "/prod/db",
        SimNetwork::Host,
        vec![
            SimContainer::new("postgres", vec![SimEndpoint::host("pg")]),
            SimContainer::new(
                "exporter",
                vec![SimEndpoint::host("metrics").with_protocols(&["http"])],
            ),
        ],
    ));
    for agent in AGENTS {
        sim.start_pod_instance("/prod/db", agent, &[], None);
    }
}

fn start(sim: &Simulator, app_id: &str, i: usize, healthy: bool) {
    let agent = AGENTS[i % AGENTS.len()];
    let ip: IpAddr = IpAddr::from([10, 200, 0, (i % 250) as u8 + 10]);
    if let Some(task) = sim.start_task(app_id, agent, &[ip])
        && healthy
    {
        sim.set_health(&task, true);
    }
}

/// Forever: every `period`, replace one task of one app (round robin); every fifth step one
/// `/prod/web` task turns unhealthy for two steps.
pub async fn churn(sim: &Simulator, period: Duration) {
    let mut step = 0usize;
    loop {
        tokio::time::sleep(period).await;
        let ids = sim.app_ids();
        if ids.is_empty() {
            continue;
        }
        let app_id = &ids[step % ids.len()];
        let tasks = sim.tasks_of(app_id);
        if let Some(victim) = tasks.first() {
            sim.kill_task(&victim.id);
        }
        start(sim, app_id, step, app_id == "/prod/web");
        let web = sim.tasks_of("/prod/web");
        match step % 5 {
            0 => {
                if let Some(t) = web.first() {
                    sim.set_health(&t.id, false);
                }
            }
            2 => {
                for t in &web {
                    sim.set_health(&t.id, true);
                }
            }
            _ => {}
        }
        step += 1;
    }
}
