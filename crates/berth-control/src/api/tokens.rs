use std::sync::Arc;

use berth_core::access::{self, Role};
use berth_core::{quote, Outcome};
use berth_proto::v1::tokens_server::Tokens;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::error::{ApiError, ApiResult};
use crate::node::{Node, WriteRequest};

pub struct TokensApi {
    pub node: Arc<Node>,
}

/// A token's record as the API shows it: never its digest.
pub fn token_to_wire(t: &access::AccessToken) -> AccessToken {
    AccessToken {
        accessor: t.accessor.clone(),
        name: t.name.clone(),
        role: t.role.as_str().to_string(),
        created_at_ms: t.created_at,
        created_by: t.created_by.clone(),
        revoked_at_revision: t.revoked_at,
        namespaces: if t.role == Role::Admin {
            vec![berth_core::namespace::ALL_NAMESPACES.to_string()]
        } else {
            t.namespaces.clone()
        },
    }
}

impl TokensApi {
    fn takes_tokens(&self) -> ApiResult<()> {
        if self.node.cfg.tls.is_none() {
            return Err(ApiError::FailedPrecondition(
                "this cluster runs without TLS (--insecure) and takes no tokens: anyone who \
                 reaches it may call anything"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn token_of(outcome: Outcome) -> ApiResult<AccessToken> {
    match outcome {
        Outcome::AccessToken(t) => Ok(token_to_wire(&t)),
        other => Err(ApiError::Internal(format!(
            "unexpected outcome for a token: {other:?}"
        ))),
    }
}

#[tonic::async_trait]
impl Tokens for TokensApi {
    async fn create(
        &self,
        req: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        self.takes_tokens()?;
        let by = super::caller(&req);
        let r = req.into_inner();
        let role = Role::parse(&r.role).map_err(ApiError::from)?;
        let (secret, mut record) = crate::auth::mint(&r.name, role)?;
        if role == Role::Admin {
            // An admin's token acts in every namespace, whatever it was asked for.
            record.namespaces = vec![berth_core::namespace::ALL_NAMESPACES.to_string()];
        } else if !r.namespaces.is_empty() {
            record.namespaces = r.namespaces;
        }
        record.check().map_err(ApiError::from)?;
        let (revision, outcome) = self
            .node
            .write_by(by.as_ref(), WriteRequest::CreateAccessToken(record))
            .await?;
        let token = token_of(outcome)?;
        tracing::info!(accessor = %token.accessor, role = %token.role, "token created");
        Ok(Response::new(CreateTokenResponse {
            token: Some(token),
            secret,
            revision,
        }))
    }

    async fn list(
        &self,
        req: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        self.takes_tokens()?;
        let r = req.into_inner();
        self.node.read_barrier(r.stale).await?;
        let s = self.node.state.read();
        let mut tokens: Vec<_> = s.state.access_tokens().map(token_to_wire).collect();
        tokens.sort_by(|a, b| (a.created_at_ms, &a.accessor).cmp(&(b.created_at_ms, &b.accessor)));
        Ok(Response::new(ListTokensResponse {
            tokens,
            revision: s.state.revision(),
        }))
    }

    async fn revoke(
        &self,
        req: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        self.takes_tokens()?;
        let by = super::caller(&req);
        let accessor = req.into_inner().accessor;
        if !access::is_accessor(&accessor) {
            return Err(ApiError::invalid(format!(
                "accessor {} is not a token's accessor ({} lowercase hex digits; `berth token ls` \
                 lists them)",
                quote(&accessor),
                access::ACCESSOR_LEN
            ))
            .into());
        }
        let (revision, outcome) = self
            .node
            .write_by(
                by.as_ref(),
                WriteRequest::RevokeAccessToken {
                    accessor: accessor.clone(),
                },
            )
            .await?;
        tracing::info!(%accessor, revision, "token revoked");
        Ok(Response::new(RevokeTokenResponse {
            token: Some(token_of(outcome)?),
            revision,
        }))
    }
}
