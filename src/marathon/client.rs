//! Marathon over HTTP: leader discovery, the full snapshot, single-app re-fetches, and the
//! one way every request is made ([`MarathonClient::get_following`], which the event stream
//! uses too).
//!
//! Credentials are attached by hand to every request, including after a redirect (reqwest
//! would strip `Authorization` on a cross-host redirect; Marathon needs it re-sent to the
//! leader). https is refused at every hop (no TLS is built in). Credentials never appear in
//! logs or errors: [`Auth`]'s `Debug` is redacted and URLs carry no user info.

use std::time::Duration;

use base64::Engine;
use reqwest::{StatusCode, Url, header};

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
    #[error(
        "Marathon URL {0:?}: https is not supported (no TLS built in); use http inside the \
         cluster or terminate TLS in front of Marathon"
    )]
    Https(String),
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
}

/// Settings of the Marathon client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub urls: Vec<Url>,
    pub auth: Option<Auth>,
    /// Look up `/v2/leader`; off means "use the configured URLs as they are".
    pub leader_lookup: bool,
    pub request_timeout: Duration,
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
    if url.scheme() != "http" {
        return Err(ClientError::Https(redact(raw)));
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
    cfg: ClientConfig,
}

const MAX_REDIRECTS: usize = 3;

impl MarathonClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Http {
                url: String::new(),
                reason: chain(&e),
            })?;
        Ok(Self { http, cfg })
    }

    pub fn auth(&self) -> Option<&Auth> {
        self.cfg.auth.as_ref()
    }

    /// The same client for a long-lived stream: no overall request timeout, but a connection
    /// that stays silent for `read_timeout` fails.
    pub fn for_streaming(&self, read_timeout: Duration) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(read_timeout)
            .build()
            .map_err(|e| ClientError::Http {
                url: String::new(),
                reason: chain(&e),
            })?;
        Ok(Self {
            http,
            cfg: self.cfg.clone(),
        })
    }

    /// GET, following redirects by hand (re-sending credentials): the body as text.
    async fn get(&self, url: Url) -> Result<String, ClientError> {
        let (url, resp) = self.send(url).await?;
        resp.text().await.map_err(|e| ClientError::Http {
            url: url.to_string(),
            reason: chain(&e.without_url()),
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
    /// credentials are re-sent to wherever a standby points, and https is refused at every
    /// hop. The first answer that is not a redirect, whatever its status, body unread, and
    /// the URL that gave it.
    pub async fn get_following(
        &self,
        url: Url,
        mut headers: header::HeaderMap,
    ) -> Result<(Url, reqwest::Response), ClientError> {
        if let Some(auth) = &self.cfg.auth {
            let value = header::HeaderValue::from_str(&auth.header_value())
                .map_err(|_| ClientError::BadCredentials)?;
            headers.insert(header::AUTHORIZATION, value);
        }
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            if url.scheme() != "http" {
                return Err(ClientError::Https(redact(url.as_str())));
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
        let body = tokio_util::io::StreamReader::new(
            resp.bytes_stream()
                .map_err(|e| std::io::Error::other(chain(&e.without_url()))),
        );
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
        assert!(matches!(
            parse_url("https://m1:8443"),
            Err(ClientError::Https(_))
        ));
    }

    #[tokio::test]
    async fn a_redirect_to_https_is_refused() {
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
                        b"HTTP/1.1 302 Found\r\nLocation: https://leader:8443/v2/events\r\n\
                          Content-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        let (url, auth) = parse_url(&format!("http://{addr}")).expect("url");
        let client = MarathonClient::new(ClientConfig {
            urls: vec![url.clone()],
            auth,
            leader_lookup: false,
            request_timeout: Duration::from_secs(5),
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
        assert!(matches!(got, Err(ClientError::Https(_))), "{got:?}");
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
