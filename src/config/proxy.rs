//! `approvals.identity_header` and `approvals.trusted_proxies` (docs/configuration.md): the header
//! in which an authenticating proxy names the person, and the addresses it is believed from.
//! Parsed once at load (a configuration that would believe the header from anyone is refused,
//! naming the key); the approval API and the console ask it who a request names
//! (`crate::approval::identity`).

use axum::http::{HeaderMap, HeaderName};
use std::net::{IpAddr, SocketAddr};

/// The proxies whose identity header is believed, and that header.
#[derive(Debug, Clone)]
pub struct TrustedProxy {
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

impl TrustedProxy {
    /// The proxy `header` names the person in, believed from `proxies` (addresses or CIDR
    /// blocks); `None` when both are empty. `Err((key, why))` names the configuration key at
    /// fault: one without the other, a header that is not one (or is `Authorization`), an
    /// address that is not one.
    pub fn parse(header: &str, proxies: &[String]) -> Result<Option<Self>, (&'static str, String)> {
        const HEADER: &str = "approvals.identity_header";
        const PROXIES: &str = "approvals.trusted_proxies";
        match header.trim() {
            "" if proxies.is_empty() => Ok(None),
            "" => Err((HEADER, "is empty, but approvals.trusted_proxies is set".into())),
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
                Ok(Some(TrustedProxy { header, networks }))
            }
        }
    }

    /// The identity a request from `peer` names in the header, if `peer` is one of the proxies
    /// and the identity is 1..200 characters without control characters.
    pub fn identity(&self, headers: &HeaderMap, peer: SocketAddr) -> Option<String> {
        if !self.networks.iter().any(|n| n.contains(peer.ip())) {
            return None;
        }
        let named = headers.get(&self.header).and_then(|v| v.to_str().ok()).map(str::trim)?;
        let valid = !named.is_empty() && named.len() <= MAX_IDENTITY && !named.chars().any(char::is_control);
        valid.then(|| named.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_that_would_trust_anyone_is_refused_naming_the_key() {
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
            let (k, e) = TrustedProxy::parse(header, &proxies).unwrap_err();
            assert_eq!(k, key, "{header:?} {proxies:?}: {e}");
            assert!(e.contains(want), "{header:?} {proxies:?}: {e}");
        }
        assert!(TrustedProxy::parse("", &[]).unwrap().is_none());
    }
}
