//! The `marathon-dns` binary: CLI, logging and signals around the library.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use marathon_dns::config::{Cli, Command, DevArgs, HaproxyArgs, HealthcheckArgs, ServeArgs};
use marathon_dns::haproxy::RenderOptions;
use marathon_dns::haproxy::generate::{self, GenerateOptions};
use marathon_dns::server::{self, Settings};
use marathon_dns::sim::{self, Simulator};
use tracing_subscriber::EnvFilter;

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Where a SIGHUP reload reads the settings again: the command line and, if given, the
/// configuration file (whose startup values are in the environment variables it set).
struct ReloadSource {
    argv: Vec<String>,
    config: Option<std::path::PathBuf>,
    file_owned: std::collections::BTreeSet<String>,
}

impl ReloadSource {
    fn settings(&self) -> Result<Settings> {
        let vars = match &self.config {
            Some(path) => marathon_dns::config_file::load(path)?,
            None => Vec::new(),
        };
        let args = marathon_dns::config_file::reparse(&self.argv, &self.file_owned, &vars)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    e.to_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim_start_matches("error: ")
                )
            })?;
        Ok(Settings::from_args(&args)?)
    }
}

async fn reload(running: &mut server::Running, source: &ReloadSource) {
    marathon_dns::systemd::reloading();
    let outcome = match source.settings() {
        Ok(settings) => running.reload(&settings).await.map_err(anyhow::Error::from),
        Err(e) => {
            running.status.count_reload(false);
            Err(e)
        }
    };
    match outcome {
        Ok(r) => {
            tracing::info!(
                serial = r.serial,
                static_zones = r.static_zones,
                credentials_changed = r.credentials_changed,
                "reloaded the zone files, credentials and reloadable settings"
            );
            if !r.restart_needed.is_empty() {
                tracing::warn!(
                    "changed settings that only a restart applies (kept as they were): {}",
                    r.restart_needed.join(", ")
                );
            }
        }
        Err(e) => tracing::error!("reload failed, everything stays as it was: {e:#}"),
    }
    marathon_dns::systemd::notify("READY=1");
}

async fn serve(args: &ServeArgs, source: &ReloadSource) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered once, before anything can arrive: a signal is never missed in between.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let settings = Settings::from_args(args)?;
    let lame_duck = settings.lame_duck;
    let mut running = server::start(settings).await?;
    let status = running.status.clone();
    let ready = async move {
        status.wait_synced().await;
        marathon_dns::systemd::notify("READY=1\nSTATUS=serving the Marathon zone");
    };
    tokio::pin!(ready);
    let mut notified = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&mut running, source).await,
            () = &mut ready, if !notified => notified = true,
            failure = running.task_failure() => {
                // Exit non-zero so that the supervisor restarts the process.
                anyhow::bail!("{failure}; exiting so that the supervisor restarts marathon-dns");
            }
        }
    }
    tracing::info!(
        "stopping: /ready is 503, DNS answers for {lame_duck:?} more, then stops (a second signal stops at once)"
    );
    marathon_dns::systemd::notify("STOPPING=1");
    running.drain();
    tokio::select! {
        () = tokio::time::sleep(lame_duck) => {}
        _ = term.recv() => return second_signal(),
        _ = int.recv() => return second_signal(),
    }
    tokio::select! {
        () = running.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {
            tracing::warn!("graceful stop took over 5 s; exiting anyway");
        }
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn second_signal() -> Result<()> {
    tracing::info!("second signal: stopping now");
    Ok(())
}

async fn dev(args: &DevArgs) -> Result<()> {
    let sim = Simulator::start_on(([127, 0, 0, 1], 0).into(), Duration::from_secs(10)).await?;
    sim::dev::populate(&sim);
    let mut settings = Settings::new(vec![sim.url()]);
    settings.listen = args.listen.clone();
    settings.zones_dir = args.zones_dir.clone();
    if let Some(n) = args.udp_workers {
        settings.udp_workers = n;
    }
    settings.admin_listen = args.admin_listen.0;
    let running = server::start(settings).await?;
    running.wait_synced().await;
    let addr = running.udp.first().context("no listen address")?;
    let (ip, port) = (addr.ip(), addr.port());
    println!(
        "marathon-dns dev mode: simulated Marathon at {}, DNS on {addr} (UDP and TCP)",
        sim.url()
    );
    println!("Try:");
    println!("  dig @{ip} -p {port} SRV _web._tcp.prod.marathon.local");
    println!("  dig @{ip} -p {port} SRV _http._tcp.web.prod.marathon.local");
    println!("  dig @{ip} -p {port} A web.prod.marathon.local");
    println!("  dig @{ip} -p {port} SRV _syslog._udp.infra.marathon.local   # udp,tcp port");
    println!("  dig @{ip} -p {port} SRV _redis._tcp.cache.db.marathon.local   # container network");
    println!("  dig @{ip} -p {port} SRV _pg._tcp.db.prod.marathon.local   # pod endpoint");
    println!("  dig @{ip} -p {port} A db.prod.marathon.local   # pod");
    println!("  dig @{ip} -p {port} SOA marathon.local");
    println!("Tasks churn every {:?}; Ctrl-C stops.", args.churn);
    tokio::select! {
        () = sim::dev::churn(&sim, args.churn) => {}
        () = wait_for_signal() => {}
    }
    running.shutdown().await;
    Ok(())
}

/// Validate the configuration (file, flags, environment) and the zone files; exit non-zero
/// with the first problem.
fn check_config(args: &ServeArgs) -> Result<()> {
    let settings = Settings::from_args(args)?;
    server::marathon_client(&settings)?;
    let (store, _) = server::initial_zones(&settings)?;
    println!(
        "configuration OK: Marathon {}, zone {} ({} static zone files in {})",
        settings.marathon.len(),
        settings.zone,
        store.static_zones(),
        settings.zones_dir.display()
    );
    Ok(())
}

/// Exit 0 if a local server's admin listener answers 200.
async fn healthcheck(args: &HealthcheckArgs) -> Result<()> {
    let addr = args
        .admin_listen
        .0
        .context("the admin listener is off (--admin-listen off): nothing to check")?;
    let status = marathon_dns::admin::probe(addr, &args.path, args.timeout).await?;
    anyhow::ensure!(status == 200, "{} answered {status}", args.path);
    Ok(())
}

async fn haproxy_config(args: &HaproxyArgs) -> Result<()> {
    let settings = Settings::from_args(&args.serve)?;
    let client = server::marathon_client(&settings)?;
    let opts = GenerateOptions {
        render: RenderOptions {
            nameservers: args.nameservers.clone(),
            bind_address: args.bind_address.clone(),
            http_port: args.http_port,
            group: args.group.clone(),
            zone: settings.zone.clone(),
        },
        output: args.output.clone(),
        reload_cmd: args.reload_cmd.clone(),
        stream_timeout: settings.stream_timeout,
        max_event: settings.marathon_max_event,
    };
    if args.watch {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
        generate::watch(client, opts, shutdown).await?;
        return Ok(());
    }
    let text = generate::once(&client, &opts.render).await?;
    match &opts.output {
        Some(path) => generate::write_atomically(path, &text)?,
        None => print!("{text}"),
    }
    Ok(())
}

async fn export_zone(args: &ServeArgs) -> Result<()> {
    print!(
        "{}",
        server::export_once(&Settings::from_args(args)?).await?
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    // `--config FILE` fills the flags' environment variables that are not set, before any
    // thread exists (flags, then the environment, then the file, then the defaults).
    let args: Vec<String> = std::env::args().collect();
    let config = marathon_dns::config_file::requested(&args);
    let mut file_owned = std::collections::BTreeSet::new();
    if let Some(path) = &config {
        match marathon_dns::config_file::load(path) {
            Ok(vars) => {
                for (key, value) in vars {
                    if std::env::var_os(&key).is_none() {
                        // SAFETY: single-threaded still: no runtime, no thread started yet.
                        unsafe { std::env::set_var(&key, value) };
                        file_owned.insert(key);
                    }
                }
            }
            Err(e) => {
                eprintln!("marathon-dns: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("marathon-dns: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let source = ReloadSource {
        argv: args,
        config,
        file_owned,
    };
    match runtime.block_on(run(cli, &source)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line (with causes), no backtrace: this is an operator's message.
            eprintln!("marathon-dns: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, source: &ReloadSource) -> Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn,eventsource_client=error"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match &cli.command {
        Some(Command::Dev(args)) => dev(args).await,
        Some(Command::Export(args)) => export_zone(args).await,
        Some(Command::HaproxyConfig(args)) => haproxy_config(args).await,
        Some(Command::CheckConfig(args)) => check_config(args),
        Some(Command::Healthcheck(args)) => healthcheck(args).await,
        Some(Command::Serve(args)) => serve(args, source).await,
        None => serve(&cli.serve, source).await,
    }
}
