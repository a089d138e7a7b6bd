//! The AWS clients, every call counted, and SDK errors mapped to provider
//! errors by their service error code.

use std::fmt::Debug;
use std::future::Future;

use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::{BoxError, ProvideErrorMetadata, SdkError};
use ferrolb_provider_api::{Fence, ProviderError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub service: &'static str,
    pub operation: &'static str,
    /// `success`, or the error class (`throttled`, `not_found`, `invalid`, `error`).
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct Cloud {
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub calls: Family<CallLabels, Counter>,
}

/// Error codes AWS uses for rate limiting.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "SlowDown",
];

/// Codes that mean the request itself is wrong: retrying it unchanged cannot help.
const INVALID: &[&str] = &[
    "ValidationError",
    "InvalidConfigurationRequest",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidSubnet",
    "InvalidSecurityGroup",
    "InvalidScheme",
    "InvalidParameter",
    "UnsupportedProtocol",
    // Named by the user's annotations: these "not found" codes mean the
    // annotation is wrong, not that our own resource is already gone.
    "CertificateNotFound",
    "AllocationIdNotFound",
    "SSLPolicyNotFound",
    "SubnetNotFound",
    "AvailabilityZoneNotSupported",
    "TooManyLoadBalancers",
    "TooManyTargetGroups",
    "TooManyListeners",
    "TooManyTargets",
    "TooManyTags",
    "DuplicateTagKeys",
];

/// What became of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Throttled,
    NotFound,
    Invalid,
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Throttled => "throttled",
            Outcome::NotFound => "not_found",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

fn classify(code: Option<&str>) -> Outcome {
    match code {
        Some(c) if THROTTLING.contains(&c) => Outcome::Throttled,
        Some(c) if c == "InvalidTarget" || INVALID.contains(&c) => Outcome::Invalid,
        Some(c) if c.ends_with("NotFound") || c.ends_with("NotFoundException") => Outcome::NotFound,
        _ => Outcome::Error,
    }
}

/// A failed AWS call, with what the controller needs to decide what next.
/// It displays as what AWS said and its error code, which is what a user
/// reading the Service's Events needs to act on.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message} ({service} error {})", code.as_deref().unwrap_or("without a code"))]
pub struct CallError {
    pub service: &'static str,
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub outcome: Outcome,
}

impl CallError {
    pub fn is_not_found(&self) -> bool {
        self.outcome == Outcome::NotFound
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl From<CallError> for ProviderError {
    fn from(e: CallError) -> Self {
        match e.outcome {
            Outcome::Throttled => ProviderError::Throttled {
                operation: e.operation,
                retry_after: None,
            },
            Outcome::Invalid => ProviderError::invalid(
                format!("the load balancer ({} {})", e.service, e.operation),
                format!("AWS refused it: {}", e.message),
            ),
            Outcome::Success | Outcome::NotFound | Outcome::Error => ProviderError::Transient {
                operation: e.operation,
                source: Box::new(e),
            },
        }
    }
}

/// Refuses each attempt of every call, unsent, once the replica's fence is
/// closed; the SDK's own retries go through it too.
#[derive(Debug)]
struct FenceCheck(Fence);

impl Intercept for FenceCheck {
    fn name(&self) -> &'static str {
        "FenceCheck"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        Ok(self.0.check()?)
    }
}

impl Cloud {
    /// The clients, each with a retry partition of its own whose retries are
    /// not rationed by the SDK's retry quota.
    ///
    /// The SDK's standard retry mode rations retries with a token bucket shared by
    /// every call of the process: 500 tokens, 5 a retry (10 after a timeout), one
    /// back per call that succeeds at once. That suits a client doing one thing at
    /// a time; ferrolb runs 16 reconciles at once, each a chain of ten or so
    /// calls. When AWS fails a share of the calls the bucket is empty within
    /// seconds and the SDK stops retrying altogether, so every failed attempt
    /// fails its whole ensure, and an ensure needs all of its calls to succeed:
    /// with half the calls failing, about one ensure in a thousand (2^-10) gets
    /// through, and Services sat at the longest backoff without converging (the
    /// fault tests, `e2e/tests/aws_faults.rs`, found this). What the bucket
    /// guards against, a client multiplying its load on a failing service,
    /// ferrolb bounds itself: at most `--aws-call-attempts` attempts per call
    /// (with the SDK's exponential backoff between them), 16 reconciles at
    /// once, and per Service an exponential backoff up to 5 minutes after a
    /// failed reconcile.
    ///
    /// Every attempt also checks the replica's fence before it is sent.
    pub fn new(sdk: &aws_config::SdkConfig, fence: &Fence) -> Self {
        // Both SDKs re-export these from aws-smithy-runtime: one type each.
        use aws_sdk_elasticloadbalancingv2::config::retry::{RetryPartition, TokenBucket};
        let elbv2 = aws_sdk_elasticloadbalancingv2::config::Builder::from(sdk)
            .retry_partition(
                RetryPartition::custom("ferrolb-elbv2")
                    .token_bucket(TokenBucket::unlimited())
                    .build(),
            )
            .interceptor(FenceCheck(fence.clone()))
            .build();
        let ec2 = aws_sdk_ec2::config::Builder::from(sdk)
            .retry_partition(
                RetryPartition::custom("ferrolb-ec2")
                    .token_bucket(TokenBucket::unlimited())
                    .build(),
            )
            .interceptor(FenceCheck(fence.clone()))
            .build();
        Self {
            elbv2: aws_sdk_elasticloadbalancingv2::Client::from_conf(elbv2),
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            calls: Family::default(),
        }
    }

    /// Runs one ELBv2 call, counting it.
    pub async fn elb<T, E, F>(&self, operation: &'static str, call: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.counted("elbv2", operation, call).await
    }

    /// Runs one EC2 call, counting it.
    pub async fn ec2<T, E, F>(&self, operation: &'static str, call: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.counted("ec2", operation, call).await
    }

    async fn counted<T, E, F>(
        &self,
        service: &'static str,
        operation: &'static str,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let result = call.await;
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(e) => classify(e.code()),
        };
        self.calls
            .get_or_create(&CallLabels {
                service,
                operation,
                outcome: outcome.label(),
            })
            .inc();
        result.map_err(|e| {
            let code = e.code().map(str::to_string);
            let message = e
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| aws_sdk_ec2::error::DisplayErrorContext(&e).to_string());
            // "Not found" is an answer the callers expect (a first create,
            // a delete of what is gone); anything else is worth a look.
            if outcome == Outcome::NotFound {
                tracing::debug!(service, operation, ?code, %message, "AWS call found nothing");
            } else {
                tracing::warn!(service, operation, ?code, %message, "AWS call failed");
            }
            CallError {
                service,
                operation,
                code,
                message,
                outcome,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classed() {
        assert_eq!(classify(Some("Throttling")), Outcome::Throttled);
        assert_eq!(classify(Some("RequestLimitExceeded")), Outcome::Throttled);
        assert_eq!(classify(Some("LoadBalancerNotFound")), Outcome::NotFound);
        assert_eq!(classify(Some("TargetGroupNotFound")), Outcome::NotFound);
        assert_eq!(classify(Some("ValidationError")), Outcome::Invalid);
        assert_eq!(classify(Some("InvalidTarget")), Outcome::Invalid);
        // A certificate or EIP the annotations name that does not exist is the
        // user's to fix, not ours to retry or to treat as already deleted.
        assert_eq!(classify(Some("CertificateNotFound")), Outcome::Invalid);
        assert_eq!(classify(Some("AllocationIdNotFound")), Outcome::Invalid);
        assert_eq!(classify(Some("SSLPolicyNotFound")), Outcome::Invalid);
        assert_eq!(classify(Some("InvalidParameter")), Outcome::Invalid);
        assert_eq!(classify(Some("InternalFailure")), Outcome::Error);
        assert_eq!(classify(None), Outcome::Error);
    }

    #[test]
    fn throttling_becomes_a_throttled_provider_error() {
        let e = CallError {
            service: "elbv2",
            operation: "DescribeLoadBalancers",
            code: Some("Throttling".into()),
            message: "Rate exceeded".into(),
            outcome: Outcome::Throttled,
        };
        let p: ProviderError = e.into();
        assert_eq!(p.class(), ferrolb_provider_api::ErrorClass::Throttled);
    }
}
