//! Reading the S3 media store's settings: the `s3://BUCKET?endpoint=…&region=…&path_style=…`
//! URL and the credentials from the usual AWS environment variables.

use std::fmt;

use url::Url;

/// The region a store is signed for when neither the URL nor the environment names one
/// (what AWS itself assumes, and what MinIO and most S3-compatible stores accept).
pub(crate) const DEFAULT_REGION: &str = "us-east-1";

/// Why the S3 media store's settings are unusable. The messages name the setting to fix and
/// never repeat a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the S3 media store URL is not a URL ({0}); expected s3://BUCKET?endpoint=URL&region=REGION")]
    Url(url::ParseError),
    #[error("the S3 media store URL must start with s3://, not {0}://")]
    Scheme(String),
    #[error("the S3 media store URL names no bucket; expected s3://BUCKET?endpoint=URL&region=REGION")]
    NoBucket,
    #[error("the S3 media store URL's bucket {0:?} is not a valid bucket name (letters, digits, '.', '-' and '_')")]
    BucketName(String),
    #[error(
        "the S3 media store URL must not carry credentials: set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY instead"
    )]
    CredentialsInUrl,
    #[error(
        "the S3 media store URL takes no port or path after the bucket (got {0:?}): give the \
         store's address as endpoint=URL; objects are always stored under media/"
    )]
    Path(String),
    #[error("the S3 media store URL has an unknown parameter {0:?} (known: endpoint, region, path_style)")]
    UnknownParameter(String),
    #[error("the S3 media store URL gives {0} more than once")]
    Repeated(String),
    #[error("the S3 media store's {name} {value:?} is not valid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
    #[error(
        "{0} is not set: the S3 media store's credentials come from AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary ones)"
    )]
    MissingEnv(&'static str),
    #[error("the S3 media store cannot address bucket {bucket:?} at {endpoint}: {reason}")]
    Bucket { bucket: String, endpoint: String, reason: String },
    #[error("the S3 media store's HTTP client could not start: {0}")]
    Client(String),
}

/// The key pair the store signs with. `Debug` shows the access key id, never the secret or the
/// session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    access_key: String,
    secret_key: String,
    session_token: Option<String>,
}

impl Credentials {
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Credentials {
        Credentials { access_key: access_key.into(), secret_key: secret_key.into(), session_token: None }
    }

    /// Temporary credentials (STS) also carry a session token, signed into every URL.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Credentials {
        self.session_token = Some(token.into()).filter(|t| !t.trim().is_empty());
        self
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, if set, `AWS_SESSION_TOKEN`. A variable
    /// that is empty (or only blanks) counts as unset, as in the AWS SDKs.
    pub fn from_env() -> Result<Credentials, ConfigError> {
        Credentials::from_vars(&env_var)
    }

    pub(crate) fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, ConfigError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let access_key = var("AWS_ACCESS_KEY_ID").ok_or(ConfigError::MissingEnv("AWS_ACCESS_KEY_ID"))?;
        let secret_key = var("AWS_SECRET_ACCESS_KEY").ok_or(ConfigError::MissingEnv("AWS_SECRET_ACCESS_KEY"))?;
        let mut creds = Credentials::new(access_key, secret_key);
        if let Some(token) = var("AWS_SESSION_TOKEN") {
            creds = creds.with_session_token(token);
        }
        Ok(creds)
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub(crate) fn into_signing(self) -> rusty_s3::Credentials {
        match self.session_token {
            Some(token) => rusty_s3::Credentials::new_with_token(self.access_key, self.secret_key, token),
            None => rusty_s3::Credentials::new(self.access_key, self.secret_key),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A set, non-blank environment variable.
pub(crate) fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// What the URL says, checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) bucket: String,
    pub(crate) endpoint: Url,
    pub(crate) region: String,
    pub(crate) path_style: bool,
}

/// Parses `s3://BUCKET?endpoint=URL&region=REGION&path_style=true|false`. Without `region`,
/// `env_region` is asked (the `AWS_REGION`/`AWS_DEFAULT_REGION` fallback), then
/// [`DEFAULT_REGION`]. Without `endpoint` the store is AWS's own for that region, addressed
/// virtual-host style; with one, path style (the only style an IP address or a single-host
/// MinIO supports) unless `path_style=false`.
pub(crate) fn parse(url: &str, env_region: &dyn Fn() -> Option<String>) -> Result<Settings, ConfigError> {
    let parsed = Url::parse(url.trim()).map_err(ConfigError::Url)?;
    if parsed.scheme() != "s3" {
        return Err(ConfigError::Scheme(parsed.scheme().to_owned()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::CredentialsInUrl);
    }
    let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or(ConfigError::NoBucket)?.to_owned();
    if !bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b)) || bucket.len() > 255 {
        return Err(ConfigError::BucketName(bucket));
    }
    if let Some(port) = parsed.port() {
        return Err(ConfigError::Path(format!(":{port}")));
    }
    if !matches!(parsed.path(), "" | "/") {
        return Err(ConfigError::Path(parsed.path().to_owned()));
    }

    let (mut endpoint, mut region, mut path_style) = (None, None, None);
    for (name, value) in parsed.query_pairs() {
        let slot = match &*name {
            "endpoint" => &mut endpoint,
            "region" => &mut region,
            "path_style" => &mut path_style,
            _ => return Err(ConfigError::UnknownParameter(name.into_owned())),
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(ConfigError::Repeated(name.into_owned()));
        }
    }

    let region = match region {
        Some(r) => r,
        None => env_region().unwrap_or_else(|| DEFAULT_REGION.to_owned()),
    };
    if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(invalid("region", &region, "expected a region name like us-east-1"));
    }

    let path_style = match path_style.as_deref() {
        None => endpoint.is_some(),
        Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(invalid("path_style", other, "expected true or false")),
    };

    let endpoint = match endpoint {
        Some(e) => {
            let u = Url::parse(&e).map_err(|err| invalid("endpoint", &e, &err.to_string()))?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
                return Err(invalid("endpoint", &e, "expected an http:// or https:// URL with a host"));
            }
            if !u.username().is_empty() || u.password().is_some() {
                return Err(ConfigError::CredentialsInUrl);
            }
            if u.query().is_some() || u.fragment().is_some() {
                return Err(invalid(
                    "endpoint",
                    &e,
                    "a query or fragment would be lost; give scheme, host, port and path only",
                ));
            }
            u
        }
        None => Url::parse(&format!("https://s3.{region}.amazonaws.com")).map_err(ConfigError::Url)?,
    };

    Ok(Settings { bucket, endpoint, region, path_style })
}

fn invalid(name: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid { name, value: value.to_owned(), reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Option<String> {
        None
    }

    #[test]
    fn a_minio_style_url() {
        let s = parse("s3://media?endpoint=http://127.0.0.1:9000&region=eu-west-3", &no_env).unwrap();
        assert_eq!(s.bucket, "media");
        assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(s.region, "eu-west-3");
        assert!(s.path_style, "an explicit endpoint defaults to path style");
        let s = parse("s3://media/?endpoint=https://minio.example&path_style=false", &no_env).unwrap();
        assert!(!s.path_style);
        assert_eq!(s.region, DEFAULT_REGION);
    }

    #[test]
    fn aws_by_default() {
        let s = parse("s3://parley-media?region=eu-central-1", &no_env).unwrap();
        assert_eq!(s.endpoint.as_str(), "https://s3.eu-central-1.amazonaws.com/");
        assert!(!s.path_style);
        let s = parse("s3://parley-media", &|| Some("ap-south-1".into())).unwrap();
        assert_eq!(s.region, "ap-south-1", "the environment's region is the fallback");
        let s = parse("s3://parley-media?region=us-west-2", &|| Some("ap-south-1".into())).unwrap();
        assert_eq!(s.region, "us-west-2", "the URL's region wins");
        let s = parse("s3://parley-media?path_style=true", &no_env).unwrap();
        assert!(s.path_style);
    }

    #[test]
    fn an_encoded_endpoint() {
        let s = parse("s3://b?endpoint=http%3A%2F%2Flocalhost%3A9000%2Fs3", &no_env).unwrap();
        assert_eq!(s.endpoint.as_str(), "http://localhost:9000/s3");
    }

    #[test]
    fn mistakes_are_named() {
        let err = |url: &str| parse(url, &no_env).unwrap_err().to_string();
        assert!(err("http://bucket").contains("must start with s3://"));
        assert!(err("s3://").contains("names no bucket"));
        assert!(err("s3://key:secret@bucket").contains("must not carry credentials"));
        assert!(!err("s3://key:secret@bucket").contains("secret@"));
        assert!(err("s3://bucket/prefix").contains("no port or path"));
        assert!(err("s3://bucket:9000").contains("no port or path"));
        assert!(err("s3://bucket?endpoit=http://x").contains("unknown parameter \"endpoit\""));
        assert!(err("s3://bucket?region=a&region=b").contains("region more than once"));
        assert!(err("s3://bucket?path_style=yes").contains("path_style \"yes\""));
        assert!(err("s3://bucket?endpoint=ftp://x").contains("http:// or https://"));
        assert!(err("s3://bucket?endpoint=not%20a%20url").contains("endpoint"));
        assert!(err("s3://bucket?endpoint=http://u:p@x").contains("must not carry credentials"));
        assert!(err("s3://bucket?region=us%20east").contains("region"));
        assert!(err("s3://bu%2Fcket").contains("not a valid bucket name"));
    }

    #[test]
    fn credentials_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let c = Credentials::from_vars(&env(&[("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK")])).unwrap();
        assert_eq!(c, Credentials::new("AK", "SK"));
        let c = Credentials::from_vars(&env(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_SESSION_TOKEN", "TOKEN"),
        ]))
        .unwrap();
        assert_eq!(c.into_signing().token(), Some("TOKEN"));
        let e = Credentials::from_vars(&env(&[("AWS_ACCESS_KEY_ID", "AK")])).unwrap_err();
        assert!(e.to_string().starts_with("AWS_SECRET_ACCESS_KEY is not set"), "{e}");
        let e = Credentials::from_vars(&env(&[])).unwrap_err();
        assert!(e.to_string().starts_with("AWS_ACCESS_KEY_ID is not set"), "{e}");
    }

    #[test]
    fn debug_keeps_secrets() {
        let c = Credentials::new("AKIDEXAMPLE", "very-secret-key").with_session_token("session-secret");
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("very-secret-key") && !shown.contains("session-secret"), "{shown}");
    }
}
