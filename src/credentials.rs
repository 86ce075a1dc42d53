//! The start-up question "are there AWS credentials at all?", answered once, before anything
//! else asks AWS, with one line that says what to set when the answer is no.
//!
//! The SDK's default chain looks in the environment, the profile files (`AWS_PROFILE`, SSO,
//! `credential_process`), a web identity token (EKS IRSA), the ECS / EKS Pod Identity container
//! endpoint, and last the EC2 instance metadata service. Without this probe a missing
//! credential shows up only as every call failing, behind screens of the chain's warnings.
//!
//! The error names what to set; it never carries what a source answered (a `credential_process`
//! failure, for one, quotes the process's stderr, which may hold secrets). The SDK's own
//! account of each source is in its logs (`RUST_LOG=info,aws_config=debug`).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::provider::error::CredentialsError;

/// How long the whole chain may take to produce credentials once.
///
/// Above the worst case of the chain's slowest working source, the EC2 instance metadata
/// client (4 attempts of a 1 s connect and a 1 s read timeout, with backoff: about 10 s), so
/// that a slow but working source is not cut short and an unreachable one usually reports its
/// own failure first; and short enough that a replica with no reachable source fails its start
/// in seconds instead of hanging on a metadata service that never answers.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// What to set, in every error: the three ways the collector is meant to get credentials.
const WHAT_TO_SET: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role (ECS task role, EKS Pod Identity or IRSA, EC2 instance profile)";

/// Why no credentials came out of the chain. The texts hold no credential value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsProbeError {
    #[error("no AWS credentials found: {WHAT_TO_SET}")]
    NotFound,
    #[error("no AWS credentials within {} s (an unreachable instance metadata service?): {WHAT_TO_SET}", .0.as_secs())]
    TimedOut(Duration),
    #[error("AWS credentials configuration is invalid (profile files, AWS_* variables): {WHAT_TO_SET}")]
    InvalidConfiguration,
    #[error(
        "an AWS credentials source failed (credential_process, SSO session, web identity token, container or instance metadata endpoint): {WHAT_TO_SET}; the collector's logs with RUST_LOG=info,aws_config=debug show which"
    )]
    SourceFailed,
    #[error("no AWS credentials provider configured: {WHAT_TO_SET}")]
    NoProvider,
}

impl CredentialsProbeError {
    fn from_sdk(error: &CredentialsError) -> CredentialsProbeError {
        match error {
            CredentialsError::CredentialsNotLoaded(_) => CredentialsProbeError::NotFound,
            CredentialsError::InvalidConfiguration(_) => CredentialsProbeError::InvalidConfiguration,
            _ => CredentialsProbeError::SourceFailed,
        }
    }
}

/// Asks the configuration's credentials provider once, within `timeout`.
pub async fn probe(sdk_config: &SdkConfig, timeout: Duration) -> Result<(), CredentialsProbeError> {
    use aws_credential_types::provider::ProvideCredentials as _;
    let Some(provider) = sdk_config.credentials_provider() else {
        return Err(CredentialsProbeError::NoProvider);
    };
    match tokio::time::timeout(timeout, provider.provide_credentials()).await {
        Ok(Ok(_credentials)) => Ok(()),
        Ok(Err(e)) => Err(CredentialsProbeError::from_sdk(&e)),
        Err(_) => Err(CredentialsProbeError::TimedOut(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_names_the_variables_and_the_roles() {
        for error in [
            CredentialsProbeError::NotFound,
            CredentialsProbeError::TimedOut(PROBE_TIMEOUT),
            CredentialsProbeError::InvalidConfiguration,
            CredentialsProbeError::SourceFailed,
            CredentialsProbeError::NoProvider,
        ] {
            let text = error.to_string();
            for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "IAM role"] {
                assert!(text.contains(name), "{name} in {text}");
            }
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }

    #[test]
    fn the_sdk_errors_map_without_their_details() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for (error, expected) in [
            (CredentialsError::not_loaded(secret), CredentialsProbeError::NotFound),
            (
                CredentialsError::invalid_configuration(secret),
                CredentialsProbeError::InvalidConfiguration,
            ),
            (
                CredentialsError::provider_error(secret),
                CredentialsProbeError::SourceFailed,
            ),
            (CredentialsError::unhandled(secret), CredentialsProbeError::SourceFailed),
        ] {
            let mapped = CredentialsProbeError::from_sdk(&error);
            assert_eq!(mapped, expected);
            assert!(!mapped.to_string().contains(secret));
        }
    }

    #[tokio::test]
    async fn static_credentials_pass_and_a_config_without_a_provider_does_not() {
        let with = SdkConfig::builder()
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"),
            ))
            .build();
        assert_eq!(probe(&with, PROBE_TIMEOUT).await, Ok(()));
        let without = SdkConfig::builder().build();
        assert_eq!(
            probe(&without, PROBE_TIMEOUT).await,
            Err(CredentialsProbeError::NoProvider)
        );
    }
}
