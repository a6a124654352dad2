//! Marathon over HTTP: leader discovery, the full snapshot, single-app re-fetches, and the
//! one way every request is made ([`MarathonClient::get_following`], which the event stream
//! uses too).
//!
//! Credentials are attached by hand to every request, including after a redirect (reqwest
//! would strip `Authorization` on a cross-host redirect; Marathon needs it re-sent to the
//! leader). A redirect from https to plain http is refused, so credentials never leave TLS.
//! When Marathon answers 401 and the credentials came from a file, the file is read again
//! and the request retried once (an expiring DC/OS token is rotated on disk). Credentials
//! never appear in logs or errors: [`Auth`]'s `Debug` is redacted and URLs carry no user info.
//!
//! TLS is rustls with the `ring` provider, built here (not by reqwest) so that the provider,
//! the roots (the system store plus `--marathon-ca-file`) and the client certificate are
//! chosen in one place; the REST and the streaming client share it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use reqwest::{StatusCode, Url, header};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::convert::{self, AppSink, CollectApps, DecodeError};
use crate::cluster::{App, ServiceApp};

/// How to authenticate to Marathon.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// HTTP basic auth (`--http_credentials` on open-source Marathon).
    Basic { user: String, password: String },
    /// DC/OS ACS token: `Authorization: token=<jwt>`.
    Token(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { user, .. } => write!(f, "Basic({user}:<redacted>)"),
            Self::Token(_) => write!(f, "Token(<redacted>)"),
        }
    }
}

impl Auth {
    /// Parse `user:password`.
    pub fn basic(credentials: &str) -> Option<Self> {
        let (user, password) = credentials.trim_end_matches(['\r', '\n']).split_once(':')?;
        Some(Self::Basic {
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    /// The `Authorization` header value.
    pub fn header_value(&self) -> String {
        match self {
            Self::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            Self::Token(t) => format!("token={}", t.trim()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid Marathon URL {0:?}")]
    BadUrl(String),
    #[error("Marathon URL {0:?}: only http and https are supported")]
    Scheme(String),
    #[error("{from} redirects to plain http ({to}); refused so that credentials stay under TLS")]
    Downgrade { from: String, to: String },
    #[error("TLS to Marathon")]
    Tls(#[from] TlsError),
    #[error("request to {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: DecodeError,
    },
    #[error("the Marathon credentials do not form a valid HTTP header")]
    BadCredentials,
    #[error("{url}: the body is larger than {limit} bytes (--marathon-max-body); refused")]
    TooLarge { url: String, limit: u64 },
}

/// Why the TLS settings do not make a TLS client.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a PEM file of the expected kind: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{}: no certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: certificate not usable as a trust anchor", path.display())]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("--marathon-client-cert and --marathon-client-key must be given together")]
    HalfIdentity,
    #[error("the client certificate and key are not usable")]
    Identity(#[source] rustls::Error),
    #[error("the TLS protocol versions are not supported by the crypto provider")]
    Protocol(#[source] rustls::Error),
}

/// TLS settings: extra trust and an optional client identity (mutual TLS). The system's
/// root store is always trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of CA certificates trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to Marathon.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// Where the credentials came from, so they can be read again after a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFile {
    /// `--marathon-token-file`.
    Token(PathBuf),
    /// `--marathon-credentials-file` (`user:password`).
    Credentials(PathBuf),
}

impl AuthFile {
    fn path(&self) -> &Path {
        match self {
            Self::Token(p) | Self::Credentials(p) => p,
        }
    }

    /// Read the file again. The error never includes its content.
    async fn read(&self) -> Result<Auth, String> {
        let text = tokio::fs::read_to_string(self.path())
            .await
            .map_err(|e| e.to_string())?;
        match self {
            Self::Token(_) => Ok(Auth::Token(text.trim().to_string())),
            Self::Credentials(_) => {
                Auth::basic(text.trim()).ok_or_else(|| "not user:password".to_string())
            }
        }
    }
}

/// Settings of the Marathon client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub urls: Vec<Url>,
    pub auth: Option<Auth>,
    /// Re-read after a 401 (replacing `auth`).
    pub auth_file: Option<AuthFile>,
    /// Look up `/v2/leader`; off means "use the configured URLs as they are".
    pub leader_lookup: bool,
    /// A REST response that sends nothing for this long fails (there is no limit on the
    /// total time: a 100,000-task snapshot takes seconds to stream).
    pub read_timeout: Duration,
    pub tls: TlsConfig,
    /// REST bodies larger than this are refused (the last good zone stays).
    pub max_body: u64,
    /// Send the credentials to a redirect target that is not a configured Marathon host.
    pub redirect_credentials: bool,
}

/// Generous limits that fit a 100,000-task cluster (its `/v2/apps?embed=apps.tasks` is
/// about 100 MB).
pub const DEFAULT_MAX_BODY: u64 = 512 * 1024 * 1024;

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The rustls client configuration: the `ring` provider, the system roots plus the CA file,
/// and the client identity if any.
pub fn rustls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("system root store: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!("{added} system root certificates ({ignored} unusable)");
    if let Some(path) = &tls.ca_file {
        for cert in pem_certs(path)? {
            roots.add(cert).map_err(|source| TlsError::BadCa {
                path: path.clone(),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?
        .with_root_certificates(roots);
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = pem_certs(cert)?;
            let key_pem = read_file(key)?;
            // The parse error is generic on purpose: it must not quote the key.
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
                path: key.clone(),
                reason: match e {
                    rustls::pki_types::pem::Error::NoItemsFound => "no private key in it".into(),
                    _ => "unreadable private key".into(),
                },
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsError::Identity)?
        }
        _ => return Err(TlsError::HalfIdentity),
    };
    // Marathon speaks HTTP/1.1 (the client is built without HTTP/2).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Parse a configured Marathon URL. User info in it becomes basic auth and is removed from the
/// URL so it can be logged.
pub fn parse_url(raw: &str) -> Result<(Url, Option<Auth>), ClientError> {
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|_| ClientError::BadUrl(redact(raw)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Scheme(redact(raw)));
    }
    // The URL keeps user info percent-encoded; Marathon wants the real characters.
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let auth = (!url.username().is_empty()).then(|| Auth::Basic {
        user: decode(url.username()),
        password: decode(url.password().unwrap_or_default()),
    });
    url.set_username("")
        .map_err(|()| ClientError::BadUrl(redact(raw)))?;
    url.set_password(None)
        .map_err(|()| ClientError::BadUrl(redact(raw)))?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok((url, auth))
}

/// The URL without user info, for messages: everything up to the last `@` before the path.
fn redact(raw: &str) -> String {
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let prefix = if scheme.is_empty() {
                String::new()
            } else {
                format!("{scheme}://")
            };
            format!("{prefix}<redacted>@{}", &rest[at + 1..])
        }
        None => raw.to_string(),
    }
}

/// An error and its causes on one line (`a: b: c`), so that the log says *why*.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The Marathon REST client.
#[derive(Debug, Clone)]
pub struct MarathonClient {
    http: reqwest::Client,
    tls: rustls::ClientConfig,
    cfg: ClientConfig,
    /// The credentials in use: `cfg.auth`, or what the credentials file said after a 401.
    /// Shared with the streaming client, so one re-read serves both.
    auth: Arc<Mutex<Option<Auth>>>,
    /// Leaders that configured Marathons named in `/v2/leader` (trusted with credentials,
    /// like the configured hosts).
    leaders: Arc<Mutex<Vec<HostKey>>>,
}

/// A host as credentials are scoped to it: lower-cased name and port.
type HostKey = (Option<String>, Option<u16>);

fn host_key(u: &Url) -> HostKey {
    (
        u.host_str().map(str::to_ascii_lowercase),
        u.port_or_known_default(),
    )
}

const MAX_REDIRECTS: usize = 3;

fn http_client(
    tls: &rustls::ClientConfig,
    timeouts: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, ClientError> {
    timeouts(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .tls_backend_preconfigured(tls.clone()),
    )
    .build()
    .map_err(|e| ClientError::Http {
        url: String::new(),
        reason: chain(&e),
    })
}

impl MarathonClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        let tls = rustls_config(&cfg.tls)?;
        let timeout = cfg.read_timeout;
        let http = http_client(&tls, |b| b.read_timeout(timeout))?;
        Ok(Self {
            http,
            tls,
            auth: Arc::new(Mutex::new(cfg.auth.clone())),
            leaders: Arc::default(),
            cfg,
        })
    }

    /// The credentials in use.
    pub fn auth(&self) -> Option<Auth> {
        self.auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The same client for a long-lived stream: no overall request timeout, but a connection
    /// that stays silent for `read_timeout` fails. Same TLS settings and credentials.
    pub fn for_streaming(&self, read_timeout: Duration) -> Result<Self, ClientError> {
        let http = http_client(&self.tls, |b| b.read_timeout(read_timeout))?;
        Ok(Self {
            http,
            tls: self.tls.clone(),
            cfg: self.cfg.clone(),
            auth: Arc::clone(&self.auth),
            leaders: Arc::clone(&self.leaders),
        })
    }

    /// Use the credentials `other` was built with from now on (a reload). `true` if they
    /// differ from the current ones.
    pub fn take_auth_from(&self, other: &MarathonClient) -> bool {
        let fresh = other
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut current = self
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = *current != fresh;
        *current = fresh;
        changed
    }

    /// After a 401: read the credentials file again. `true` if it now says something else
    /// (then the request is worth one retry).
    async fn reread_auth(&self) -> bool {
        let Some(file) = &self.cfg.auth_file else {
            return false;
        };
        match file.read().await {
            Ok(fresh) => {
                let mut current = self
                    .auth
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if current.as_ref() == Some(&fresh) {
                    tracing::warn!(
                        "Marathon answered 401 and {} is unchanged",
                        file.path().display()
                    );
                    false
                } else {
                    tracing::info!(
                        "Marathon answered 401: using the new credentials from {}",
                        file.path().display()
                    );
                    *current = Some(fresh);
                    true
                }
            }
            Err(e) => {
                tracing::warn!(
                    "Marathon answered 401 and {} cannot be read again: {e}",
                    file.path().display()
                );
                false
            }
        }
    }

    /// The body limit.
    pub fn max_body(&self) -> u64 {
        self.cfg.max_body
    }

    /// GET, following redirects by hand (re-sending credentials): the body as text, at most
    /// `max_body` bytes.
    async fn get(&self, url: Url) -> Result<String, ClientError> {
        let (url, mut resp) = self.send(url).await?;
        let limit = self.cfg.max_body;
        let too_large = || ClientError::TooLarge {
            url: url.to_string(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| ClientError::Http {
            url: url.to_string(),
            reason: chain(&e.without_url()),
        })? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| ClientError::Http {
            url: url.to_string(),
            reason: "the body is not UTF-8".into(),
        })
    }

    /// GET with credentials, following redirects by hand (re-sending credentials): the
    /// successful response, body unread, and the URL that gave it.
    async fn send(&self, url: Url) -> Result<(Url, reqwest::Response), ClientError> {
        let mut headers = header::HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            header::HeaderValue::from_static("application/json"),
        );
        let (url, resp) = self.get_following(url, headers).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ClientError::Status {
                url: url.to_string(),
                status,
            });
        }
        Ok((url, resp))
    }

    /// GET `url` with `headers` and the credentials, following redirects by hand: the
    /// credentials are re-sent to wherever a standby points, never from https to http. On a
    /// 401 with credentials from a file, the file is read again and, if it changed, the
    /// request made once more. The first answer that is not a redirect, whatever its status,
    /// body unread, and the URL that gave it.
    pub async fn get_following(
        &self,
        url: Url,
        headers: header::HeaderMap,
    ) -> Result<(Url, reqwest::Response), ClientError> {
        let (answered, resp) = self
            .get_following_once(url.clone(), headers.clone())
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED && self.reread_auth().await {
            return self.get_following_once(url, headers).await;
        }
        Ok((answered, resp))
    }

    async fn get_following_once(
        &self,
        url: Url,
        mut headers: header::HeaderMap,
    ) -> Result<(Url, reqwest::Response), ClientError> {
        if let Some(auth) = self.auth() {
            let value = header::HeaderValue::from_str(&auth.header_value())
                .map_err(|_| ClientError::BadCredentials)?;
            headers.insert(header::AUTHORIZATION, value);
        }
        let mut url = url;
        // The last https URL on the way, if any: no plain http after it.
        let mut tls_from: Option<String> = None;
        for _ in 0..=MAX_REDIRECTS {
            if headers.contains_key(header::AUTHORIZATION)
                && !self.cfg.redirect_credentials
                && !self.trusted_host(&url)
            {
                // A redirect off the cluster must not carry its credentials.
                tracing::warn!(
                    "{} is not a configured Marathon host: asking it without credentials (--marathon-redirect-credentials allows them)",
                    redact(url.as_str())
                );
                headers.remove(header::AUTHORIZATION);
            }
            match url.scheme() {
                "https" => tls_from = Some(redact(url.as_str())),
                "http" if tls_from.is_some() => {
                    return Err(ClientError::Downgrade {
                        from: tls_from.unwrap_or_default(),
                        to: redact(url.as_str()),
                    });
                }
                "http" => {}
                _ => return Err(ClientError::Scheme(redact(url.as_str()))),
            }
            let req = self.http.get(url.clone()).headers(headers.clone());
            let resp = req.send().await.map_err(|e| ClientError::Http {
                url: url.to_string(),
                reason: chain(&e.without_url()),
            })?;
            let status = resp.status();
            if status.is_redirection() {
                let next = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok());
                match next {
                    Some(next) => {
                        tracing::debug!(
                            "{} redirects to {}",
                            redact(url.as_str()),
                            redact(next.as_str())
                        );
                        url = next;
                        continue;
                    }
                    None => {
                        return Err(ClientError::Status {
                            url: url.to_string(),
                            status,
                        });
                    }
                }
            }
            return Ok((url, resp));
        }
        Err(ClientError::Status {
            url: url.to_string(),
            status: StatusCode::LOOP_DETECTED,
        })
    }

    /// Whether `url` is on a configured Marathon host or a leader one of them named: only
    /// those get the credentials.
    fn trusted_host(&self, url: &Url) -> bool {
        let key = host_key(url);
        self.cfg.urls.iter().any(|u| host_key(u) == key)
            || self
                .leaders
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&key)
    }

    fn join(base: &Url, path: &str) -> Result<Url, ClientError> {
        base.join(path)
            .map_err(|_| ClientError::BadUrl(path.to_string()))
    }

    /// The leader's base URL, or, without leader lookup, the configured URLs in order.
    ///
    /// The leader's `host:port` is mapped back onto a configured URL when one matches (keeping
    /// its scheme and path prefix); otherwise the configured scheme is used with the
    /// advertised host. If no Marathon answers `/v2/leader`, the configured URLs are returned
    /// so that the stream can still follow a standby's 302.
    pub async fn candidates(&self) -> Vec<Url> {
        if !self.cfg.leader_lookup {
            return self.cfg.urls.clone();
        }
        for base in &self.cfg.urls {
            let Ok(url) = Self::join(base, "v2/leader") else {
                continue;
            };
            let leader = match self.get(url).await {
                Ok(body) => match convert::leader_response(&body) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!("{base}: unusable /v2/leader answer: {e}");
                        continue;
                    }
                },
                Err(e) => {
                    // The caller's own failure, if any, is what gets logged.
                    tracing::debug!("leader lookup failed: {e}");
                    continue;
                }
            };
            let configured = self.cfg.urls.iter().find(|u| {
                u.host_str()
                    .zip(u.port_or_known_default())
                    .map(|(h, p)| format!("{h}:{p}"))
                    == Some(leader.clone())
            });
            if let Some(u) = configured {
                return vec![u.clone()];
            }
            if let Ok(u) = Url::parse(&format!("{}://{leader}/", base.scheme())) {
                let mut leaders = self
                    .leaders
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let key = host_key(&u);
                if !leaders.contains(&key) {
                    leaders.push(key);
                }
                return vec![u];
            }
        }
        self.cfg.urls.clone()
    }

    /// `GET /v2/apps`: every app's definition (no tasks), for a load balancer.
    pub async fn service_apps(
        &self,
        base: &Url,
    ) -> Result<(Vec<ServiceApp>, Vec<String>), ClientError> {
        let url = Self::join(base, "v2/apps")?;
        let body = self.get(url.clone()).await?;
        convert::service_apps_response(&body).map_err(|source| ClientError::Decode {
            url: url.to_string(),
            source,
        })
    }

    /// `GET /v2/apps?embed=apps.tasks`: every app with its tasks and health results.
    /// Returns the apps and the errors of apps that could not be parsed (skipped).
    pub async fn apps(&self, base: &Url) -> Result<(Vec<App>, Vec<String>), ClientError> {
        let all = self.apps_into(base, CollectApps::default()).await?;
        Ok((all.apps, all.skipped))
    }

    /// `GET /v2/apps?embed=apps.tasks`, each app handed to `sink` while the body streams in
    /// (tens of megabytes at 100,000 tasks are never held whole), parsed on a blocking thread.
    pub async fn apps_into<S: AppSink + Send + 'static>(
        &self,
        base: &Url,
        mut sink: S,
    ) -> Result<S, ClientError> {
        use futures_util::TryStreamExt;
        let url = Self::join(base, "v2/apps?embed=apps.tasks")?;
        let (url, resp) = self.send(url).await?;
        let limit = self.cfg.max_body;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(ClientError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        let body = tokio_util::io::StreamReader::new(limit_body(
            resp.bytes_stream()
                .map_err(|e| std::io::Error::other(chain(&e.without_url()))),
            limit,
        ));
        let reader =
            std::io::BufReader::with_capacity(64 * 1024, tokio_util::io::SyncIoBridge::new(body));
        let parsed = tokio::task::spawn_blocking(move || {
            convert::apps_stream(reader, &mut sink).map(|()| sink)
        })
        .await
        .map_err(|e| ClientError::Http {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        parsed.map_err(|source| ClientError::Decode {
            url: url.to_string(),
            source,
        })
    }

    /// `GET /v2/pods/::status`: every pod with its instances; `None` if this Marathon has no
    /// pods API (before 1.4: 404).
    pub async fn pods_status(
        &self,
        base: &Url,
    ) -> Result<Option<crate::marathon::pods::PodsListing>, ClientError> {
        let url = Self::join(base, "v2/pods/::status")?;
        match self.get(url.clone()).await {
            Ok(body) => crate::marathon::pods::pods_status_response(&body)
                .map(Some)
                .map_err(|source| ClientError::Decode {
                    url: url.to_string(),
                    source,
                }),
            Err(ClientError::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/pods/{id}::status`; `None` if the pod no longer exists.
    pub async fn pod_status(&self, base: &Url, id: &str) -> Result<Option<App>, ClientError> {
        let url = Self::join(base, &format!("v2/pods{id}::status"))?;
        match self.get(url.clone()).await {
            Ok(body) => crate::marathon::pods::pod_status_response(&body)
                .map(Some)
                .map_err(|source| ClientError::Decode {
                    url: url.to_string(),
                    source,
                }),
            Err(ClientError::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/apps/{id}?embed=app.tasks`; `None` if the app no longer exists.
    pub async fn app(&self, base: &Url, id: &str) -> Result<Option<App>, ClientError> {
        let url = Self::join(base, &format!("v2/apps{id}?embed=app.tasks"))?;
        match self.get(url.clone()).await {
            Ok(body) => {
                convert::app_response(&body)
                    .map(Some)
                    .map_err(|source| ClientError::Decode {
                        url: url.to_string(),
                        source,
                    })
            }
            Err(ClientError::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `stream` failing once more than `limit` bytes have come.
fn limit_body<S>(
    stream: S,
    limit: u64,
) -> impl futures_util::Stream<Item = std::io::Result<tokio_util::bytes::Bytes>>
where
    S: futures_util::Stream<Item = std::io::Result<tokio_util::bytes::Bytes>>,
{
    use futures_util::StreamExt;
    let mut seen = 0u64;
    stream.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(std::io::Error::other(format!(
                "the body is larger than {limit} bytes (--marathon-max-body)"
            )));
        }
        Ok(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_becomes_auth_and_leaves_the_url() {
        let (url, auth) = parse_url("http://alice:s3cret@m1:8080").expect("parses");
        assert_eq!(url.as_str(), "http://m1:8080/");
        assert_eq!(auth, Some(Auth::basic("alice:s3cret").expect("basic")));
        assert!(!format!("{auth:?}").contains("s3cret"));
        let (url, auth) = parse_url("m2:8080/marathon").expect("parses");
        assert_eq!(url.as_str(), "http://m2:8080/marathon/");
        assert_eq!(auth, None);
    }

    #[test]
    fn special_characters_and_redaction() {
        let (_, auth) = parse_url("http://u:p%40ss@m1:8080").expect("parses");
        assert_eq!(auth, Some(Auth::basic("u:p@ss").expect("basic")));
        let (_, auth) = parse_url("http://u:p@ss@m1:8080").expect("parses");
        assert_eq!(auth, Some(Auth::basic("u:p@ss").expect("basic")));
        let err = parse_url("http://u:p@ss@m1:99999")
            .expect_err("bad port")
            .to_string();
        assert!(!err.contains("ss@") && !err.contains("p@"), "{err}");
        let (url, _) = parse_url("https://m1:8443").expect("https parses");
        assert_eq!(url.as_str(), "https://m1:8443/");
        assert!(matches!(
            parse_url("ftp://m1:21"),
            Err(ClientError::Scheme(_))
        ));
    }

    #[tokio::test]
    async fn a_redirect_to_another_scheme_is_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 302 Found\r\nLocation: ftp://leader:8443/v2/events\r\n\
                          Content-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        let (url, auth) = parse_url(&format!("http://{addr}")).expect("url");
        let client = MarathonClient::new(ClientConfig {
            urls: vec![url.clone()],
            auth,
            auth_file: None,
            leader_lookup: false,
            read_timeout: Duration::from_secs(5),
            max_body: DEFAULT_MAX_BODY,
            redirect_credentials: false,
            tls: TlsConfig::default(),
        })
        .expect("client")
        .for_streaming(Duration::from_secs(5))
        .expect("streaming client");
        let got = client
            .get_following(
                url.join("v2/events").expect("url"),
                header::HeaderMap::new(),
            )
            .await;
        assert!(matches!(got, Err(ClientError::Scheme(_))), "{got:?}");
    }

    #[test]
    fn tls_settings_errors_name_the_file() {
        assert!(rustls_config(&TlsConfig::default()).is_ok());
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("absent.pem");
        let err = rustls_config(&TlsConfig {
            ca_file: Some(missing.clone()),
            ..TlsConfig::default()
        })
        .expect_err("missing CA file");
        assert!(
            matches!(&err, TlsError::Read { path, .. } if *path == missing),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = rustls_config(&TlsConfig {
            ca_file: Some(empty.clone()),
            ..TlsConfig::default()
        })
        .expect_err("no certificate");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let err = rustls_config(&TlsConfig {
            client_cert: Some(empty),
            ..TlsConfig::default()
        })
        .expect_err("certificate without key");
        assert!(matches!(err, TlsError::HalfIdentity));
    }

    #[test]
    fn header_values() {
        assert_eq!(
            Auth::basic("a:b").expect("basic").header_value(),
            "Basic YTpi"
        );
        assert_eq!(Auth::Token("xyz\n".into()).header_value(), "token=xyz");
        assert!(!format!("{:?}", Auth::Token("xyz".into())).contains("xyz"));
    }
}
