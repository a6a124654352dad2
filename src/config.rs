//! Command line and environment: what the operator sets, checked once at startup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches, Parser, Subcommand};

/// Parse `250ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 5m"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    })
}

/// Parse a size: `512M`, `16MiB`, `64k`, or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 512M"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?}: use k, M or G")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Shared by `serve` and `dev`.
const DEFAULT_LISTEN: &str = "127.0.0.1:8053";
const DEFAULT_ZONES_DIR: &str = "zones";

#[derive(Debug, Parser)]
#[command(
    name = "marathon-dns",
    version,
    about = "Authoritative DNS for Mesos/Marathon service discovery"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// TOML file whose keys are the long flag names (docs/examples/marathon-dns.toml); flags
    /// and environment variables win over it.
    #[arg(long, env = "MARATHON_DNS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr: `text` for people, `json` (one object per line) for collectors.
    /// The filter is `RUST_LOG` (default `info`, hickory's per-query lines quiet).
    #[arg(long, env = "MARATHON_DNS_LOG_FORMAT", default_value = "text", global = true, value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve DNS for the Marathon cluster given by --marathon (the default command).
    Serve(ServeArgs),
    /// Development mode: a built-in simulated Marathon with churning sample apps, DNS on
    /// 127.0.0.1:8053.
    Dev(DevArgs),
    /// Sync once from Marathon and print the zone as an RFC 1035 master file.
    Export(ServeArgs),
    /// Print a per-host HAProxy configuration from Marathon's app definitions: a frontend on
    /// each service port, a backend following the port's SRV name (docs/haproxy.md).
    HaproxyConfig(HaproxyArgs),
    /// Check the configuration (file, flags, environment) and the zone files, then exit: 0
    /// when all is well, else the first problem as `file:line: reason`.
    CheckConfig(ServeArgs),
    /// Exit 0 if the admin listener of a server on this machine answers 200 on `/health`
    /// (for a container HEALTHCHECK: the image has no curl).
    Healthcheck(HealthcheckArgs),
}

/// `marathon-dns healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The server's admin listener (an unspecified address such as 0.0.0.0 means loopback).
    #[arg(long, env = "MARATHON_DNS_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN, value_parser = parse_admin_listen)]
    pub admin_listen: AdminListen,

    /// The path to ask: `/health` (alive) or `/ready` (synced and not stopping).
    #[arg(long, default_value = "/health")]
    pub path: String,

    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `marathon-dns haproxy-config`.
#[derive(Debug, Clone, Args)]
pub struct HaproxyArgs {
    /// Marathon (`--marathon`, credentials, `--zone`, `--stream-timeout`) as for the server.
    #[command(flatten)]
    pub serve: ServeArgs,

    /// marathon-dns as HAProxy should ask it, `ADDR:PORT` or `tcp@ADDR:PORT`; repeatable.
    #[arg(long = "nameserver", default_value = DEFAULT_LISTEN, value_parser = parse_nameserver)]
    pub nameservers: Vec<String>,

    /// Address the frontends listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: String,

    /// Port of the shared HTTP frontend for virtual hosts and paths.
    #[arg(long, default_value_t = 80)]
    pub http_port: u16,

    /// Only apps whose HAPROXY_GROUP label is this.
    #[arg(long)]
    pub group: Option<String>,

    /// Write here (atomically) instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,

    /// Keep --output up to date: follow Marathon's event stream and rewrite the file when the
    /// configuration changes (never for task starts, kills or moves).
    #[arg(long, requires = "output")]
    pub watch: bool,

    /// Command run (`sh -c`) after each rewrite in --watch mode, e.g. a HAProxy reload.
    #[arg(long, requires = "watch")]
    pub reload_cmd: Option<String>,
}

/// `ADDR:PORT` or `tcp@ADDR:PORT`.
pub fn parse_nameserver(s: &str) -> Result<String, String> {
    let addr = s.strip_prefix("tcp@").unwrap_or(s);
    addr.parse::<SocketAddr>()
        .map(|_| s.to_string())
        .map_err(|_| format!("invalid nameserver {s:?}: expected ADDR:PORT or tcp@ADDR:PORT"))
}

/// Settings shared by `serve`, `dev` and `export`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Marathon URLs, comma-separated or repeated (the leader is looked up through them).
    #[arg(
        long = "marathon",
        env = "MARATHON_DNS_MARATHON",
        value_delimiter = ','
    )]
    pub marathon: Vec<String>,

    /// Address to serve DNS on, UDP and TCP; repeatable.
    #[arg(
        long = "listen",
        env = "MARATHON_DNS_LISTEN",
        value_delimiter = ',',
        default_value = DEFAULT_LISTEN
    )]
    pub listen: Vec<SocketAddr>,

    /// The zone that holds the Marathon records.
    #[arg(long, env = "MARATHON_DNS_ZONE", default_value = "marathon.local")]
    pub zone: String,

    /// TTL of generated records, and the SOA minimum (negative-caching TTL).
    #[arg(long, env = "MARATHON_DNS_TTL", default_value_t = 5)]
    pub ttl: u32,

    /// Directory of static zone files (`*.zone`).
    #[arg(long, env = "MARATHON_DNS_ZONES_DIR", default_value = DEFAULT_ZONES_DIR)]
    pub zones_dir: PathBuf,

    /// Full resync interval, to heal events Marathon dropped.
    #[arg(long, env = "MARATHON_DNS_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// Reconnect the event stream when nothing (not even Marathon's 10 s heartbeat) arrives
    /// for this long.
    #[arg(long, env = "MARATHON_DNS_STREAM_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub stream_timeout: Duration,

    /// Publish running tasks even when their health checks fail.
    #[arg(long, env = "MARATHON_DNS_INCLUDE_UNHEALTHY")]
    pub include_unhealthy: bool,

    /// Use the configured URLs as they are instead of looking up `/v2/leader` (for Marathon
    /// behind a load balancer whose leader address is not reachable).
    #[arg(long, env = "MARATHON_DNS_NO_LEADER_LOOKUP")]
    pub no_leader_lookup: bool,

    /// HTTP basic auth for Marathon as `user:password`.
    #[arg(long, env = "MARATHON_DNS_CREDENTIALS", hide_env_values = true)]
    pub marathon_credentials: Option<String>,

    /// File holding `user:password` for HTTP basic auth (read again when Marathon answers 401).
    #[arg(long, env = "MARATHON_DNS_CREDENTIALS_FILE")]
    pub marathon_credentials_file: Option<PathBuf>,

    /// DC/OS token, sent as `Authorization: token=<TOKEN>`.
    #[arg(long, env = "MARATHON_DNS_TOKEN", hide_env_values = true)]
    pub marathon_token: Option<String>,

    /// File holding the DC/OS token (read again when Marathon answers 401).
    #[arg(long, env = "MARATHON_DNS_TOKEN_FILE")]
    pub marathon_token_file: Option<PathBuf>,

    /// PEM file of CA certificates trusted for an https Marathon, besides the system roots.
    #[arg(long, env = "MARATHON_DNS_MARATHON_CA_FILE")]
    pub marathon_ca_file: Option<PathBuf>,

    /// PEM client certificate (chain) for mutual TLS with Marathon; needs --marathon-client-key.
    #[arg(
        long,
        env = "MARATHON_DNS_MARATHON_CLIENT_CERT",
        requires = "marathon_client_key"
    )]
    pub marathon_client_cert: Option<PathBuf>,

    /// PEM private key of --marathon-client-cert.
    #[arg(
        long,
        env = "MARATHON_DNS_MARATHON_CLIENT_KEY",
        requires = "marathon_client_cert"
    )]
    pub marathon_client_key: Option<PathBuf>,

    /// Largest UDP response, whatever the client advertises (e.g. 1232 to avoid IP
    /// fragmentation). Default: the client's EDNS size, in full.
    #[arg(long, env = "MARATHON_DNS_MAX_UDP_PAYLOAD")]
    pub max_udp_payload: Option<u16>,

    /// Close TCP connections idle for this long.
    #[arg(long, env = "MARATHON_DNS_TCP_IDLE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tcp_idle_timeout: Duration,

    /// After SIGTERM/SIGINT: keep answering DNS this long with /ready at 503 (load balancers
    /// and orchestrators stop sending), then stop; a second signal stops at once.
    #[arg(long, env = "MARATHON_DNS_LAME_DUCK", default_value = "5s", value_parser = parse_duration)]
    pub lame_duck: Duration,

    /// File that keeps the last SOA serial, so that it never goes backwards across restarts.
    #[arg(long, env = "MARATHON_DNS_SERIAL_FILE")]
    pub serial_file: Option<PathBuf>,

    /// Coalescing window: events arriving within it are published as one new zone.
    #[arg(long, env = "MARATHON_DNS_COALESCE", default_value = "20ms", value_parser = parse_duration)]
    pub coalesce: Duration,

    /// UDP worker threads per listen address (default: one per core).
    #[arg(long, env = "MARATHON_DNS_UDP_WORKERS")]
    pub udp_workers: Option<usize>,

    /// HTTP admin listener (/health, /ready, /metrics, /v1/apps, /v1/records, /v1/zone);
    /// `off` for none.
    #[arg(long, env = "MARATHON_DNS_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN, value_parser = parse_admin_listen)]
    pub admin_listen: AdminListen,

    /// Largest Marathon REST body accepted (a 100,000-task `/v2/apps` is about 100 MB); a
    /// bigger one is an error and the last good zone stays.
    #[arg(long, env = "MARATHON_DNS_MARATHON_MAX_BODY", default_value = "512M", value_parser = parse_size)]
    pub marathon_max_body: u64,

    /// Largest line or event on Marathon's event stream; a bigger one drops the connection
    /// (reconnect, resync).
    #[arg(long, env = "MARATHON_DNS_MARATHON_MAX_EVENT", default_value = "16M", value_parser = parse_size)]
    pub marathon_max_event: u64,

    /// A Marathon REST response that sends nothing for this long fails (no limit on the total
    /// time, which large snapshots need).
    #[arg(long, env = "MARATHON_DNS_MARATHON_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub marathon_read_timeout: Duration,

    /// Send the Marathon credentials along redirects to hosts that are not in --marathon
    /// (off: such redirects are followed without them).
    #[arg(long, env = "MARATHON_DNS_MARATHON_REDIRECT_CREDENTIALS")]
    pub marathon_redirect_credentials: bool,

    /// Answer only clients in these networks (CIDR; comma-separated or repeated); the others
    /// get REFUSED. Default: anyone.
    #[arg(long = "allow-query", env = "MARATHON_DNS_ALLOW_QUERY", value_delimiter = ',', value_parser = crate::dns::policy::parse_net)]
    pub allow_query: Vec<ipnet::IpNet>,

    /// Response rate limiting: identical UDP responses per second to one client network (/24,
    /// /56); a response counts once per 1,232 bytes. 0 turns it off.
    #[arg(long, env = "MARATHON_DNS_RRL_RATE", default_value_t = 200)]
    pub rrl_rate: u32,

    /// Every Nth rate-limited response is sent as an empty truncated (TC=1) answer, which
    /// sends real clients to TCP; 0 drops them all.
    #[arg(long, env = "MARATHON_DNS_RRL_SLIP", default_value_t = 1)]
    pub rrl_slip: u32,

    /// Networks never rate limited (CIDR; comma-separated or repeated): HAProxy fleets,
    /// resolvers.
    #[arg(long = "rrl-exempt", env = "MARATHON_DNS_RRL_EXEMPT", value_delimiter = ',', value_parser = crate::dns::policy::parse_net)]
    pub rrl_exempt: Vec<ipnet::IpNet>,

    /// Open TCP connections at most; more are closed as soon as accepted.
    #[arg(long, env = "MARATHON_DNS_TCP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub tcp_max_connections: usize,

    /// Open TCP connections at most per client address.
    #[arg(
        long,
        env = "MARATHON_DNS_TCP_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 32
    )]
    pub tcp_max_connections_per_client: usize,

    /// Close a TCP connection after it has answered this many queries.
    #[arg(long, env = "MARATHON_DNS_TCP_MAX_QUERIES", default_value_t = 10_000)]
    pub tcp_max_queries: usize,

    /// Close a TCP connection this long after it opened (after the answer in progress).
    #[arg(long, env = "MARATHON_DNS_TCP_MAX_LIFETIME", default_value = "10m", value_parser = parse_duration)]
    pub tcp_max_lifetime: Duration,

    /// Secondaries that may transfer the zones (AXFR/IXFR over TCP), as CIDR (comma-separated
    /// or repeated). Default: nobody (REFUSED). See docs/scale-out.md.
    #[arg(long = "allow-transfer", env = "MARATHON_DNS_ALLOW_TRANSFER", value_delimiter = ',', value_parser = crate::dns::policy::parse_net)]
    pub allow_transfer: Vec<ipnet::IpNet>,

    /// Versions of the Marathon zone kept for IXFR (one per publish; at most 500,000 changed
    /// records in all). A secondary further behind gets the whole zone.
    #[arg(long, env = "MARATHON_DNS_IXFR_HISTORY", default_value_t = 1000)]
    pub ixfr_history: usize,

    /// Secondaries to NOTIFY (ADDR:PORT, comma-separated or repeated) when the Marathon zone's
    /// serial changes.
    #[arg(long = "notify", env = "MARATHON_DNS_NOTIFY", value_delimiter = ',')]
    pub notify: Vec<SocketAddr>,

    /// TSIG key NAME:ALGORITHM:BASE64SECRET (hmac-sha256, hmac-sha384, hmac-sha512;
    /// repeatable). With a key, transfers must be signed with one, and NOTIFYs are signed
    /// with the first. Prefer --tsig-key-file: arguments are visible to other local users.
    #[arg(
        long = "tsig-key",
        env = "MARATHON_DNS_TSIG_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tsig_key: Vec<String>,

    /// File of TSIG keys in BIND's format, as `tsig-keygen` or `keymgr -t` write them
    /// (`key "name" { algorithm hmac-sha256; secret "..."; };`).
    #[arg(long, env = "MARATHON_DNS_TSIG_KEY_FILE")]
    pub tsig_key_file: Option<PathBuf>,
}

const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8054";

/// The admin listener's address, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminListen(pub Option<SocketAddr>);

/// `ADDR:PORT` or `off`.
pub fn parse_admin_listen(s: &str) -> Result<AdminListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(AdminListen(None));
    }
    s.parse::<SocketAddr>()
        .map(|a| AdminListen(Some(a)))
        .map_err(|_| format!("invalid admin address {s:?}: expected ADDR:PORT or off"))
}

impl ServeArgs {
    /// The defaults: what an empty command line gives, whatever the environment says. The
    /// `#[arg]` attributes above are the only place defaults are written.
    pub fn defaults() -> Self {
        let cmd = Self::augment_args(clap::Command::new("marathon-dns"))
            .mut_args(|a| a.env(None::<&'static str>));
        cmd.try_get_matches_from(["marathon-dns"])
            .and_then(|m| Self::from_arg_matches(&m))
            // Only the attributes above are parsed here; `defaults_parse` checks them.
            .expect("the built-in defaults parse")
    }
}

/// `marathon-dns dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Address to serve DNS on, UDP and TCP.
    #[arg(long = "listen", default_value = DEFAULT_LISTEN)]
    pub listen: Vec<SocketAddr>,

    /// Seconds between simulated task churn steps.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub churn: Duration,

    /// Directory of static zone files.
    #[arg(long, default_value = DEFAULT_ZONES_DIR)]
    pub zones_dir: PathBuf,

    /// UDP worker threads per listen address (default: one per core; 0: hickory's UDP loop).
    #[arg(long)]
    pub udp_workers: Option<usize>,

    /// HTTP admin listener; `off` for none.
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN, value_parser = parse_admin_listen)]
    pub admin_listen: AdminListen,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn defaults_parse_and_ignore_the_environment() {
        let d = ServeArgs::defaults();
        assert!(d.marathon.is_empty());
        assert_eq!(d.listen, [SocketAddr::from(([127, 0, 0, 1], 8053))]);
        assert_eq!(d.zone, "marathon.local");
        assert_eq!(d.ttl, 5);
        assert_eq!(d.zones_dir, PathBuf::from("zones"));
        assert_eq!(d.resync_interval, Duration::from_secs(300));
        assert_eq!(d.stream_timeout, Duration::from_secs(60));
        assert!(!d.include_unhealthy && !d.no_leader_lookup);
        assert_eq!(d.max_udp_payload, None);
        assert_eq!(d.tcp_idle_timeout, Duration::from_secs(10));
        assert_eq!(d.serial_file, None);
        assert_eq!(d.coalesce, Duration::from_millis(20));
        assert_eq!(d.udp_workers, None);
        assert!(d.marathon_credentials.is_none() && d.marathon_token.is_none());
    }

    #[test]
    fn cli_parses_repeated_and_comma_lists() {
        let cli = Cli::try_parse_from([
            "marathon-dns",
            "serve",
            "--marathon",
            "http://m1:8080,http://m2:8080",
            "--listen",
            "127.0.0.1:53",
            "--listen",
            "[::1]:53",
        ])
        .expect("parses");
        let Some(Command::Serve(args)) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.marathon.len(), 2);
        assert_eq!(args.listen.len(), 2);
        assert_eq!(args.resync_interval, Duration::from_secs(300));
    }
}
