//! Who is asking the approval API and the console: the holder of the API's bearer token, or a
//! person a trusted authenticating proxy vouches for in an identity header
//! (`approvals.identity_header`, from a peer in `approvals.trusted_proxies`; docs/configuration.md).
//!
//! The header is believed only from a proxy's own address: anyone else can set any header, so
//! from any other peer it is ignored (and without the token the request is refused). Behind a
//! trusted proxy the identity it names is the one audited: a name in the request body does not
//! override it.

use crate::config::TrustedProxy;
use axum::http::HeaderMap;
use std::net::SocketAddr;

/// Who a request comes from, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// It holds the API's bearer token; the name it gives is audited as given.
    Token,
    /// A trusted proxy vouches for this identity.
    Proxy(String),
}

impl Caller {
    /// The name to audit: the proxy's identity, else the name the request gives.
    pub fn name(&self, given: &str) -> String {
        match self {
            Caller::Token => given.to_string(),
            Caller::Proxy(id) => id.clone(),
        }
    }
}

/// The approval API's and the console's door: the token, and optionally a trusted proxy.
#[derive(Debug, Clone)]
pub struct Gate {
    token: String,
    proxy: Option<TrustedProxy>,
}

impl Gate {
    /// A gate for `token` alone.
    pub fn token(token: String) -> Self {
        Gate { token, proxy: None }
    }

    /// A gate for `token` and the identity `proxy` names, if any.
    pub fn new(token: String, proxy: Option<TrustedProxy>) -> Self {
        Gate { token, proxy }
    }

    /// Who sent a request with `headers` from `peer` (`None`: unknown, so no proxy is
    /// believed); `None` when neither the token nor a trusted proxy vouches for it.
    pub fn caller(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<Caller> {
        if let (Some(proxy), Some(peer)) = (&self.proxy, peer) {
            if let Some(id) = proxy.identity(headers, peer) {
                return Some(Caller::Proxy(id));
            }
        }
        crate::http::bearer(headers)
            .is_some_and(|given| super::same_secret(given, &self.token))
            .then_some(Caller::Token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::try_from(*k).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn gate(token: &str, header: &str, proxies: &[&str]) -> Gate {
        let proxies: Vec<String> = proxies.iter().map(|p| p.to_string()).collect();
        Gate::new(token.into(), TrustedProxy::parse(header, &proxies).expect("valid"))
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn the_header_is_believed_only_from_a_trusted_proxy() {
        let gate = gate("tok", "X-Remote-User", &["10.1.0.0/16", "192.168.5.7", "fd00::/8"]);
        let alice = headers(&[("x-remote-user", "alice")]);
        for ip in ["10.1.2.3", "10.1.255.255", "192.168.5.7", "fd00::1", "::ffff:10.1.0.9"] {
            assert_eq!(
                gate.caller(&alice, peer(ip)),
                Some(Caller::Proxy("alice".into())),
                "{ip}"
            );
        }
        for ip in ["10.2.0.1", "192.168.5.8", "127.0.0.1", "fe80::1", "::1"] {
            assert_eq!(gate.caller(&alice, peer(ip)), None, "{ip}: the header from anyone else");
        }
        assert_eq!(gate.caller(&alice, None), None, "an unknown peer is not a proxy");
        // Without an identity (or with a bad one) a proxy's request needs the token.
        let too_long = "a".repeat(201);
        for bad in [
            vec![],
            vec![("x-remote-user", "")],
            vec![("x-remote-user", "  ")],
            vec![("x-remote-user", too_long.as_str())],
        ] {
            assert_eq!(gate.caller(&headers(&bad), peer("10.1.2.3")), None, "{bad:?}");
        }
        assert_eq!(
            gate.caller(&headers(&[("x-remote-user", &"b".repeat(200))]), peer("10.1.2.3")),
            Some(Caller::Proxy("b".repeat(200)))
        );
        // The token works from anywhere, and the proxy's identity wins over it.
        let both = headers(&[("authorization", "Bearer tok"), ("x-remote-user", "bob")]);
        assert_eq!(gate.caller(&both, peer("127.0.0.1")), Some(Caller::Token));
        assert_eq!(gate.caller(&both, peer("10.1.0.1")), Some(Caller::Proxy("bob".into())));
        assert_eq!(
            gate.caller(&headers(&[("authorization", "Bearer nope")]), peer("10.1.0.1")),
            None
        );
        assert_eq!(Caller::Proxy("bob".into()).name("mallory"), "bob");
        assert_eq!(Caller::Token.name("carol"), "carol");
    }

    #[test]
    fn a_token_only_gate_ignores_every_header() {
        let gate = Gate::token("tok".into());
        let h = headers(&[("x-remote-user", "alice"), ("x-forwarded-user", "alice")]);
        assert_eq!(gate.caller(&h, peer("127.0.0.1")), None);
        assert_eq!(
            gate.caller(&headers(&[("authorization", "Bearer tok")]), None),
            Some(Caller::Token)
        );
    }

    #[test]
    fn a_slash_zero_block_trusts_its_whole_family_and_no_other() {
        // A /0 block trusts every address of its family, and no other.
        let all_v4 = gate("t", "X-U", &["0.0.0.0/0"]);
        let h = headers(&[("x-u", "dave")]);
        assert_eq!(
            all_v4.caller(&h, peer("203.0.113.9")),
            Some(Caller::Proxy("dave".into()))
        );
        assert_eq!(all_v4.caller(&h, peer("2001:db8::1")), None);
    }
}
