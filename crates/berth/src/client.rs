//! The CLI's connection to the cluster: a list of endpoints, tried in turn. A call that
//! fails because a node is down or has no leader moves on to the next endpoint by itself.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_proto::bearer::{Api, Bearer};
use tonic::transport::{Certificate, Endpoint};
use tonic::{Code, Status};

pub struct Client {
    endpoints: Vec<(String, Api)>,
    /// Index of the endpoint that answered last; tried first next time.
    preferred: AtomicUsize,
}

/// How the channels are secured.
pub enum Trust {
    /// Plaintext (`--insecure`).
    Plain,
    /// TLS trusting only this CA: the API port.
    Ca(Certificate),
    /// Mutual TLS as a holder of the cluster's certificates: the raft port.
    Mutual(berth_tls::grpc::Credentials),
}

/// Whether a failed call may be sent again elsewhere.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Repeating it has the effect of doing it once (reads, token-carrying writes).
    Safe,
    /// Only retry when the call surely never reached a server.
    OnlyIfUnsent,
}

impl Client {
    /// A client of the API at the options' endpoints: over TLS trusting the cluster CA, or
    /// plaintext when `--insecure` says so; with neither, an error saying where a CA comes
    /// from. Every call carries the options' token, if they name one.
    pub fn for_opts(opts: &crate::ClientOpts) -> Result<Self> {
        let trust = match trusted_ca(opts)? {
            Some(ca) => Trust::Ca(ca),
            None => Trust::Plain,
        };
        Self::with_trust(&opts.endpoint, &trust, &bearer(opts)?)
    }

    /// Channels to `endpoints`, secured as `trust` says (the servers' certificates must name
    /// the host each is reached at), each call carrying `bearer`'s token.
    pub fn with_trust(endpoints: &str, trust: &Trust, bearer: &Bearer) -> Result<Self> {
        let mut out = Vec::new();
        for e in endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let tls = !matches!(trust, Trust::Plain);
            let mut endpoint = Endpoint::from_shared(berth_tls::grpc::uri(e, tls))
                .with_context(|| format!("endpoint `{e}` is not HOST:PORT"))?;
            endpoint = match trust {
                Trust::Plain => Ok(endpoint),
                Trust::Ca(ca) => berth_tls::grpc::trusting(endpoint, ca.clone()),
                Trust::Mutual(creds) => creds.secure(endpoint),
            }
            .with_context(|| format!("TLS settings for `{e}`"))?;
            let ch = endpoint
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(30))
                .connect_lazy();
            out.push((e.to_string(), bearer.on(ch)));
        }
        if out.is_empty() {
            bail!("no endpoint given (use --endpoint HOST:PORT[,HOST:PORT…] or BERTH_ENDPOINT)");
        }
        Ok(Client {
            endpoints: out,
            preferred: AtomicUsize::new(0),
        })
    }

    /// Calls `f` on endpoints in turn until one answers with something other than
    /// unavailability. Two rounds over the list at most, with a short pause between.
    pub async fn call<T, F, Fut>(&self, retry: Retry, f: F) -> Result<T, Status>
    where
        F: Fn(Api) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..(2 * n) {
            let i = (start + attempt) % n;
            if attempt == n {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            match f(self.endpoints[i].1.clone()).await {
                Ok(v) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(s) if s.code() == Code::Unavailable || s.code() == Code::Unknown => {
                    let unsent = is_connect_error(&s);
                    let msg = format!("{}: {}", self.endpoints[i].0, s.message());
                    if retry == Retry::OnlyIfUnsent && !unsent {
                        return Err(Status::new(s.code(), msg));
                    }
                    last = Some(Status::new(s.code(), msg));
                }
                Err(s) => return Err(s),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no endpoint answered")))
    }
}

impl Client {
    /// One unary call of `req`, retried across endpoints as `call` does; a failure comes
    /// back as an error a person can read.
    pub async fn unary<Req, Resp, F, Fut>(
        &self,
        retry: Retry,
        req: &Req,
        f: F,
    ) -> anyhow::Result<Resp>
    where
        Req: Clone,
        F: Fn(Api, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.call(retry, |ch| {
            let fut = f(ch, req.clone());
            async move { fut.await.map(|r| r.into_inner()) }
        })
        .await
        .map_err(|s| anyhow::anyhow!(describe(&s)))
    }
}

/// Every item of a paged List: `page` is called with each `nextToken` in turn (empty
/// first) and answers a page's items and its `nextToken`, until one carries none.
pub async fn all_pages<T, F, Fut>(mut page: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<(Vec<T>, String)>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = page(token).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

/// The CA the options say to trust: None only with `--insecure`.
pub fn trusted_ca(opts: &crate::ClientOpts) -> Result<Option<Certificate>> {
    if opts.insecure {
        return Ok(None);
    }
    let Some(path) = &opts.tls_ca else {
        let file = crate::config::path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "$BERTH_CONFIG".into());
        bail!(
            "no cluster CA to trust: give --tls-ca FILE or BERTH_TLS_CA (a `berth tls` \
             directory's ca.pem; deploy/up.sh prints its own), or put BERTH_TLS_CA=FILE in \
             {file} (`berth dev` writes it); --insecure only for a cluster started with \
             --insecure"
        );
    };
    let pem = std::fs::read(path)
        .with_context(|| format!("--tls-ca {}: cannot read the cluster CA", path.display()))?;
    Ok(Some(Certificate::from_pem(pem)))
}

/// The token the options give: `--token` (or BERTH_TOKEN), else the first line of
/// `--token-file` (or BERTH_TOKEN_FILE, which `berth dev` puts in the config file).
pub fn token(opts: &crate::ClientOpts) -> Result<Option<String>> {
    if let Some(t) = opts.token.as_deref().filter(|t| !t.trim().is_empty()) {
        return Ok(Some(t.trim().to_string()));
    }
    let Some(path) = &opts.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--token-file {}: cannot read the token", path.display()))?;
    let t = text.lines().next().unwrap_or_default().trim();
    if t.is_empty() {
        bail!("--token-file {}: the file is empty", path.display());
    }
    Ok(Some(t.to_string()))
}

fn bearer(opts: &crate::ClientOpts) -> Result<Bearer> {
    if let Some(ns) = &opts.namespace {
        berth_core::namespace::check_name("--namespace", ns)?;
    }
    Bearer::new(token(opts)?.as_deref())
        .context("--token")?
        .in_namespace(opts.namespace.as_deref())
        .context("--namespace")
}

/// A connection that was never made: the request cannot have been processed.
fn is_connect_error(s: &Status) -> bool {
    let m = format!("{s:?}").to_ascii_lowercase();
    m.contains("connect") || m.contains("refused") || m.contains("dns")
}

/// Turns a gRPC failure into a message for a person, keeping the code visible.
pub fn describe(s: &Status) -> String {
    let code = match s.code() {
        Code::InvalidArgument => "invalid argument",
        Code::NotFound => "not found",
        Code::FailedPrecondition => "failed precondition",
        Code::AlreadyExists => "already exists",
        Code::Unavailable => "unavailable",
        Code::OutOfRange => "out of range",
        Code::ResourceExhausted => "resource exhausted",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission denied",
        _ => "error",
    };
    format!("{code}: {}", s.message())
}
