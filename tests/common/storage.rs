//! Helpers the storage tests share: a config with its own store, the code of a failed
//! request, and a request awaited under the test timeout.

use quicmatch::Config;
use quicmatch_client::{ErrorCode, RequestError};
use tokio::time::timeout;

use super::{test_config, TEST_TIMEOUT};

/// A config whose store lives in `dir`.
pub fn config_in(dir: &tempfile::TempDir) -> Config {
    let mut config = test_config();
    config.data_dir = dir.path().into();
    config
}

/// The error code of a failed request.
pub fn code<T: std::fmt::Debug>(result: Result<T, RequestError>) -> ErrorCode {
    result
        .expect_err("the request should fail")
        .code()
        .expect("a code")
}

/// Waits for a request under the test timeout.
pub async fn within<F: std::future::IntoFuture>(what: &str, f: F) -> F::Output {
    timeout(TEST_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("waiting for {what}"))
}
