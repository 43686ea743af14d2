//! Shared helpers of the integration tests; the end-to-end tests themselves live in
//! `tests/e2e`, the KMS provider tests against the KMS test server in `tests/kms.rs`.

pub mod kms;
