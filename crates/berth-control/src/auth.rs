//! Who is calling the API: the bearer token a call carries (`authorization: Bearer …`),
//! checked against the tokens in the replicated state. A token's text never leaves this
//! module: the state keeps its SHA-256, and messages name its accessor only.

use berth_core::access::{self, AccessToken, Need, Role};
use berth_core::ClusterState;
use ring::digest::{digest as sha, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use std::future::Future;
use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::Status;

/// The header a token travels in, as `Bearer <token>`.
pub const HEADER: &str = "authorization";

/// The token text a call carries, or why there is none.
pub fn bearer(md: &MetadataMap) -> Result<&str, Status> {
    let value = md.get(HEADER).ok_or_else(|| {
        Status::unauthenticated(
            "this call needs a token: give --token or BERTH_TOKEN (an admin makes one with \
             `berth token create`)",
        )
    })?;
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    text.strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| Status::unauthenticated("the authorization header is not `Bearer <token>`"))
}

/// SHA-256 of a token's text, lowercase hex: what the state keeps.
pub fn digest(text: &str) -> String {
    sha(&SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new token: its text (shown once) and the record the state keeps.
pub fn mint(name: &str, role: Role) -> Result<(String, AccessToken), Status> {
    access::check_name(name).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let rng = SystemRandom::new();
    let mut bytes = [0u8; 8 + 32];
    rng.fill(&mut bytes)
        .map_err(|_| Status::internal("the system's random source failed"))?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let accessor = hex(&bytes[..8]);
    let text = access::token_text(&accessor, &hex(&bytes[8..]));
    let record = AccessToken {
        accessor,
        name: name.to_string(),
        role,
        digest: digest(&text),
        created_at: 0,
        created_by: String::new(),
        revoked_at: None,
    };
    Ok((text, record))
}

/// The accessor of the live token `md` carries, if it allows `need` on `state`; else
/// UNAUTHENTICATED (no token, not a token, unknown, wrong secret, revoked) or
/// PERMISSION_DENIED (a role short of `need`).
pub fn check(state: &ClusterState, md: &MetadataMap, need: Need) -> Result<String, Status> {
    let text = bearer(md)?;
    let (accessor, _) =
        access::parse_token(text).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let known = state.access_token(accessor).ok_or_else(|| {
        Status::unauthenticated(format!("token {accessor} is not known to this cluster"))
    })?;
    // Digests, not secrets, are compared: timing tells nothing about the secret.
    if known.digest != digest(text) {
        return Err(Status::unauthenticated(format!(
            "token {accessor} does not match its record (a forged or mistyped token)"
        )));
    }
    state
        .authorize(accessor, need)
        .map_err(|e| tonic::Status::from(crate::error::ApiError::from(e)))?;
    Ok(accessor.to_string())
}

/// What a call to the public API needs of its caller's token, by gRPC path
/// (`/berth.v1.Service/Method`). `None` for the services stock tools probe without a token
/// (health, reflection). A method this table does not name needs an admin: deny by default,
/// and a test holds the table to every method the protos declare.
pub fn need_of_path(path: &str) -> Option<Need> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    if service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.") {
        return None;
    }
    let need = match (service, method) {
        ("berth.v1.TaskDefinitions", "Describe" | "List")
        | ("berth.v1.Tasks", "Describe" | "List" | "Watch" | "Logs")
        | ("berth.v1.Agents", "List" | "Describe")
        | ("berth.v1.Cluster", "Status")
        | ("berth.v1.Events", "Watch")
        | ("berth.v1.Usage", "Get")
        | ("berth.v1.Services", "Describe" | "List") => Need::Read,
        ("berth.v1.TaskDefinitions", "Register" | "Deregister")
        | ("berth.v1.Tasks", "Run" | "Stop")
        | ("berth.v1.Services", "Create" | "Update" | "Delete" | "PutScalingPolicy") => Need::Write,
        _ => Need::Admin,
    };
    Some(need)
}

/// Who an API call was authenticated as: the accessor of its token, put in the request's
/// extensions for the handler (a write is made as this token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub accessor: String,
}

type CheckFuture = std::pin::Pin<Box<dyn Future<Output = Result<Caller, Status>> + Send>>;

/// Decides whether a call's headers carry a token that allows `need`.
pub type Check = Arc<dyn Fn(Need, &http::HeaderMap) -> CheckFuture + Send + Sync>;

/// Authenticates every call to the services it wraps before it reaches them: a call whose
/// method needs a token ([`need_of_path`]) runs only if `check` accepts its headers, with
/// the [`Caller`] in its extensions; any other answer is the refusal, and the service never
/// sees the call.
#[derive(Clone)]
pub struct AuthLayer {
    check: Check,
}

impl AuthLayer {
    pub fn new(check: Check) -> Self {
        AuthLayer { check }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            check: self.check.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    check: Check,
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The service that was polled ready is the one to call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(need) = need_of_path(req.uri().path()) else {
            return Box::pin(inner.call(req));
        };
        let checked = (self.check)(need, req.headers());
        Box::pin(async move {
            match checked.await {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    inner.call(req).await
                }
                Err(refused) => Ok(refused.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{Batch, Command};

    /// Every method of the public protos, as `/package.Service/Method`.
    fn declared_methods() -> Vec<String> {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(berth_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut out = Vec::new();
        for f in set.file {
            for s in &f.service {
                for m in &s.method {
                    out.push(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
                }
            }
        }
        out
    }

    #[test]
    fn every_api_method_has_a_decided_need_and_writes_are_never_reads() {
        let methods = declared_methods();
        assert!(methods.len() >= 25, "{methods:?}");
        let mut by_need = std::collections::BTreeMap::<&str, Vec<&str>>::new();
        for m in &methods {
            let need = need_of_path(m).unwrap_or_else(|| panic!("{m} would be open"));
            by_need
                .entry(match need {
                    Need::Read => "read",
                    Need::Write => "write",
                    Need::Admin => "admin",
                })
                .or_default()
                .push(m);
        }
        // Membership, settings and draining are an admin's; a method added to the protos
        // lands here too until the table names it.
        assert_eq!(
            by_need["admin"],
            vec![
                "/berth.v1.Agents/Drain",
                "/berth.v1.Cluster/Join",
                "/berth.v1.Cluster/Leave",
                "/berth.v1.Cluster/UpdateSettings",
            ],
            "{by_need:#?}"
        );
        for m in &by_need["read"] {
            let verb = m.rsplit('/').next().unwrap_or_default();
            assert!(
                ["Describe", "List", "Watch", "Logs", "Status", "Get"].contains(&verb),
                "{m} is a read"
            );
        }
        assert_eq!(need_of_path("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            need_of_path("/berth.v1.Tasks/SomethingNew"),
            Some(Need::Admin)
        );
    }

    fn md(token: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(HEADER, format!("Bearer {token}").parse().unwrap());
        m
    }

    #[test]
    fn a_minted_token_is_checked_by_digest_and_role() {
        let (admin_text, admin) = mint("first", Role::Admin).unwrap();
        let (reader_text, reader) = mint("ro", Role::Reader).unwrap();
        assert!(admin_text.starts_with("berth_"));
        assert!(
            !format!("{admin:?}").contains(&admin_text[23..]),
            "no secret kept"
        );
        let mut st = ClusterState::default();
        st.apply(
            1,
            &Batch {
                now: 1,
                commands: vec![
                    Command::BootstrapAccessToken(admin.clone()),
                    Command::As {
                        accessor: admin.accessor.clone(),
                        command: Box::new(Command::CreateAccessToken(reader.clone())),
                    },
                ],
            },
        );
        assert_eq!(
            check(&st, &md(&admin_text), Need::Admin).unwrap(),
            admin.accessor
        );
        assert!(check(&st, &md(&reader_text), Need::Read).is_ok());
        let e = check(&st, &md(&reader_text), Need::Write).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        // Same accessor, another secret: forged.
        let forged = format!("{}{}", &admin_text[..23], "0".repeat(64));
        let e = check(&st, &md(&forged), Need::Read).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("does not match"), "{e:?}");
        assert!(!e.message().contains(&forged[23..]));
        for bad in [MetadataMap::new(), md("nonsense")] {
            let e = check(&st, &bad, Need::Read).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        }
        let (stranger, _) = mint("elsewhere", Role::Admin).unwrap();
        let e = check(&st, &md(&stranger), Need::Read).unwrap_err();
        assert!(e.message().contains("not known"), "{e:?}");
    }

    /// The layer in front of a real gRPC server: a call without the right token never
    /// reaches the service; one with it arrives carrying its caller; health needs none.
    #[tokio::test]
    async fn the_layer_refuses_before_the_service_and_hands_it_the_caller() {
        use berth_proto::v1::cluster_client::ClusterClient;
        use berth_proto::v1::cluster_server::{Cluster, ClusterServer};
        use berth_proto::v1::*;

        #[derive(Clone, Default)]
        struct Seen(Arc<std::sync::Mutex<Vec<Option<Caller>>>>);
        #[tonic::async_trait]
        impl Cluster for Seen {
            async fn status(
                &self,
                req: tonic::Request<ClusterStatusRequest>,
            ) -> Result<tonic::Response<ClusterStatusResponse>, Status> {
                self.0
                    .lock()
                    .unwrap()
                    .push(req.extensions().get::<Caller>().cloned());
                Ok(tonic::Response::new(ClusterStatusResponse::default()))
            }
            async fn join(
                &self,
                req: tonic::Request<JoinRequest>,
            ) -> Result<tonic::Response<JoinResponse>, Status> {
                self.0
                    .lock()
                    .unwrap()
                    .push(req.extensions().get::<Caller>().cloned());
                Ok(tonic::Response::new(JoinResponse::default()))
            }
            async fn leave(
                &self,
                _: tonic::Request<LeaveRequest>,
            ) -> Result<tonic::Response<LeaveResponse>, Status> {
                Err(Status::unimplemented("test"))
            }
            async fn update_settings(
                &self,
                _: tonic::Request<UpdateSettingsRequest>,
            ) -> Result<tonic::Response<UpdateSettingsResponse>, Status> {
                Err(Status::unimplemented("test"))
            }
        }

        // A reader's token, by its whole header: enough to test the layer's plumbing.
        let check: Check = Arc::new(|need, headers: &http::HeaderMap| {
            let ok = headers.get(HEADER).and_then(|v| v.to_str().ok()) == Some("Bearer r");
            Box::pin(async move {
                match (ok, need) {
                    (false, _) => Err(Status::unauthenticated("no token")),
                    (true, Need::Read) => Ok(Caller {
                        accessor: "r".into(),
                    }),
                    (true, _) => Err(Status::permission_denied("a reader")),
                }
            })
        });
        let seen = Seen::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<ClusterServer<Seen>>().await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(AuthLayer::new(check))
                .add_service(health)
                .add_service(ClusterServer::new(seen.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        fn with<T>(token: Option<&str>, r: T) -> tonic::Request<T> {
            let mut req = tonic::Request::new(r);
            if let Some(t) = token {
                req.metadata_mut()
                    .insert(HEADER, format!("Bearer {t}").parse().unwrap());
            }
            req
        }
        let e = ClusterClient::new(ch.clone())
            .status(with(None, ClusterStatusRequest {}))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = ClusterClient::new(ch.clone())
            .join(with(Some("r"), JoinRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            seen.0.lock().unwrap().is_empty(),
            "refused calls reached the service"
        );
        ClusterClient::new(ch.clone())
            .status(with(Some("r"), ClusterStatusRequest {}))
            .await
            .unwrap();
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![Some(Caller {
                accessor: "r".into()
            })]
        );
        let health = tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert!(health.is_ok(), "{health:?}");
    }
}
