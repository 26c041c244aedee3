//! `cluster.url`: a comma-separated list of NATS servers, each
//! `[scheme://][user:password@ | token@]host[:port]`. This module owns reading it, for
//! both validation and the cluster's connection: the same parser decides which servers
//! name credentials and which are on this machine, takes the credentials out of the
//! addresses (async-nats reads them only from its options, and an address goes into
//! logs), and prints the list with its secrets hidden.

/// What a server of the list says to authenticate with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatsCredentials {
    /// `user:password@` (percent-decoded).
    UserPassword(String, String),
    /// `token@` (percent-decoded).
    Token(String),
}

/// One server of a `cluster.url` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsServer {
    /// `scheme://host:port/`, without credentials.
    pub address: String,
    /// What it names to authenticate with, if anything.
    pub credentials: Option<NatsCredentials>,
    /// Whether the host is this machine (loopback or `localhost`).
    pub local: bool,
}

/// What a `cluster.credentials` file holds.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsFile {
    /// A NATS credentials file (`.creds`, as `nsc` writes it): a user JWT and its
    /// nkey seed, for servers in operator mode.
    Creds(String),
    /// One user nkey seed (`SU...`, as `nk -gen user` writes it), for servers that
    /// list the user's public nkey.
    Seed(String),
}

impl std::fmt::Debug for CredentialsFile {
    // Never the secret: configs and errors end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Creds(_) => f.write_str("Creds(<redacted>)"),
            Self::Seed(_) => f.write_str("Seed(<redacted>)"),
        }
    }
}

/// Largest credentials file read: a user JWT with its seed is about 1 KiB.
const MAX_CREDENTIALS_FILE: u64 = 64 << 10;

/// Reads and checks a `cluster.credentials` file: a NATS credentials file, or one user
/// nkey seed; why not, without the secret.
pub fn read_credentials(path: &std::path::Path) -> Result<CredentialsFile, String> {
    let fail = |why: String| format!("{}: {why}", path.display());
    let size = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .len();
    if size > MAX_CREDENTIALS_FILE {
        return Err(fail(format!(
            "{size} bytes; a credentials file is at most {MAX_CREDENTIALS_FILE}"
        )));
    }
    // The length a file reports is not a bound (a pipe reports 0): read at most that.
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(|e| fail(e.to_string()))?,
            MAX_CREDENTIALS_FILE + 1,
        ),
        &mut text,
    )
    .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_CREDENTIALS_FILE {
        return Err(fail(format!(
            "more than {MAX_CREDENTIALS_FILE} bytes; a credentials file is at most that"
        )));
    }
    if text.contains("BEGIN NATS USER JWT") {
        async_nats::ConnectOptions::new()
            .credentials(&text)
            .map_err(|e| fail(format!("not a NATS credentials file: {e}")))?;
        return Ok(CredentialsFile::Creds(text));
    }
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("---") && !l.starts_with('#'))
        .unwrap_or_default();
    if !seed.starts_with("SU") || nkeys::KeyPair::from_seed(seed).is_err() {
        return Err(fail(
            "neither a NATS credentials file (user JWT and seed) nor a user nkey seed (SU...)"
                .into(),
        ));
    }
    Ok(CredentialsFile::Seed(seed.to_owned()))
}

/// The servers of a `cluster.url` list, or why it is not one.
pub fn parse(urls: &str) -> Result<Vec<NatsServer>, String> {
    let servers: Vec<NatsServer> = urls
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(server)
        .collect::<Result<_, _>>()?;
    if servers.is_empty() {
        return Err("names no server".into());
    }
    Ok(servers)
}

fn server(text: &str) -> Result<NatsServer, String> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("nats://{text}")
    };
    let mut url = url::Url::parse(&with_scheme)
        .map_err(|e| format!("server {} is not a URL: {e}", redact_one(text)))?;
    if !matches!(url.scheme(), "nats" | "tls" | "ws" | "wss") {
        return Err(format!(
            "server {} has scheme {}; nats, tls, ws or wss",
            redact_one(text),
            url.scheme()
        ));
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    if host.is_empty() {
        return Err(format!("server {} names no host", redact_one(text)));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = match (url.username(), url.password()) {
        ("", _) => None,
        (user, Some(password)) => Some(NatsCredentials::UserPassword(
            decode(user),
            decode(password),
        )),
        (token, None) => Some(NatsCredentials::Token(decode(token))),
    };
    // Neither can fail for a URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let local = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok(NatsServer {
        address: url.to_string(),
        credentials,
        local,
    })
}

/// The list with every password and token replaced by `***`, for logs.
pub fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|s| redact_one(s.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one(server: &str) -> String {
    let (scheme, rest) = match server.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), server),
    };
    // Userinfo ends at the last '@' before the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            let shown = if rest[..at].contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}{shown}{}", &rest[at..])
        }
        None => server.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(url: &str) -> NatsServer {
        let mut servers = parse(url).expect(url);
        assert_eq!(servers.len(), 1);
        servers.remove(0)
    }

    #[test]
    fn credentials_come_out_of_the_address() {
        let s = one("tls://qm:p%40ss%3Aw%2Frd@nats.example:4222");
        assert_eq!(s.address, "tls://nats.example:4222");
        assert_eq!(
            s.credentials,
            Some(NatsCredentials::UserPassword(
                "qm".into(),
                "p@ss:w/rd".into()
            ))
        );
        assert!(!s.local);
        let s = one("s3cr3t@10.0.0.5:4222");
        assert_eq!(s.address, "nats://10.0.0.5:4222");
        assert_eq!(s.credentials, Some(NatsCredentials::Token("s3cr3t".into())));
        // An empty user (unset variables in `$USER:$PASSWORD@`) names nothing.
        assert_eq!(one("nats://:@10.0.0.5:4222").credentials, None);
        assert_eq!(one("nats://:pw@10.0.0.5").credentials, None);
    }

    #[test]
    fn loopback_and_localhost_are_this_machine() {
        for url in [
            "nats://127.0.0.1:4222",
            "127.0.0.2:4222",
            "nats://[::1]:4222",
            "tls://LOCALHOST",
        ] {
            assert!(one(url).local, "{url}");
        }
        for url in [
            "nats://10.0.0.5",
            "tls://[2001:db8::1]:4222",
            "nats.example",
        ] {
            assert!(!one(url).local, "{url}");
        }
    }

    #[test]
    fn lists_and_bad_servers() {
        let servers = parse("nats://a:b@10.0.0.5:4222, nats://127.0.0.1:4223,").expect("list");
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].address, "nats://127.0.0.1:4223");
        assert!(parse(" , ").is_err());
        assert!(parse("http://10.0.0.5").is_err());
        let err = parse("nats://qm:secret@bad host:4222").expect_err("space");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn redacted_lists_keep_no_secret() {
        assert_eq!(
            redact("nats://qm:secret@a:4222, tok@b,nats://c"),
            "nats://qm:***@a:4222,***@b,nats://c"
        );
        assert_eq!(redact("nats://a/x@y"), "nats://a/x@y");
    }
}
