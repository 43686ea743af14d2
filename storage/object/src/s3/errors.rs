//! Maps SDK errors to [`ObjectError`] by what a caller can do about them, never echoing
//! credentials, signatures or request bodies.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::ObjectError;

/// HTTP status of "requested range not satisfiable".
const RANGE_NOT_SATISFIABLE: u16 = 416;

/// Turns the error of `operation` (e.g. `"GetObject"`) into an [`ObjectError`]:
/// 404 is [`ObjectError::NotFound`]; timeouts, connection failures, throttling and 5xx are
/// [`ObjectError::Unavailable`] (the reader fails over on those); other refusals are
/// [`ObjectError::Rejected`].
pub(super) fn from_sdk<E>(operation: &str, error: SdkError<E, HttpResponse>) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = context.err().code().unwrap_or("no error code");
            let message = context.err().message().unwrap_or("");
            let text = format!("{operation}: HTTP {status} {code} {message}");
            match status {
                404 => ObjectError::NotFound,
                429 | 500..=599 => ObjectError::Unavailable(text.trim_end().to_owned()),
                _ => ObjectError::Rejected(text.trim_end().to_owned()),
            }
        }
        SdkError::TimeoutError(_) => ObjectError::Unavailable(format!("{operation}: timed out")),
        SdkError::ConstructionFailure(_) => ObjectError::Rejected(format!(
            "{operation}: request could not be built: {}",
            causes(&error)
        )),
        // Dispatch and response failures: the connection was refused, reset or garbled.
        _ => ObjectError::Unavailable(format!("{operation}: {}", causes(&error))),
    }
}

/// The error's causes on one line, outermost first, without their `Debug` dumps.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// Whether a `GetObject` failed because the range starts at or past the end of the object.
pub(super) fn is_invalid_range<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(context) => {
            context.raw().status().as_u16() == RANGE_NOT_SATISFIABLE
                || context.err().code() == Some("InvalidRange")
        }
        _ => false,
    }
}
