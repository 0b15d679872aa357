//! The API's gate: every call is authenticated before its service sees it.

use std::future::Future;
use std::sync::Arc;

use berth_core::access::Need;
use tonic::Status;

use super::{need_of_path, Caller};

type CheckFuture = std::pin::Pin<Box<dyn Future<Output = Result<Caller, Status>> + Send>>;

/// Decides whether a call's headers carry a token that allows `need`.
pub type Check = Arc<dyn Fn(Need, &http::HeaderMap) -> CheckFuture + Send + Sync>;

/// Authenticates every call to the services it wraps before it reaches them: a call whose
/// method needs a token ([`need_of_path`]) runs only if `check` accepts its headers, with
/// the [`Caller`] in its extensions; any other answer is the refusal, and the service never
/// sees the call.
#[derive(Clone)]
pub struct AuthLayer {
    check: Option<Check>,
}

impl AuthLayer {
    pub fn new(check: Check) -> Self {
        AuthLayer { check: Some(check) }
    }

    /// Lets every call through with no caller: a cluster without TLS takes no tokens.
    pub fn open() -> Self {
        AuthLayer { check: None }
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
    check: Option<Check>,
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
        let (Some(check), Some(need)) = (&self.check, need_of_path(req.uri().path())) else {
            return Box::pin(inner.call(req));
        };
        let checked = check(need, req.headers());
        Box::pin(async move {
            match checked.await {
                Ok(caller) => {
                    let scope = (caller.accessor.clone(), need, caller.namespace.clone());
                    req.extensions_mut().insert(caller);
                    super::CALLER.scope(scope, inner.call(req)).await
                }
                Err(refused) => {
                    tracing::warn!(
                        peer = %peer_of(&req),
                        rpc = %req.uri().path(),
                        code = ?refused.code(),
                        refused = %refused.message(),
                        "API call refused"
                    );
                    Ok(refused.into_http())
                }
            }
        })
    }
}

/// The address a call came from, for the log of a refusal.
fn peer_of<B>(req: &http::Request<B>) -> String {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let e = req.extensions();
    e.get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| e.get::<TcpConnectInfo>().and_then(|i| i.remote_addr()))
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::HEADER;

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
                        namespace: "default".into(),
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
                accessor: "r".into(),
                namespace: "default".into(),
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
