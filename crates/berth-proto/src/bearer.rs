//! A client's API token on every call: `authorization: Bearer <token>`, and the namespace
//! it acts in (`berth-namespace`), added by an interceptor so that one channel serves every
//! service client.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The header a token travels in.
pub const HEADER: &str = "authorization";
/// The header naming the namespace a call acts in; without it, `default`.
pub const NAMESPACE_HEADER: &str = "berth-namespace";

/// Adds the token and the namespace, when there are, to every request it sees.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>, Option<MetadataValue<Ascii>>);

/// A channel to the API that carries a token: what every service client is built on.
pub type Api = InterceptedService<Channel, Bearer>;

#[derive(Debug, thiserror::Error)]
#[error("the token or namespace holds characters a header cannot carry (a Berth token is `berth_` and hex; a namespace lowercase letters, digits and `-`)")]
pub struct NotAHeader;

impl Bearer {
    /// A token's text; `None` sends no header (a cluster without TLS takes no tokens).
    pub fn new(token: Option<&str>) -> Result<Self, NotAHeader> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Bearer(None, None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|mut v: MetadataValue<Ascii>| {
                    // Kept out of h2's header compression tables and debug output.
                    v.set_sensitive(true);
                    Bearer(Some(v), None)
                })
                .map_err(|_| NotAHeader),
        }
    }

    /// Every call acts in namespace `ns` (the server checks the name).
    pub fn in_namespace(mut self, ns: Option<&str>) -> Result<Self, NotAHeader> {
        self.1 = match ns.map(str::trim).filter(|n| !n.is_empty()) {
            None => None,
            Some(n) => Some(n.parse().map_err(|_| NotAHeader)?),
        };
        Ok(self)
    }

    /// `channel`, carrying this token.
    pub fn on(&self, channel: Channel) -> Api {
        InterceptedService::new(channel, self.clone())
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<token>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(HEADER, v.clone());
        }
        if let Some(v) = &self.1 {
            req.metadata_mut().insert(NAMESPACE_HEADER, v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn the_token_goes_in_the_header_and_only_when_given() {
        let mut b = Bearer::new(Some(" berth_ab_cd\n")).unwrap();
        let r = b.call(Request::new(())).unwrap();
        assert_eq!(r.metadata().get(HEADER).unwrap(), "Bearer berth_ab_cd");
        assert!(!format!("{b:?}").contains("berth_ab"));
        let r = Bearer::new(None).unwrap().call(Request::new(())).unwrap();
        assert!(r.metadata().get(HEADER).is_none());
        assert!(Bearer::new(Some("")).unwrap().0.is_none());
        assert!(Bearer::new(Some("a\u{7f}b")).is_err());
        let mut b = Bearer::new(None)
            .unwrap()
            .in_namespace(Some("team-a"))
            .unwrap();
        let r = b.call(Request::new(())).unwrap();
        assert_eq!(r.metadata().get(NAMESPACE_HEADER).unwrap(), "team-a");
        assert!(r.metadata().get(HEADER).is_none());
    }
}
