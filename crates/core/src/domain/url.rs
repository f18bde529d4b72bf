use std::net::IpAddr;

use crate::Error;

/// Where Portico calls a merchant back: `https`, or `http` to a loopback host for local
/// development; no credentials in it, no fragment, at most 2,048 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl(url::Url);

impl CallbackUrl {
    pub fn parse(input: &str) -> Result<CallbackUrl, Error> {
        let bad = |why: String| Err(Error::validation("callback_url", why));
        let s = input.trim();
        if s.len() > 2048 {
            return bad("must be at most 2048 characters".into());
        }
        let url = match url::Url::parse(s) {
            Ok(u) => u,
            Err(e) => return bad(format!("is not a URL ({e})")),
        };
        let Some(host) = url.host() else {
            return bad("must have a host".into());
        };
        if !url.username().is_empty() || url.password().is_some() {
            return bad("must not contain a user name or password".into());
        }
        if url.fragment().is_some() {
            return bad("must not contain a fragment (#…)".into());
        }
        let loopback = match host {
            url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
            url::Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
            url::Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return bad("must use https (http is allowed only for localhost)".into()),
            other => return bad(format!("must use https, not {other}")),
        }
        Ok(CallbackUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// An OAuth2 redirect URI (RFC 6749 §3.1.2, RFC 8252): absolute, no fragment; `https`,
/// `http` to a loopback host, or a private-use scheme in reverse-domain form
/// (`com.example.app:/callback`) for native apps. Compared exactly when used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri(String);

impl RedirectUri {
    pub fn parse(input: &str) -> Result<RedirectUri, Error> {
        let bad = |why: String| Err(Error::validation("redirect_uri", why));
        if input.len() > 2048 {
            return bad("must be at most 2048 characters".into());
        }
        if input.trim() != input || input.is_empty() {
            return bad("must be an absolute URI without surrounding spaces".into());
        }
        let url = match url::Url::parse(input) {
            Ok(u) => u,
            Err(e) => return bad(format!("is not an absolute URI ({e})")),
        };
        if url.fragment().is_some() {
            return bad("must not contain a fragment".into());
        }
        match url.scheme() {
            "https" if url.host().is_some() => {}
            "http" => {
                let loopback = match url.host() {
                    Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                };
                if !loopback {
                    return bad("must use https (http is allowed only for loopback hosts)".into());
                }
            }
            scheme if scheme.contains('.') => {}
            other => return bad(format!("scheme {other} is not allowed: use https, http to loopback, or a reverse-domain scheme")),
        }
        Ok(RedirectUri(input.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn redirect_uris() {
        for ok in ["https://shop.example.cn/oauth/cb", "http://127.0.0.1:8765/cb", "http://localhost/cb", "com.example.shop:/oauth2redirect"] {
            assert!(RedirectUri::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/relative", "http://shop.example.cn/cb", "https://shop.example.cn/cb#x", "javascript:alert(1)", " https://a.cn/cb", "ftp://a.cn/"] {
            assert!(RedirectUri::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rules() {
        assert!(CallbackUrl::parse("https://merchant.example.com/hooks").is_ok());
        assert!(CallbackUrl::parse("http://127.0.0.1:9000/cb").is_ok());
        assert!(CallbackUrl::parse("http://localhost/cb").is_ok());
        assert!(CallbackUrl::parse("http://[::1]:80/cb").is_ok());
        for bad in ["", "merchant.example.com", "http://merchant.example.com/", "ftp://x.com/", "https://u:p@x.com/", "https://x.com/#a", "javascript:alert(1)"] {
            assert!(CallbackUrl::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = CallbackUrl::parse(&s);
            let _ = RedirectUri::parse(&s);
        }
    }
}
