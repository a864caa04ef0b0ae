//! Who is asking the approval API and the console: the holder of the API's bearer token, or a
//! person a trusted authenticating proxy vouches for in an identity header
//! (`approvals.identity_header`, from a peer in `approvals.trusted_proxies`; docs/configuration.md).
//!
//! The header is believed only from a proxy's own address: anyone else can set any header, so
//! from any other peer it is ignored (and without the token the request is refused). Behind a
//! trusted proxy the identity it names is the one audited: a name in the request body does not
//! override it.

use axum::http::{HeaderMap, HeaderName};
use std::net::{IpAddr, SocketAddr};

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

#[derive(Debug, Clone)]
struct TrustedProxy {
    header: HeaderName,
    networks: Vec<Network>,
}

/// An address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0..{max}")),
            },
        };
        Ok(Network { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> (u128, u8) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ip = ip.to_canonical();
        let ((net, width), (got, got_width)) = (bits(self.addr), bits(ip));
        if width != got_width {
            return false;
        }
        let shift = u32::from(width - self.prefix);
        // A shift by the full width (prefix 0) matches everything.
        net.checked_shr(shift).unwrap_or(0) == got.checked_shr(shift).unwrap_or(0)
    }
}

/// The longest identity a proxy may name (audited in outcomes and logs).
const MAX_IDENTITY: usize = 200;

impl Gate {
    /// A gate for `token` alone.
    pub fn token(token: String) -> Self {
        Gate { token, proxy: None }
    }

    /// A gate for `token` and, when `header` is not empty, the identity a proxy at one of
    /// `proxies` (addresses or CIDR blocks) names in that header. `Err((key, why))` names the
    /// configuration key at fault.
    pub fn new(token: String, header: &str, proxies: &[String]) -> Result<Self, (&'static str, String)> {
        const HEADER: &str = "approvals.identity_header";
        const PROXIES: &str = "approvals.trusted_proxies";
        let proxy = match header.trim() {
            "" if proxies.is_empty() => None,
            "" => return Err((HEADER, "is empty, but approvals.trusted_proxies is set".into())),
            h => {
                let header =
                    HeaderName::try_from(h).map_err(|_| (HEADER, format!("{h:?} is not an HTTP header name")))?;
                if header == axum::http::header::AUTHORIZATION {
                    return Err((HEADER, "cannot be Authorization".into()));
                }
                if proxies.is_empty() {
                    return Err((
                        PROXIES,
                        "is empty, but approvals.identity_header is set: the header would be believed from anyone"
                            .into(),
                    ));
                }
                let networks = proxies
                    .iter()
                    .map(|p| Network::parse(p).map_err(|e| (PROXIES, e)))
                    .collect::<Result<_, _>>()?;
                Some(TrustedProxy { header, networks })
            }
        };
        Ok(Gate { token, proxy })
    }

    /// Who sent a request with `headers` from `peer` (`None`: unknown, so no proxy is
    /// believed); `None` when neither the token nor a trusted proxy vouches for it.
    pub fn caller(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<Caller> {
        if let (Some(proxy), Some(peer)) = (&self.proxy, peer) {
            if proxy.networks.iter().any(|n| n.contains(peer.ip())) {
                let named = headers.get(&proxy.header).and_then(|v| v.to_str().ok()).map(str::trim);
                if let Some(id) = named.filter(|id| valid_identity(id)) {
                    return Some(Caller::Proxy(id.to_string()));
                }
            }
        }
        crate::http::bearer(headers)
            .is_some_and(|given| super::same_secret(given, &self.token))
            .then_some(Caller::Token)
    }
}

fn valid_identity(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_IDENTITY && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::try_from(*k).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn the_header_is_believed_only_from_a_trusted_proxy() {
        let gate = Gate::new(
            "tok".into(),
            "X-Remote-User",
            &["10.1.0.0/16".into(), "192.168.5.7".into(), "fd00::/8".into()],
        )
        .unwrap();
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
    fn a_proxy_configuration_that_would_trust_anyone_is_refused() {
        for (header, proxies, key, want) in [
            (
                "X-Remote-User",
                vec![],
                "approvals.trusted_proxies",
                "is empty, but approvals.identity_header is set",
            ),
            (
                "",
                vec!["10.0.0.1"],
                "approvals.identity_header",
                "is empty, but approvals.trusted_proxies is set",
            ),
            (
                "Bad Header",
                vec!["10.0.0.1"],
                "approvals.identity_header",
                "is not an HTTP header name",
            ),
            (
                "Authorization",
                vec!["10.0.0.1"],
                "approvals.identity_header",
                "cannot be Authorization",
            ),
            (
                "X-Remote-User",
                vec!["10.0.0.300"],
                "approvals.trusted_proxies",
                "\"10.0.0.300\" is not an IP address",
            ),
            (
                "X-Remote-User",
                vec!["10.0.0.0/33"],
                "approvals.trusted_proxies",
                "the prefix length must be 0..32",
            ),
            (
                "X-Remote-User",
                vec!["::/129"],
                "approvals.trusted_proxies",
                "the prefix length must be 0..128",
            ),
            (
                "X-Remote-User",
                vec!["example.com"],
                "approvals.trusted_proxies",
                "is not an IP address or CIDR block",
            ),
        ] {
            let proxies: Vec<String> = proxies.into_iter().map(String::from).collect();
            let (k, e) = Gate::new("t".into(), header, &proxies).unwrap_err();
            assert_eq!(k, key, "{header:?} {proxies:?}: {e}");
            assert!(e.contains(want), "{header:?} {proxies:?}: {e}");
        }
        assert!(Gate::new("t".into(), "", &[]).is_ok());
        // A /0 block trusts every address of its family, and no other.
        let all_v4 = Gate::new("t".into(), "X-U", &["0.0.0.0/0".into()]).unwrap();
        let h = headers(&[("x-u", "dave")]);
        assert_eq!(
            all_v4.caller(&h, peer("203.0.113.9")),
            Some(Caller::Proxy("dave".into()))
        );
        assert_eq!(all_v4.caller(&h, peer("2001:db8::1")), None);
    }
}
