//! What types cannot say about a resource: name and label syntax, positive counts, references
//! that must parse, fields that exclude each other. Each function returns every problem.
//!
//! The syntax checks here need nothing but `std` (the edge runtime uses them); the checks of
//! whole resources ([`objects`], re-exported here) need the `crd` feature's resource types.

/// The guest ABI versions the edge runtime implements.
pub const SUPPORTED_ABIS: &[&str] = &["edgeplane/v1"];

#[cfg(feature = "crd")]
mod objects;
#[cfg(feature = "crd")]
pub use objects::*;

/// Kubernetes DNS subdomain (object names): lowercase alphanumerics, '-' and '.', at most 253.
pub fn dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 253 {
        return Err(format!("must be 1 to 253 characters, got {}", value.len()));
    }
    if !value.split('.').all(|part| dns_label(part).is_ok()) {
        return Err(format!(
            "{value:?} must be lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Kubernetes DNS label (namespaces): lowercase alphanumerics and '-', at most 63.
pub fn dns_label(value: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if value.is_empty() || value.len() > 63 {
        return Err(format!("must be 1 to 63 characters, got {}", value.len()));
    }
    if !value.chars().all(|c| alnum(c) || c == '-') || !value.starts_with(alnum) || !value.ends_with(alnum) {
        return Err(format!("{value:?} must be lowercase letters, digits and '-', starting and ending with a letter or digit"));
    }
    Ok(())
}

/// Label key: `[prefix/]name`, prefix a DNS subdomain, name at most 63 of [A-Za-z0-9-_.].
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        dns_subdomain(p).map_err(|e| format!("prefix {e}"))?;
    }
    label_value(name).and_then(|()| if name.is_empty() { Err("the name part must not be empty".to_owned()) } else { Ok(()) })
}

/// Label value: empty, or at most 63 of [A-Za-z0-9-_.] starting and ending alphanumeric.
pub fn label_value(value: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63
        || !value.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        || !value.starts_with(alnum)
        || !value.ends_with(alnum)
    {
        return Err(format!("{value:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"));
    }
    Ok(())
}

/// Longest version accepted (edge runtimes store the Model's version with every record).
pub const MAX_VERSION_LEN: usize = 128;

/// `MAJOR.MINOR.PATCH`, optionally followed by `-prerelease`; at most [`MAX_VERSION_LEN`] bytes.
pub fn semver(value: &str) -> Result<(), String> {
    if value.len() > MAX_VERSION_LEN {
        return Err(format!("must be a version of at most {MAX_VERSION_LEN} bytes, got {}", value.len()));
    }
    let core = value.split_once('-').map_or(value, |(c, _)| c);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        Ok(())
    } else {
        Err(format!("{value:?} must be a version like 1.2.0"))
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn digest(value: &str) -> Result<(), String> {
    match value.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) => Ok(()),
        _ => Err(format!("{value:?} must be sha256: followed by 64 lowercase hex digits")),
    }
}

/// A module reference: `name@version` or a digest.
pub fn module_ref(value: &str) -> Result<(), String> {
    if value.starts_with("sha256:") {
        return digest(value);
    }
    let Some((name, version)) = value.split_once('@') else {
        return Err(format!("{value:?} must be name@version (e.g. temp-filter@1.0.0) or sha256:<digest>"));
    };
    dns_subdomain(name).map_err(|e| format!("module name {e}"))?;
    semver(version)
}

/// The parts of an http(s) URL a sink policy compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub scheme: String,
    /// Lowercase host (with brackets for IPv6) and explicit port.
    pub authority: String,
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("must be an absolute http:// or https:// URL, got {url:?}"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("must start with http:// or https://, got {url:?}")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("must name a host (and no user info), got {url:?}"));
        }
        let authority = authority.to_ascii_lowercase();
        let has_port = authority.rsplit_once(':').is_some_and(|(_, port)| !port.contains(']'));
        let authority = if has_port { authority } else { format!("{authority}:{default_port}") };
        let path = path.split(['?', '#']).next().unwrap_or("/");
        Ok(HttpUrl { scheme, authority, path: if path.is_empty() { "/".to_owned() } else { path.to_owned() } })
    }

    /// Whether `self` (a sink URL) falls under `prefix` (a policy's entry): same scheme, host
    /// and port, and a path that starts with the prefix's.
    pub fn is_under(&self, prefix: &HttpUrl) -> bool {
        self.scheme == prefix.scheme
            && self.authority == prefix.authority
            && self.path.starts_with(&prefix.path)
            && !self.path.contains("/../")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_urls_match_policy_prefixes_by_scheme_host_port_and_path() {
        let prefix = HttpUrl::parse("http://10.0.0.5:8080/ingest/").expect("prefix");
        let allowed = |url: &str| HttpUrl::parse(url).is_ok_and(|u| u.is_under(&prefix));
        assert!(allowed("http://10.0.0.5:8080/ingest/a"));
        assert!(allowed("HTTP://10.0.0.5:8080/ingest/a?x=1"));
        for refused in [
            "https://10.0.0.5:8080/ingest/a",
            "http://10.0.0.5:8081/ingest/a",
            "http://10.0.0.5:8080/other",
            "http://10.0.0.5.evil.example:8080/ingest/a",
            "http://user@10.0.0.5:8080/ingest/a",
            "http://10.0.0.5:8080/ingest/../admin",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(!allowed(refused), "{refused}");
        }
        assert_eq!(HttpUrl::parse("http://example.com").map(|u| (u.authority, u.path)), Ok(("example.com:80".to_owned(), "/".to_owned())));
    }

    #[test]
    fn versions_are_semver_and_bounded() {
        for good in ["1.2.0", "0.0.1", "10.20.30-rc.1"] {
            assert_eq!(semver(good), Ok(()), "{good}");
        }
        for bad in ["1.2", "1.2.x", "v1.2.0", ""] {
            assert!(semver(bad).is_err(), "{bad:?} must be refused");
        }
        let long = format!("1.0.0-{}", "a".repeat(MAX_VERSION_LEN));
        assert_eq!(semver(&long), Err(format!("must be a version of at most 128 bytes, got {}", long.len())));
    }
}
