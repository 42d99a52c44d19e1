//! The boundary every provider client implements, and how their answers are classified.

use std::time::Duration;

use async_trait::async_trait;
use parley_core::ids::DeviceId;
use parley_core::push::PushAddress;

use crate::payload::Payload;

/// One push to one device.
#[derive(Debug)]
pub struct Push<'a> {
    pub device: DeviceId,
    pub address: &'a PushAddress,
    pub payload: Payload,
    /// The (device, conversation)'s opaque topic / collapse id (see [`crate::payload::Topics`]).
    pub topic: &'a str,
    /// How long the provider should keep it for an unreachable device.
    pub ttl: Duration,
}

/// What a provider made of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted (that is all any provider promises).
    Delivered,
    /// The registration is dead (Web Push 404/410, APNs 410 or `BadDeviceToken`, FCM
    /// `UNREGISTERED`); `at` is when the provider says it died, if it says.
    Gone { status: u16, reason: String, at: Option<i64> },
    /// Try again later: 429, 5xx, an expired provider token, or no answer (`status` 0).
    Retry { status: u16, reason: String, retry_after: Option<Duration> },
    /// Refused for good (a malformed request, a payload too large, a credential the provider
    /// does not accept).
    Rejected { status: u16, reason: String },
}

impl Delivery {
    pub fn status(&self) -> u16 {
        match self {
            Delivery::Delivered => 200,
            Delivery::Gone { status, .. } | Delivery::Retry { status, .. } | Delivery::Rejected { status, .. } => {
                *status
            }
        }
    }

    /// A request that got no HTTP answer. The error's text never holds the URL (it may hold a
    /// token or a subscription's endpoint).
    pub(crate) fn unanswered(e: &reqwest::Error) -> Delivery {
        let reason = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        Delivery::Retry { status: 0, reason: reason.into(), retry_after: None }
    }
}

/// A provider client.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The metric label: `webpush`, `apns`, `fcm`.
    fn name(&self) -> &'static str;
    async fn send(&self, push: &Push<'_>) -> Delivery;
}

/// A provider's answer other than success.
pub(crate) struct Refusal {
    pub status: u16,
    pub reason_phrase: &'static str,
    /// `Retry-After`, if given.
    pub wait: Option<Duration>,
    /// The body as JSON (null when it is not).
    pub body: serde_json::Value,
}

/// Sends a request to a provider: `Ok(None)` when it accepted (2xx), the refusal otherwise, or
/// the [`Delivery`] for a request that got no answer.
pub(crate) async fn send(req: reqwest::RequestBuilder) -> Result<Option<Refusal>, Delivery> {
    let resp = req.send().await.map_err(|e| Delivery::unanswered(&e))?;
    if resp.status().is_success() {
        return Ok(None);
    }
    let status = resp.status();
    let wait = retry_after(resp.headers());
    let body = resp.json().await.unwrap_or_default();
    Ok(Some(Refusal { status: status.as_u16(), reason_phrase: status.canonical_reason().unwrap_or(""), wait, body }))
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A short, printable reason from a provider's body (never the whole body: it is logged).
pub(crate) fn short(reason: &str) -> String {
    reason.chars().filter(|c| !c.is_control()).take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_a_date() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
