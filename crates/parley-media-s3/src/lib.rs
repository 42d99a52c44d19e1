//! The S3 media store: uploads and downloads go straight between the clients and any
//! S3-compatible store (AWS S3, MinIO, Garage, Ceph RGW, R2, …) through URLs pre-signed with
//! AWS Signature Version 4; the server itself only signs, checks and deletes.
//!
//! # Configuration
//!
//! `s3://BUCKET?endpoint=URL&region=REGION&path_style=true|false`, for example
//! `s3://parley-media?endpoint=http://127.0.0.1:9000&region=us-east-1`.
//!
//! - `endpoint`: the store's address. Without it the store is AWS's own,
//!   `https://s3.REGION.amazonaws.com`.
//! - `region`: the region signed into every URL. Without it [`S3Store::from_env`] reads
//!   `AWS_REGION`, then `AWS_DEFAULT_REGION`; failing those (and always for
//!   [`S3Store::from_url`]) it is `us-east-1`, which MinIO and most other stores accept.
//! - `path_style`: `true` addresses the bucket as `ENDPOINT/BUCKET/KEY`, `false` as
//!   `BUCKET.ENDPOINT-HOST/KEY`. It defaults to path style when an `endpoint` is given (the
//!   only style an IP address or a single-host MinIO can serve) and to virtual-host style on AWS.
//!
//! The credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, for temporary
//! ones, `AWS_SESSION_TOKEN`, never from the URL. Objects are stored as `media/<id>`. The key
//! needs `s3:ListBucket` on the bucket (without it S3 answers 403 instead of 404 for an object
//! that is not there, and [`MediaStore::check`] lists the bucket) and `s3:GetObject`,
//! `s3:PutObject` and `s3:DeleteObject` on `media/*`.
//!
//! # What an upload URL signs, and why
//!
//! A pre-signed `PUT` signs `host` plus exactly three headers, which [`UploadUrl::headers`]
//! lists (lower-case) and the client must send with exactly those values:
//!
//! - `content-length`: the declared size. A body of any other length is a different request,
//!   so the store refuses it (403) before storing a byte. Browsers and HTTP libraries set it
//!   from the body themselves (`fetch` may not even set it by hand), so signing it asks
//!   nothing more of a client.
//! - `content-type`: the declared type, which the store keeps and serves back on download. A
//!   client cannot store the bytes under another type (say `text/html`).
//! - `x-amz-checksum-sha256`: base64 of the declared SHA-256. S3 hashes the body as it arrives
//!   and refuses (400 `BadDigest`) one whose digest differs, so a finished upload holds exactly
//!   the declared bytes.
//!
//! Nothing else is signed, and `UploadUrl::headers` names everything that is: a signed header
//! the client does not send makes every upload fail with `SignatureDoesNotMatch`. That is
//! the bug MongooseIM's S3 upload shipped with for years (esl/MongooseIM #1539, #2777, #2808):
//! it signed `x-amz-acl` and a `content-type` that XEP-0363 clients never send. Parley's
//! clients get the list of signed headers with the URL and send them all.
//!
//! The signature is the URL's last query parameter, dated no later than now and expiring
//! at the requested time (to the second, at most the 7 days S3 accepts). A download URL is a
//! pre-signed `GET` with no signed header, so `Range` requests work.
//!
//! # CORS: letting browsers PUT and GET directly
//!
//! A web client talks to the bucket from another origin, so the bucket needs a CORS rule that
//! lets the web client's origin send the preflighted `PUT` with the two signed headers a script
//! sets (`content-length` is the browser's own and needs no permission) and read the range
//! headers back. On AWS (`aws s3api put-bucket-cors --bucket BUCKET --cors-configuration
//! file://cors.json`):
//!
//! ```json
//! {
//!   "CORSRules": [{
//!     "AllowedOrigins": ["https://chat.example.org"],
//!     "AllowedMethods": ["PUT", "GET", "HEAD"],
//!     "AllowedHeaders": ["content-type", "x-amz-checksum-sha256", "range"],
//!     "ExposeHeaders": ["content-length", "content-range", "etag"],
//!     "MaxAgeSeconds": 3600
//!   }]
//! }
//! ```
//!
//! Other stores take the same rule through the same S3 API call (`PutBucketCors`), or through
//! their own settings (MinIO answers CORS for any origin unless its `api cors_allow_origin`
//! setting narrows it). Without the rule, browsers fail the upload before it leaves
//! (a CORS error in the console), while native clients are unaffected.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use parley_core::ids::MediaId;
use parley_media::{DownloadUrl, MediaError, MediaStore, Object, Result, Stored, UploadUrl};
use reqwest::StatusCode;
use rusty_s3::actions::{DeleteObject, GetObject, HeadObject, PutObject};
use rusty_s3::{Bucket, S3Action, UrlStyle};
use sha2::{Digest, Sha256};
use url::Url;

mod config;

pub use config::{ConfigError, Credentials};

/// Every object's key starts with this.
const PREFIX: &str = "media/";
/// The longest validity S3 accepts for a pre-signed URL (7 days).
const MAX_VALIDITY_SECS: i64 = 7 * 24 * 3600;
/// How long the URLs of the server's own requests are valid (S3 checks at the request's start).
const OWN_URL_SECS: u64 = 60;
/// The whole of a request that moves no object body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CHECKSUM_MODE: &str = "x-amz-checksum-mode";
const CHECKSUM_SHA256: &str = "x-amz-checksum-sha256";

/// A [`MediaStore`] in a bucket of any S3-compatible store. `Debug` names the bucket, the
/// endpoint and the access key id, never the secret.
pub struct S3Store {
    bucket: Bucket,
    creds: rusty_s3::Credentials,
    endpoint: Url,
    path_style: bool,
    http: reqwest::Client,
}

impl S3Store {
    /// A store from its URL (see the crate docs) and explicit credentials.
    pub fn from_url(url: &str, creds: Credentials) -> Result<S3Store, ConfigError> {
        S3Store::new(config::parse(url, &|| None)?, creds)
    }

    /// A store from its URL, with the credentials (and, if the URL names none, the region)
    /// from the usual AWS environment variables.
    pub fn from_env(url: &str) -> Result<S3Store, ConfigError> {
        let env_region = || config::env_var("AWS_REGION").or_else(|| config::env_var("AWS_DEFAULT_REGION"));
        let settings = config::parse(url, &env_region)?;
        S3Store::new(settings, Credentials::from_env()?)
    }

    fn new(settings: config::Settings, creds: Credentials) -> Result<S3Store, ConfigError> {
        let config::Settings { bucket, endpoint, region, path_style } = settings;
        if creds.access_key().trim().is_empty() {
            return Err(ConfigError::MissingEnv("AWS_ACCESS_KEY_ID"));
        }
        let creds = creds.into_signing();
        if creds.secret().trim().is_empty() {
            return Err(ConfigError::MissingEnv("AWS_SECRET_ACCESS_KEY"));
        }
        let style = if path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = Bucket::new(endpoint.clone(), style, bucket.clone(), region).map_err(|e| {
            let hint =
                if path_style { "" } else { " (virtual-host style needs a host name; path_style=true does not)" };
            ConfigError::Bucket { bucket, endpoint: endpoint.to_string(), reason: format!("{e}{hint}") }
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            // A redirect would change the signed host; S3's answer is clearer unfollowed.
            .redirect(reqwest::redirect::Policy::none())
            // Hash exactly the stored bytes, whatever features another crate enables.
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(S3Store { bucket, creds, endpoint, path_style, http })
    }

    /// A URL for the server's own request, valid for a minute from now.
    fn own<'a>(&self, action: &impl S3Action<'a>) -> Url {
        sign(action, parley_core::now_ms().div_euclid(1000), OWN_URL_SECS)
    }

    /// `what` failed before any answer.
    fn unreachable(&self, what: &str, err: reqwest::Error) -> MediaError {
        // `without_url`: the URL carries a live signature, which logs must not.
        MediaError::Unavailable(format!(
            "cannot reach {} for {what} in bucket {:?}: {}",
            self.endpoint,
            self.bucket.name(),
            error_chain(&err.without_url())
        ))
    }

    /// `what` was answered with an unexpected status.
    fn refused(&self, what: &str, status: StatusCode) -> MediaError {
        let context = format!("{} answered {status} to {what} in bucket {:?}", self.endpoint, self.bucket.name());
        match status.as_u16() {
            401 | 403 => MediaError::Misconfigured(format!(
                "{context}: check the credentials (access key {:?}) and that they may list the bucket and get, \
                 put and delete objects under {PREFIX}",
                self.creds.key()
            )),
            301 | 307 | 400 => {
                MediaError::Misconfigured(format!("{context}: is the bucket in region {}?", self.bucket.region()))
            }
            _ => MediaError::Unavailable(context),
        }
    }

    /// The failure `check` reports for a listing answered with `status` and S3's error body.
    fn check_failed(&self, status: StatusCode, body: &str, bucket_region: Option<&str>) -> MediaError {
        let (b, e, key) = (self.bucket.name(), &self.endpoint, self.creds.key());
        let code = xml_field(body, "Code");
        let said = match (&code, xml_field(body, "Message")) {
            (Some(c), Some(m)) => format!(" ({c}: {m})"),
            (Some(c), None) => format!(" ({c})"),
            _ => format!(" ({status})"),
        };
        match (status.as_u16(), code.as_deref()) {
            (_, Some("NoSuchBucket")) | (404, _) => MediaError::Misconfigured(format!(
                "bucket {b:?} does not exist at {e}{said}: create it, or fix the bucket in the media store URL"
            )),
            (_, Some("InvalidAccessKeyId" | "NotSignedUp")) => MediaError::Misconfigured(format!(
                "{e} does not know the access key {key:?}{said} (bucket {b:?}): check AWS_ACCESS_KEY_ID"
            )),
            (_, Some("SignatureDoesNotMatch")) => MediaError::Misconfigured(format!(
                "{e} refused the signature made with access key {key:?} for bucket {b:?}{said}: check \
                 AWS_SECRET_ACCESS_KEY"
            )),
            (_, Some("AuthorizationHeaderMalformed" | "AuthorizationQueryParametersError" | "PermanentRedirect"))
            | (301 | 307, _) => {
                let actual = bucket_region.map(|r| format!(" (it is in {r})")).unwrap_or_default();
                MediaError::Misconfigured(format!(
                    "bucket {b:?} at {e} is not in region {}{actual}{said}: set region= in the media store URL",
                    self.bucket.region()
                ))
            }
            (401 | 403, _) => MediaError::Misconfigured(format!(
                "{e} refused access key {key:?} for bucket {b:?}{said}: the key needs s3:ListBucket on the bucket and \
                 s3:GetObject, s3:PutObject and s3:DeleteObject on {PREFIX}*"
            )),
            (s, _) if s >= 500 || s == 429 => {
                MediaError::Unavailable(format!("{e} answered {status} for bucket {b:?}{said}"))
            }
            _ => MediaError::Misconfigured(format!("{e} answered {status} for bucket {b:?}{said}")),
        }
    }

    /// Puts a probe with a wrong `x-amz-checksum-sha256`: a store that accepts it would keep
    /// bytes other than the declared ones, which Parley's uploads rely on it refusing.
    async fn check_checksums(&self) -> Result<()> {
        let key = format!("{PREFIX}.parley-probe-{:016x}", rand::random::<u64>());
        let body: &[u8] = b"parley checksum probe";
        let mut put = PutObject::new(&self.bucket, Some(&self.creds), &key);
        let wrong = BASE64.encode(Sha256::digest(b"not the body"));
        let length = body.len().to_string();
        put.headers_mut().insert("content-length", length.as_str());
        put.headers_mut().insert(CHECKSUM_SHA256, wrong.as_str());
        let res = self
            .http
            .put(self.own(&put))
            .header(CHECKSUM_SHA256, &wrong)
            .body(body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable("the checksum probe", e))?;
        let status = res.status();
        // Some stores write the body before refusing it: remove the probe either way.
        let delete = DeleteObject::new(&self.bucket, Some(&self.creds), &key);
        let _ = self.http.delete(self.own(&delete)).timeout(REQUEST_TIMEOUT).send().await;
        if status.is_success() {
            return Err(MediaError::Misconfigured(format!(
                "{} accepted an object whose x-amz-checksum-sha256 was wrong (bucket {:?}): Parley needs a store \
                 that checks upload checksums (AWS S3, MinIO, R2, recent Ceph and Garage do)",
                self.endpoint,
                self.bucket.name()
            )));
        }
        Ok(())
    }

    /// Streams the stored object through SHA-256, chunk by chunk (for stores that keep no
    /// checksum), stopping as soon as it is longer than declared.
    async fn hash_stored(&self, object: &Object, key: &str) -> Result<Stored> {
        let get = GetObject::new(&self.bucket, Some(&self.creds), key);
        let mut res = self.http.get(self.own(&get)).send().await.map_err(|e| self.unreachable("GET object", e))?;
        match res.status() {
            StatusCode::NOT_FOUND => return Ok(Stored::Missing),
            s if s.is_success() => {}
            s => return Err(self.refused("GET object", s)),
        }
        let mut hasher = Sha256::new();
        let mut len: u64 = 0;
        while let Some(chunk) = res.chunk().await.map_err(|e| self.unreachable("GET object", e))? {
            len += chunk.len() as u64;
            if len > object.size {
                return Ok(Stored::Mismatch);
            }
            hasher.update(&chunk);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        Ok(if len == object.size && digest == object.sha256 { Stored::Matches } else { Stored::Mismatch })
    }
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket.name())
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.bucket.region())
            .field("path_style", &self.path_style)
            .field("access_key", &self.creds.key())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MediaStore for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn origin(&self) -> Option<String> {
        Some(self.bucket.base_url().origin().ascii_serialization())
    }

    /// Lists at most one key of the bucket (`ListObjectsV2`, `max-keys=1`): unlike a `HEAD`,
    /// its error answers carry S3's code, which tells a missing bucket from an unknown key
    /// from a wrong secret from a wrong region.
    async fn check(&self) -> Result<()> {
        let now = timestamp(parley_core::now_ms().div_euclid(1000));
        let url = rusty_s3::signing::sign(
            &now,
            rusty_s3::Method::Get,
            self.bucket.base_url().clone(),
            self.creds.key(),
            self.creds.secret(),
            self.creds.token(),
            self.bucket.region(),
            OWN_URL_SECS,
            [("list-type", "2"), ("max-keys", "1")].into_iter(),
            std::iter::empty(),
        );
        let mut res = self
            .http
            .get(url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable("ListObjectsV2", e))?;
        let status = res.status();
        if status.is_success() {
            return self.check_checksums().await;
        }
        let region = res.headers().get("x-amz-bucket-region").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut body = Vec::new();
        while body.len() < 16 * 1024
            && let Ok(Some(chunk)) = res.chunk().await
        {
            body.extend_from_slice(&chunk);
        }
        Err(self.check_failed(status, &String::from_utf8_lossy(&body), region.as_deref()))
    }

    fn upload_url(&self, object: &Object, expires_at: i64) -> Result<UploadUrl> {
        let key = key(object.id);
        let headers = BTreeMap::from([
            ("content-length".to_owned(), object.size.to_string()),
            ("content-type".to_owned(), object.content_type.clone()),
            (CHECKSUM_SHA256.to_owned(), BASE64.encode(object.sha256)),
        ]);
        let mut put = PutObject::new(&self.bucket, Some(&self.creds), &key);
        for (name, value) in &headers {
            put.headers_mut().insert(name.as_str(), value.as_str());
        }
        let (date, secs) = validity(parley_core::now_ms(), expires_at);
        let url = sign(&put, date, secs);
        Ok(UploadUrl { url: url.into(), headers, expires_at: (date + secs as i64) * 1000 })
    }

    fn download_url(&self, object: &Object, expires_at: i64) -> Result<DownloadUrl> {
        let key = key(object.id);
        let mut get = GetObject::new(&self.bucket, Some(&self.creds), &key);
        // What users upload must not open as a page on the bucket's origin: anything a browser
        // could run is downloaded instead (S3 overrides the header from the signed query).
        if !parley_core::media::inline_safe(&object.content_type) {
            get.query_mut().insert("response-content-disposition", "attachment");
        }
        let (date, secs) = validity(parley_core::now_ms(), expires_at);
        let url = sign(&get, date, secs);
        Ok(DownloadUrl { url: url.into(), expires_at: (date + secs as i64) * 1000 })
    }

    /// `HEAD`s the object asking for its checksum; trusts the store's SHA-256 when it keeps
    /// one (it does for objects put through [`MediaStore::upload_url`] on AWS), and otherwise
    /// streams the object through SHA-256.
    async fn verify(&self, object: &Object) -> Result<Stored> {
        let key = key(object.id);
        let mut head = HeadObject::new(&self.bucket, Some(&self.creds), &key);
        head.headers_mut().insert(CHECKSUM_MODE, "ENABLED");
        let res = self
            .http
            .head(self.own(&head))
            .header(CHECKSUM_MODE, "ENABLED")
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable("HEAD object", e))?;
        match res.status() {
            StatusCode::NOT_FOUND => return Ok(Stored::Missing),
            s if s.is_success() => {}
            s => return Err(self.refused("HEAD object", s)),
        }
        // The header itself: a HEAD answer has no body, so the body's length says nothing.
        let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok());
        let size = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if size.is_some_and(|s| s != object.size) {
            return Ok(Stored::Mismatch);
        }
        // A multipart object's checksum (`…-N`) is of its parts' checksums: not decodable here.
        let checksum = header(CHECKSUM_SHA256).and_then(|v| BASE64.decode(v.trim()).ok());
        if let (Some(_), Some(checksum)) = (size, checksum.filter(|c| c.len() == 32)) {
            return Ok(if checksum == object.sha256 { Stored::Matches } else { Stored::Mismatch });
        }
        self.hash_stored(object, &key).await
    }

    async fn delete(&self, id: MediaId) -> Result<()> {
        let key = key(id);
        let delete = DeleteObject::new(&self.bucket, Some(&self.creds), &key);
        let res = self
            .http
            .delete(self.own(&delete))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable("DELETE object", e))?;
        match res.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(self.refused("DELETE object", s)),
        }
    }
}

fn key(id: MediaId) -> String {
    format!("{PREFIX}{id}")
}

/// The date and validity (seconds) to sign for a URL that must stop working at `expires_at`
/// (ms): dated now, or a second before `expires_at` if that is earlier (so a past
/// `expires_at` gives a URL that is already expired), valid until `expires_at` rounded down
/// to the second, at least 1 s and at most the 7 days S3 accepts.
fn validity(now_ms: i64, expires_at: i64) -> (i64, u64) {
    let date = now_ms.min(expires_at.saturating_sub(1000)).max(0).div_euclid(1000);
    let secs = (expires_at.saturating_sub(date * 1000) / 1000).clamp(1, MAX_VALIDITY_SECS);
    (date, secs as u64)
}

fn timestamp(secs: i64) -> jiff::Timestamp {
    // `validity` keeps dates between 1970 and now, all representable.
    jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn sign<'a>(action: &impl S3Action<'a>, date: i64, secs: u64) -> Url {
    action.sign_with_time(Duration::from_secs(secs), &timestamp(date))
}

/// `<name>…</name>` in an S3 error body, shortened and stripped of control characters.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + body[start..].find(&format!("</{name}>"))?;
    let value: String = body[start..end].chars().filter(|c| !c.is_control()).take(300).collect();
    Some(value).filter(|v| !v.is_empty())
}

/// An error and its causes, `: `-separated (reqwest's own message is only the outermost).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> S3Store {
        S3Store::from_url(url, Credentials::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"))
            .unwrap()
    }

    /// AWS's published example of a pre-signed URL ("Authenticating Requests: Using Query
    /// Parameters (AWS Signature Version 4)", S3 API reference): `GET /test.txt` of
    /// `examplebucket`, signed on 24 May 2013 at 00:00:00 UTC for 86,400 s. The expected
    /// signature is the one AWS publishes there.
    #[test]
    fn signs_like_the_aws_example() {
        let s = store("s3://examplebucket?endpoint=https://s3.amazonaws.com&region=us-east-1&path_style=false");
        let get = GetObject::new(&s.bucket, Some(&s.creds), "test.txt");
        let url = sign(&get, 1_369_353_600, 86_400);
        assert_eq!(
            url.as_str(),
            "https://examplebucket.s3.amazonaws.com/test.txt\
             ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z\
             &X-Amz-Expires=86400\
             &X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    fn object() -> Object {
        Object {
            id: MediaId(42),
            size: 1234,
            sha256: Sha256::digest(b"not really the bytes").into(),
            content_type: "image/png".into(),
        }
    }

    fn query(url: &str) -> Vec<(String, String)> {
        Url::parse(url).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    #[test]
    fn upload_urls_sign_exactly_the_headers_they_list() {
        let s = store("s3://media?endpoint=http://127.0.0.1:9000");
        let obj = object();
        let now = parley_core::now_ms();
        let up = s.upload_url(&obj, now + 600_000).unwrap();
        assert!(up.url.starts_with("http://127.0.0.1:9000/media/media/42?"), "{}", up.url);
        let names: Vec<&str> = up.headers.keys().map(String::as_str).collect();
        assert_eq!(names, ["content-length", "content-type", "x-amz-checksum-sha256"]);
        assert_eq!(up.headers["content-length"], "1234");
        assert_eq!(up.headers["content-type"], "image/png");
        assert_eq!(BASE64.decode(&up.headers["x-amz-checksum-sha256"]).unwrap(), obj.sha256);
        let q = query(&up.url);
        let signed = q.iter().find(|(k, _)| k == "X-Amz-SignedHeaders").unwrap();
        assert_eq!(signed.1, "content-length;content-type;host;x-amz-checksum-sha256");
        let last = q.last().unwrap();
        assert_eq!(last.0, "X-Amz-Signature", "the signature must come last");
        assert_eq!(last.1.len(), 64);
        assert!(up.url.ends_with(&last.1));
        assert!((up.expires_at - (now + 600_000)).abs() <= 1000 && up.expires_at <= now + 600_000);
    }

    #[test]
    fn download_urls_sign_no_header() {
        let s = store("s3://media?region=eu-west-1");
        let down = s.download_url(&object(), parley_core::now_ms() + 60_000).unwrap();
        assert!(down.url.starts_with("https://media.s3.eu-west-1.amazonaws.com/media/42?"), "{}", down.url);
        let q = query(&down.url);
        assert!(q.iter().any(|(k, v)| k == "X-Amz-SignedHeaders" && v == "host"));
        assert_eq!(q.last().unwrap().0, "X-Amz-Signature");
    }

    #[test]
    fn session_tokens_are_signed_in() {
        let creds = Credentials::new("AK", "SK").with_session_token("TOKEN");
        let s = S3Store::from_url("s3://media?endpoint=http://127.0.0.1:9000", creds).unwrap();
        let q = query(&s.download_url(&object(), parley_core::now_ms() + 60_000).unwrap().url);
        assert!(q.iter().any(|(k, v)| k == "X-Amz-Security-Token" && v == "TOKEN"));
        assert_eq!(q.last().unwrap().0, "X-Amz-Signature");
    }

    #[test]
    fn validity_ends_at_the_requested_time() {
        let now = 1_700_000_000_500;
        // In the future: dated now (to the second), ending at expires_at (to the second).
        assert_eq!(validity(now, now + 60_000), (1_700_000_000, 60));
        assert_eq!(validity(now, now + 60_400), (1_700_000_000, 60));
        assert_eq!(validity(now, now + 60_600), (1_700_000_000, 61));
        // Less than a second away: dated a second before, valid for one.
        assert_eq!(validity(now, now + 200), (1_699_999_999, 1));
        // In the past: dated a second before expires_at, so it has expired already.
        assert_eq!(validity(now, now - 60_000), (1_699_999_939, 1));
        let (date, secs) = validity(now, now - 60_000);
        assert!((date + secs as i64) * 1000 <= now - 60_000);
        // S3 accepts at most 7 days.
        assert_eq!(validity(now, now + 30 * 86_400_000), (1_700_000_000, 604_800));
        // Absurd values stay representable.
        assert_eq!(validity(now, i64::MIN), (0, 1));
        assert_eq!(validity(now, i64::MAX).1, 604_800);
    }

    #[test]
    fn debug_shows_no_secret() {
        let creds = Credentials::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
            .with_session_token("the-session-token");
        let s = S3Store::from_url("s3://media?endpoint=http://127.0.0.1:9000", creds).unwrap();
        let shown = format!("{s:?}");
        assert!(shown.contains("AKIAIOSFODNN7EXAMPLE") && shown.contains("media") && shown.contains("127.0.0.1"));
        assert!(!shown.contains("wJalrXUtnFEMI") && !shown.contains("the-session-token"), "{shown}");
    }

    #[test]
    fn configuration_errors() {
        let creds = || Credentials::new("AK", "SK");
        let err = S3Store::from_url("s3://media?endpoint=http://127.0.0.1:9000&path_style=false", creds()).unwrap_err();
        assert!(err.to_string().contains("path_style=true"), "{err}");
        let err = S3Store::from_url("s3://media", Credentials::new("", "SK")).unwrap_err();
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
        let err = S3Store::from_url("s3://media", Credentials::new("AK", " ")).unwrap_err();
        assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    }

    #[test]
    fn error_bodies() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket \
                    does not exist</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(xml_field(body, "Message").as_deref(), Some("The specified bucket does not exist"));
        assert_eq!(xml_field(body, "Resource"), None);
        assert_eq!(xml_field("<Code></Code>", "Code"), None);
        assert_eq!(xml_field("<Code>unterminated", "Code"), None);
    }
}
