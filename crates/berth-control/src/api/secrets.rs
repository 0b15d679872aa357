use std::sync::Arc;

use berth_core::namespace as ns;
use berth_core::secret::{Secret, MAX_SECRET_BYTES};
use berth_core::Outcome;
use berth_proto::v1::secrets_server::Secrets;
use berth_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::error::{ApiError, ApiResult};
use crate::node::{Node, WriteRequest};

pub struct SecretsApi {
    pub node: Arc<Node>,
}

/// What the API shows of a secret: never its value, sealed or not.
fn info(s: &Secret) -> SecretInfo {
    let (namespace, name) = ns::split(&s.name);
    SecretInfo {
        name: name.to_string(),
        namespace: namespace.to_string(),
        version: s.version,
        created_at_ms: s.created_at,
        updated_at_ms: s.updated_at,
    }
}

fn secret_of(outcome: Outcome) -> ApiResult<SecretInfo> {
    match outcome {
        Outcome::Secret(s) => Ok(info(&s)),
        other => Err(ApiError::Internal(format!(
            "unexpected outcome for a secret: {other:?}"
        ))),
    }
}

fn name(namespace: &str, n: &str) -> ApiResult<String> {
    berth_core::validate::name("name", n)?;
    super::qualify(namespace, "name", n)
}

#[tonic::async_trait]
impl Secrets for SecretsApi {
    async fn put(
        &self,
        req: Request<PutSecretRequest>,
    ) -> Result<Response<PutSecretResponse>, Status> {
        let by = super::caller(&req);
        let namespace = super::namespace(&req)?;
        let r = req.into_inner();
        let name = name(&namespace, &r.name)?;
        if std::str::from_utf8(&r.value).is_err() || r.value.contains(&0) {
            return Err(ApiError::invalid(
                "value must be UTF-8 text without NUL bytes (it becomes an environment variable)",
            )
            .into());
        }
        if r.value.len() > MAX_SECRET_BYTES {
            return Err(ApiError::invalid(format!(
                "value is {} bytes; a secret holds at most {MAX_SECRET_BYTES}",
                r.value.len()
            ))
            .into());
        }
        let key = self.node.cfg.secrets_key.as_ref().ok_or_else(|| {
            ApiError::FailedPrecondition(
                "this node has no secrets key, so it takes no secrets: give every control node \
                 the same secrets.key in its --tls-dir (`berth tls secrets-key --dir DIR` makes \
                 one)"
                    .into(),
            )
        })?;
        let sealed = key
            .seal(&name, &r.value)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let (revision, outcome) = self
            .node
            .write_by(by.as_ref(), WriteRequest::PutSecret { name, sealed })
            .await?;
        let secret = secret_of(outcome)?;
        tracing::info!(secret = %secret.name, namespace = %secret.namespace, version = secret.version, "secret put");
        Ok(Response::new(PutSecretResponse {
            secret: Some(secret),
            revision,
        }))
    }

    async fn list(
        &self,
        req: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        let namespace = super::namespace(&req)?;
        let r = req.into_inner();
        self.node.read_barrier(r.stale).await?;
        let s = self.node.state.read();
        let secrets = s
            .state
            .secrets()
            .filter(|x| ns::of(&x.name) == namespace)
            .map(info)
            .collect();
        Ok(Response::new(ListSecretsResponse {
            secrets,
            revision: s.state.revision(),
        }))
    }

    async fn delete(
        &self,
        req: Request<DeleteSecretRequest>,
    ) -> Result<Response<DeleteSecretResponse>, Status> {
        let by = super::caller(&req);
        let namespace = super::namespace(&req)?;
        let name = name(&namespace, &req.into_inner().name)?;
        let (revision, outcome) = self
            .node
            .write_by(by.as_ref(), WriteRequest::DeleteSecret { name })
            .await?;
        Ok(Response::new(DeleteSecretResponse {
            secret: Some(secret_of(outcome)?),
            revision,
        }))
    }
}
