//! Provider errors, classed by what the controller should do about them.

use std::time::Duration;

/// A value the user wrote, as an error shows it: quoted (so blanks and
/// control characters are visible) and cut at 64 characters, so that a huge
/// value cannot push the problem out of an Event's note or a status field.
pub fn quote(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// What the controller does after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The Service asks for something malformed: wait for the Service to change.
    Invalid,
    /// The request is well formed but cannot be met now (address taken, pool
    /// exhausted): retry with a long backoff, and whenever pools change.
    Unsatisfiable,
    /// The provider asked us to slow down.
    Throttled,
    /// The load balancer is still being built: requeue after a short fixed delay.
    Provisioning,
    /// Anything else that may pass: retry with backoff.
    Transient,
}

impl ErrorClass {
    /// A static name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Invalid => "invalid",
            ErrorClass::Unsatisfiable => "unsatisfiable",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Provisioning => "provisioning",
            ErrorClass::Transient => "transient",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// A field or annotation of the Service is malformed or contradictory.
    /// `field` names it as a user would write it (`spec.loadBalancerIP`,
    /// `metadata.annotations[ferrolb.io/pool]`).
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },

    /// The request is valid but cannot be met at the moment.
    #[error("{reason}")]
    Unsatisfiable { reason: String },

    #[error("throttled by {operation}")]
    Throttled {
        operation: &'static str,
        retry_after: Option<Duration>,
    },

    #[error("load balancer still provisioning: {what}")]
    Provisioning { what: String },

    #[error("{operation} failed: {source}")]
    Transient {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl ProviderError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ProviderError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn unsatisfiable(reason: impl Into<String>) -> Self {
        ProviderError::Unsatisfiable {
            reason: reason.into(),
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            ProviderError::Invalid { .. } => ErrorClass::Invalid,
            ProviderError::Unsatisfiable { .. } => ErrorClass::Unsatisfiable,
            ProviderError::Throttled { .. } => ErrorClass::Throttled,
            ProviderError::Provisioning { .. } => ErrorClass::Provisioning,
            ProviderError::Transient { .. } => ErrorClass::Transient,
        }
    }
}
