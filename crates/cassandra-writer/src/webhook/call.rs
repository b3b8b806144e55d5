//! One alert to the webhook: the HTTP call, what its answer means, and the retries.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable as _};
use reqwest::{Client, StatusCode, Url, header, redirect};

use crate::{config::WebhookArgs, metrics::WEBHOOK_CALLS};

/// The webhook endpoint and how to call it.
#[derive(Debug)]
pub(crate) struct Webhook {
    client: Client,
    url: Url,
    token_file: Option<PathBuf>,
    backoff: ExponentialBuilder,
}

/// Why a call did not deliver the alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Another call may succeed: no answer, a timeout, a server error, throttling, an
    /// authentication failure (the token file may be rotated) or a redirect.
    Retriable(String),
    /// The webhook refused this alert itself (400, 413, 415, 422): no call will take it.
    Refused(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::Retriable(r) | Failure::Refused(r) => r,
        }
    }
}

/// What became of an alert: delivered after `calls` calls, or given up after them.
pub(crate) type Delivery = Result<u32, (String, u32)>;

impl Webhook {
    /// The client for `args`; fails on a malformed URL, an unreadable CA or token file.
    pub fn new(args: &WebhookArgs) -> anyhow::Result<Self> {
        let url = Url::parse(args.url.trim()).context("WRITER_WEBHOOK_URL is not a URL")?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "WRITER_WEBHOOK_URL must be an http or https URL, not `{}`",
            url.scheme()
        );
        let mut builder = Client::builder()
            .timeout(Duration::from_millis(args.timeout_ms.max(1)))
            .redirect(redirect::Policy::none())
            .user_agent(concat!("cassandra-writer/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &args.ca_file {
            let pem = std::fs::read(path).with_context(|| {
                format!("cannot read WRITER_WEBHOOK_CA_FILE {}", path.display())
            })?;
            let ca = reqwest::Certificate::from_pem(&pem).with_context(|| {
                format!(
                    "WRITER_WEBHOOK_CA_FILE {} is not a PEM certificate",
                    path.display()
                )
            })?;
            builder = builder.add_root_certificate(ca);
        }
        if let Some(path) = &args.token_file {
            pipeline_runtime::secret::resolve(None, Some(path))
                .context("WRITER_WEBHOOK_TOKEN_FILE")?;
        }
        Ok(Self {
            client: builder.build().context("the webhook's HTTP client")?,
            url,
            token_file: args.token_file.clone(),
            backoff: args.backoff(),
        })
    }

    /// One call: POST `body` with `Idempotency-Key: id` (and the token, read now).
    pub async fn call(&self, id: &str, body: &[u8]) -> Result<(), Failure> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", id)
            .body(body.to_vec());
        if let Some(path) = &self.token_file {
            let token = tokio::fs::read_to_string(path).await.map_err(|e| {
                Failure::Retriable(format!(
                    "cannot read WRITER_WEBHOOK_TOKEN_FILE {}: {e}",
                    path.display()
                ))
            })?;
            request = request.bearer_auth(token.trim_end_matches(['\n', '\r']));
        }
        let result = match request.send().await {
            Err(e) => Err(Failure::Retriable(describe(&e))),
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let reason = format!("HTTP {status}{}", excerpt(&text));
                Err(if refuses_the_alert(status) {
                    Failure::Refused(reason)
                } else {
                    Failure::Retriable(reason)
                })
            }
        };
        let label = match &result {
            Ok(()) => "accepted",
            Err(Failure::Retriable(_)) => "failed",
            Err(Failure::Refused(_)) => "refused",
        };
        metrics::counter!(WEBHOOK_CALLS.name, "result" => label).increment(1);
        result
    }

    /// Calls until the alert is taken, refused, or `WRITER_WEBHOOK_MAX_ATTEMPTS` calls failed;
    /// `on_retry` sees each retriable failure.
    pub async fn deliver(&self, id: &str, body: &[u8], on_retry: impl Fn(&str)) -> Delivery {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let attempt = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.call(id, body).await
        };
        let result = attempt
            .retry(self.backoff)
            .when(|f| matches!(f, Failure::Retriable(_)))
            .notify(|f, _| on_retry(f.reason()))
            .await;
        let calls = calls.into_inner();
        result.map(|()| calls).map_err(|f| {
            let reason = match f {
                Failure::Refused(r) => format!("the webhook refused the alert: {r}"),
                Failure::Retriable(r) => format!("{calls} calls failed, the last: {r}"),
            };
            (reason, calls)
        })
    }
}

/// Answers that refuse the alert itself, whatever the webhook's state.
fn refuses_the_alert(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::UNPROCESSABLE_ENTITY
    )
}

/// A transport error with its causes (reqwest's `Display` omits them).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The start of a response body, for the reason of a failure.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let cut = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    format!(": {}", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_alert_itself_is_final() {
        for s in [400, 413, 415, 422] {
            assert!(
                refuses_the_alert(StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
        for s in [301, 401, 403, 404, 408, 409, 425, 429, 500, 502, 503, 504] {
            assert!(
                !refuses_the_alert(StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
    }

    #[test]
    fn excerpts_are_bounded_and_char_safe() {
        assert_eq!(excerpt("  "), "");
        assert_eq!(excerpt("busy\n"), ": busy");
        let long = "é".repeat(500);
        assert_eq!(excerpt(&long).chars().count(), 202);
    }
}
