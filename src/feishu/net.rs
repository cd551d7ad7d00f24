//! Why no answer of the platform came: a failed request classified from the error's kind, not from
//! its wording where a type says it (DNS, a refused connection, a timeout, TLS, a proxy's tunnel, a
//! connection closed without a reply), and an answer that is not the platform's JSON (a proxy's or
//! captive portal's page, or a `feishu.base_url` that is not the platform).
//!
//! The sender only needs to know that such a request is retried ([`crate::feishu::classify`] says
//! so for every reply without a code); `check-config --online` ([`crate::online`]) names the class so
//! that an administrator knows where to look. Nothing here reads or keeps a URL, a header or a body
//! beyond a page's title.

use std::error::Error as StdError;
use std::io;

/// The class of a request that got no answer from the platform (or an answer from something else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The host name (of the platform or of the proxy) could not be resolved.
    Dns,
    /// The connection was refused: nothing listens there, or a firewall rejects it.
    Refused,
    /// No answer within `feishu.request_timeout_secs` (or no connection within the connect timeout).
    Timeout,
    /// The TLS handshake failed: a certificate that is not trusted, or no TLS at the other end.
    Tls,
    /// The proxy of the environment (`HTTPS_PROXY`...) refused to open a tunnel, or wants credentials.
    Proxy,
    /// No route to the host or network.
    Unreachable,
    /// The connection was closed or reset without a (whole) reply.
    Broken,
    /// An answer came, but it is not the platform's JSON: a proxy's or captive portal's page, or a
    /// `feishu.base_url` that is not the platform.
    NotPlatform,
    /// Any other failure of the request.
    Other,
}

impl Network {
    /// The class of a failed request.
    pub fn of(e: &reqwest::Error) -> Network {
        Self::of_chain(
            e.is_timeout(),
            std::iter::successors(e.source(), |c| (*c).source()),
        )
    }

    /// The class of a failure whose causes are `chain` (outermost first); `timed_out` when the
    /// client already knows it gave up waiting.
    pub fn of_chain<'a>(
        timed_out: bool,
        chain: impl IntoIterator<Item = &'a (dyn StdError + 'static)>,
    ) -> Network {
        let mut seen = Seen {
            timeout: timed_out,
            ..Seen::default()
        };
        for cause in chain {
            seen.look(cause);
            // io::Error's source() skips the error it wraps (and the TLS connector wraps its
            // rustls error in an io::Error inside another): look at each of those too
            let mut wrapped = cause
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref);
            while let Some(inner) = wrapped {
                seen.look(inner);
                wrapped = inner
                    .downcast_ref::<io::Error>()
                    .and_then(io::Error::get_ref);
            }
        }
        seen.verdict()
    }

    /// A short name for messages ("DNS failure", "connection refused"...).
    pub fn name(self) -> &'static str {
        match self {
            Network::Dns => "DNS failure",
            Network::Refused => "connection refused",
            Network::Timeout => "timeout",
            Network::Tls => "TLS error",
            Network::Proxy => "proxy error",
            Network::Unreachable => "network unreachable",
            Network::Broken => "connection closed without a reply",
            Network::NotPlatform => "not the platform's answer",
            Network::Other => "request failed",
        }
    }
}

/// What the causes of a failure showed.
#[derive(Default)]
struct Seen {
    timeout: bool,
    tls: bool,
    proxy: bool,
    dns: bool,
    refused: bool,
    unreachable: bool,
    broken: bool,
}

impl Seen {
    fn look(&mut self, cause: &(dyn StdError + 'static)) {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            use io::ErrorKind as K;
            match io.kind() {
                K::TimedOut => self.timeout = true,
                K::ConnectionRefused => self.refused = true,
                K::HostUnreachable
                | K::NetworkUnreachable
                | K::NetworkDown
                | K::AddrNotAvailable => self.unreachable = true,
                K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::NotConnected => self.broken = true,
                _ => {}
            }
        }
        if cause.is::<rustls::Error>() {
            self.tls = true;
        }
        if let Some(h) = cause.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                self.timeout = true;
            } else if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                self.broken = true;
            }
        }
        // hyper-util names its failures in types this crate cannot name: its connector's DNS step
        // ("dns error") and its proxy tunnel ("tunnel error: unsuccessful", "... proxy
        // authorization required")
        let text = cause.to_string();
        if text == "dns error" {
            self.dns = true;
        } else if text.starts_with("tunnel error") {
            self.proxy = true;
        }
    }

    fn verdict(&self) -> Network {
        if self.timeout {
            Network::Timeout
        } else if self.tls {
            Network::Tls
        } else if self.proxy {
            Network::Proxy
        } else if self.dns {
            Network::Dns
        } else if self.refused {
            Network::Refused
        } else if self.unreachable {
            Network::Unreachable
        } else if self.broken {
            Network::Broken
        } else {
            Network::Other
        }
    }
}

/// Whether a body that is not the platform's JSON is a web page (by its content type or its first
/// character).
pub fn is_html(content_type: Option<&str>, body: &[u8]) -> bool {
    content_type.is_some_and(|t| t.to_ascii_lowercase().contains("html"))
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

/// The `<title>` of an HTML page, its white space collapsed, at most 120 characters (then `...`),
/// control characters dropped: it is outside text shown on a terminal.
pub fn page_title(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]);
    let lower = text.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let words: Vec<&str> = text[start..end].split_whitespace().collect();
    let title: String = words
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if title.is_empty() {
        return None;
    }
    Some(match title.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &title[..cut]),
        None => title,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An error with a message and a cause, as connectors wrap theirs.
    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn StdError + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }

    fn class(e: &(dyn StdError + 'static)) -> Network {
        Network::of_chain(false, std::iter::successors(Some(e), |c| (*c).source()))
    }

    #[test]
    fn io_error_kinds_name_their_class() {
        let io = |k| Wrap("tcp connect error", Box::new(io::Error::from(k)));
        assert_eq!(
            class(&io(io::ErrorKind::ConnectionRefused)),
            Network::Refused
        );
        assert_eq!(class(&io(io::ErrorKind::TimedOut)), Network::Timeout);
        assert_eq!(
            class(&io(io::ErrorKind::HostUnreachable)),
            Network::Unreachable
        );
        assert_eq!(
            class(&io(io::ErrorKind::NetworkUnreachable)),
            Network::Unreachable
        );
        assert_eq!(class(&io(io::ErrorKind::ConnectionReset)), Network::Broken);
        assert_eq!(class(&io(io::ErrorKind::PermissionDenied)), Network::Other);
        // the client's own timeout wins over whatever the causes say
        let reset = io(io::ErrorKind::ConnectionReset);
        assert_eq!(
            Network::of_chain(
                true,
                std::iter::successors(Some(&reset as &dyn StdError), |c| (*c).source())
            ),
            Network::Timeout
        );
    }

    #[test]
    fn a_resolver_failure_is_dns_and_a_lookup_error_under_it_changes_nothing() {
        // what getaddrinfo gives, under hyper-util's connector step
        let gai =
            io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(class(&Wrap("dns error", Box::new(gai))), Network::Dns);
        // a refused connection to a host that resolved is not DNS
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            class(&Wrap("tcp connect error", Box::new(refused))),
            Network::Refused
        );
    }

    #[test]
    fn a_rustls_error_inside_an_io_error_is_tls() {
        // what the client gives for plain HTTP where TLS was expected: tokio-rustls's io::Error of
        // kind InvalidData around the handshake's error, inside the connector's io::Error
        let tls = io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        ));
        assert_eq!(
            class(&Wrap("client error (Connect)", Box::new(tls))),
            Network::Tls
        );
        let cert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(class(&cert), Network::Tls);
    }

    #[test]
    fn a_proxy_tunnel_refusal_is_a_proxy_error() {
        let refused = Wrap(
            "tunnel error: unsuccessful",
            Box::new(io::Error::other("403")),
        );
        assert_eq!(
            class(&Wrap("client error (Connect)", Box::new(refused))),
            Network::Proxy
        );
    }

    /// A resolver that knows no name: what a gateway without working DNS gives the client.
    struct NoDns;
    impl reqwest::dns::Resolve for NoDns {
        fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
            Box::pin(async {
                Err(Box::new(io::Error::other(
                    "failed to lookup address information: Temporary failure in name resolution",
                )) as Box<dyn StdError + Send + Sync>)
            })
        }
    }

    #[tokio::test]
    async fn a_real_client_error_from_a_failing_resolver_is_dns() {
        // reqwest's own error for a name that does not resolve; the resolver answers at once, so
        // nothing leaves this host (and no proxy of the environment is used)
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(NoDns))
            .build()
            .unwrap();
        let e = client
            .get("http://open.feishu.invalid/open-apis/")
            .send()
            .await
            .unwrap_err();
        assert_eq!(Network::of(&e), Network::Dns, "{e:?}");
    }

    #[test]
    fn html_pages_and_their_titles() {
        let page = b"\n  <!DOCTYPE html><html><head><meta charset=utf-8>\n<TITLE>\n  Access\tdenied\n by policy </TITLE></head>";
        assert!(is_html(None, page));
        assert!(is_html(Some("text/html; charset=UTF-8"), b"Forbidden"));
        assert!(!is_html(Some("text/plain"), b"Bad Gateway"));
        assert_eq!(page_title(page).as_deref(), Some("Access denied by policy"));
        assert_eq!(page_title(b"<html><title></title></html>"), None);
        assert_eq!(page_title(b"Bad Gateway"), None);
        let long = format!("<title>{}\u{1b}[31m</title>", "x".repeat(200));
        let t = page_title(long.as_bytes()).unwrap();
        assert_eq!(t, format!("{}...", "x".repeat(120)));
    }
}
