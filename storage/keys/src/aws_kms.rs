//! `AwsKms`: master keys held by AWS KMS (or a KMS-compatible server), reached with
//! `aws-sdk-kms`. A tenant key is wrapped with `Encrypt` and unwrapped with `Decrypt`, both
//! under the encryption context of [`WrapContext::kms_encryption_context`], so a wrapped copy
//! cannot be replayed for another tenant, key version or region. The node needs only
//! `kms:Encrypt` and `kms:Decrypt` on its keys (docs/KEYS.md gives the key policy).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::Client;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use zeroize::Zeroizing;

use crate::{
    KMS_KEY_ID_PREFIX, KeyError, KeyMetrics, KeyProvider, KmsConnector, TENANT_KEY_LEN, TenantKey,
    WrapContext,
};

/// How long to wait for a TCP/TLS connection to the KMS.
pub const KMS_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one `Encrypt`/`Decrypt` may take in all, retries included.
pub const KMS_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one attempt may take before the SDK retries it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// Attempts per call (the first one included), with the SDK's standard backoff.
const MAX_ATTEMPTS: u32 = 3;

/// KMS error codes that mean "this blob does not open under this key and context": the
/// copy is damaged, tampered with, replayed under another context, or made by another key.
const NOT_AUTHENTIC: [&str; 2] = ["InvalidCiphertextException", "IncorrectKeyException"];

/// Where the KMS client's credentials come from.
pub enum KmsCredentials {
    /// The standard AWS chain: environment, profile, web identity, container and instance roles.
    DefaultChain,
    /// A static key pair from the configuration.
    Static {
        /// The access key id (not secret: it names the key).
        access_key_id: String,
        /// The secret access key; wiped from memory when dropped.
        secret_access_key: Zeroizing<String>,
    },
}

impl KmsCredentials {
    /// A static key pair; the secret is copied into memory that is wiped on drop.
    pub fn static_keys(access_key_id: &str, secret_access_key: &str) -> Self {
        Self::Static {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: Zeroizing::new(secret_access_key.to_owned()),
        }
    }
}

impl fmt::Debug for KmsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DefaultChain => f.write_str("DefaultChain"),
            Self::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .finish(),
        }
    }
}

/// Everything needed to reach one region's KMS.
#[derive(Debug)]
pub struct AwsKmsSettings {
    /// The KMS region, e.g. `eu-west-1`.
    pub region: String,
    /// A custom endpoint URL; `None` means AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// Where the credentials come from.
    pub credentials: KmsCredentials,
}

/// One region's KMS: a client and the metrics every call is counted in. Hands out a
/// [`KeyProvider`] per KMS key. Cloning is cheap and clones share the client.
#[derive(Clone)]
pub struct AwsKms {
    client: Client,
    description: String,
    metrics: Arc<KeyMetrics>,
}

impl fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKms")
            .field("kms", &self.description)
            .finish_non_exhaustive()
    }
}

impl AwsKms {
    /// Builds a client for `settings` that counts its calls in `metrics`. Makes no request:
    /// a wrong endpoint, credential or key shows at the first wrap or unwrap.
    pub async fn connect(settings: AwsKmsSettings, metrics: Arc<KeyMetrics>) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()));
        if let KmsCredentials::Static {
            access_key_id,
            secret_access_key,
        } = &settings.credentials
        {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id.as_str(),
                secret_access_key.as_str(),
                None,
                None,
                "coffer-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_kms::config::Builder::from(&shared)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(KMS_CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(KMS_OPERATION_TIMEOUT)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let description = match &settings.endpoint {
            Some(endpoint) => format!("{endpoint} ({})", settings.region),
            None => format!("AWS KMS {}", settings.region),
        };
        Self {
            client: Client::from_conf(builder.build()),
            description,
            metrics,
        }
    }

    /// The underlying SDK client (for operator tools and tests, e.g. creating keys).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Which KMS this is (endpoint or region), for logs; holds no secret.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The provider of KMS key `key_id` (key id, key ARN, alias name or alias ARN).
    pub fn provider(&self, key_id: &str) -> AwsKmsKey {
        AwsKmsKey {
            kms: self.clone(),
            key_id: key_id.to_owned(),
        }
    }

    async fn timed<T, E>(&self, call: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.kms_call(started.elapsed(), result.is_err());
        result
    }
}

impl KmsConnector for AwsKms {
    fn key(&self, key_id: &str) -> Arc<dyn KeyProvider> {
        Arc::new(self.provider(key_id))
    }
}

/// One KMS key of an [`AwsKms`]: wraps with `Encrypt`, unwraps with `Decrypt`.
#[derive(Clone)]
pub struct AwsKmsKey {
    kms: AwsKms,
    key_id: String,
}

impl fmt::Debug for AwsKmsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsKey")
            .field("key_id", &self.key_id)
            .field("kms", &self.kms.description)
            .finish()
    }
}

/// Maps a failed KMS call: a blob that does not authenticate is [`KeyError::UnwrapFailed`];
/// everything else (unknown, disabled or deleted key, access denied, throttling, timeouts,
/// connection errors, a service fault) is [`KeyError::Unavailable`] naming the key and the
/// KMS error (code and message; a KMS error never carries the plaintext).
fn map_error<E>(operation: &str, key_id: &str, error: &SdkError<E>) -> KeyError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let what = match error {
        SdkError::ServiceError(context) => {
            let err = context.err();
            let code = err.code().unwrap_or("unknown error");
            if NOT_AUTHENTIC.contains(&code) {
                return KeyError::UnwrapFailed;
            }
            let status = context.raw().status().as_u16();
            match err.message() {
                Some(message) => format!("{code} (HTTP {status}): {message}"),
                None => format!("{code} (HTTP {status})"),
            }
        }
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::DispatchFailure(failure) => {
            if failure.is_timeout() {
                "timed out connecting".to_owned()
            } else {
                format!("cannot reach the KMS: {}", source_chain(error))
            }
        }
        SdkError::ResponseError(_) => format!("unreadable response: {}", source_chain(error)),
        SdkError::ConstructionFailure(_) => {
            format!("request not sent: {}", source_chain(error))
        }
        _ => source_chain(error),
    };
    KeyError::Unavailable(format!("KMS key {key_id}: {operation}: {what}"))
}

/// The error and its sources, joined: the SDK's own `Display` says only "dispatch failure".
fn source_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

#[async_trait::async_trait]
impl KeyProvider for AwsKmsKey {
    fn key_id(&self) -> String {
        format!("{KMS_KEY_ID_PREFIX}{}", self.key_id)
    }

    fn kind(&self) -> &'static str {
        "aws-kms"
    }

    async fn wrap(&self, key: &TenantKey, context: &WrapContext) -> Result<Vec<u8>, KeyError> {
        let mut request = self
            .kms
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(key.as_bytes().as_slice()));
        for (name, value) in context.kms_encryption_context() {
            request = request.encryption_context(name, value);
        }
        let output = self
            .kms
            .timed(request.send())
            .await
            .map_err(|e| map_error("Encrypt", &self.key_id, &e))?;
        match output.ciphertext_blob {
            Some(blob) if !blob.as_ref().is_empty() => Ok(blob.into_inner()),
            _ => Err(KeyError::Unavailable(format!(
                "KMS key {}: Encrypt: the answer held no ciphertext",
                self.key_id
            ))),
        }
    }

    async fn unwrap(&self, wrapped: &[u8], context: &WrapContext) -> Result<TenantKey, KeyError> {
        let mut request = self
            .kms
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped));
        for (name, value) in context.kms_encryption_context() {
            request = request.encryption_context(name, value);
        }
        let output = self
            .kms
            .timed(request.send())
            .await
            .map_err(|e| map_error("Decrypt", &self.key_id, &e))?;
        let plaintext = Zeroizing::new(output.plaintext.map(Blob::into_inner).unwrap_or_default());
        let raw: [u8; TENANT_KEY_LEN] = plaintext
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::UnwrapFailed)?;
        Ok(TenantKey::from_bytes(raw))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kms::config::http::HttpResponse;
    use aws_sdk_kms::error::{ErrorMetadata, SdkError};
    use aws_sdk_kms::operation::decrypt::DecryptError;
    use aws_smithy_types::body::SdkBody;

    use super::map_error;
    use crate::KeyError;

    fn answer(code: &str, status: u16) -> SdkError<DecryptError> {
        let err = DecryptError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("the service's own words")
                .build(),
        );
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn copies_that_do_not_authenticate_are_unwrap_failed() {
        for code in ["InvalidCiphertextException", "IncorrectKeyException"] {
            assert_eq!(
                map_error("Decrypt", "alias/k", &answer(code, 400)),
                KeyError::UnwrapFailed,
                "{code}"
            );
        }
    }

    #[test]
    fn refusals_and_faults_are_unavailable_naming_key_call_and_code() {
        for (code, status) in [
            ("NotFoundException", 400),
            ("DisabledException", 400),
            ("KMSInvalidStateException", 400),
            ("AccessDeniedException", 400),
            ("KeyUnavailableException", 500),
            ("ThrottlingException", 400),
            ("KMSInternalException", 500),
        ] {
            match map_error("Decrypt", "alias/k", &answer(code, status)) {
                KeyError::Unavailable(message) => {
                    assert!(message.contains("alias/k"), "{message}");
                    assert!(message.contains("Decrypt"), "{message}");
                    assert!(message.contains(code), "{message}");
                    assert!(message.contains(&format!("HTTP {status}")), "{message}");
                    assert!(message.contains("the service's own words"), "{message}");
                }
                other => panic!("{code}: expected Unavailable, got {other:?}"),
            }
        }
    }
}
