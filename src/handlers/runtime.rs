//! Handlers for server code: RPC calls, run on a blocking thread and awaited.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    time::Duration,
};

use quicmatch_protocol::{ErrorCode, Response, MAX_RPC_ID_LEN, MAX_RPC_PAYLOAD};

use super::{ApiError, Dispatched};
use crate::{runtime::RpcContext, session::SessionState, Shared};

/// Longest an RPC function may run before its caller is told it failed (the function's
/// thread finishes on its own).
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

fn exception(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::RUNTIME_FUNCTION_EXCEPTION, message)
}

/// Calls the RPC function registered as `id` with `payload`.
pub(super) fn rpc(
    shared: &Shared,
    session: &SessionState,
    id: String,
    payload: String,
) -> Dispatched {
    if id.is_empty() || id.len() > MAX_RPC_ID_LEN {
        return Dispatched::Now(Err(ApiError::new(
            ErrorCode::BAD_INPUT,
            format!("rpc id must be 1 to {MAX_RPC_ID_LEN} bytes"),
        )));
    }
    if payload.len() > MAX_RPC_PAYLOAD {
        return Dispatched::Now(Err(ApiError::new(
            ErrorCode::PAYLOAD_TOO_LARGE,
            format!(
                "rpc payload of {} bytes exceeds {MAX_RPC_PAYLOAD}",
                payload.len()
            ),
        )));
    }
    let Some(function) = shared.runtime.rpc(&id) else {
        return Dispatched::Now(Err(ApiError::new(
            ErrorCode::RUNTIME_FUNCTION_NOT_FOUND,
            format!("no rpc function named {id:?}"),
        )));
    };
    let runtime = shared.runtime.clone();
    let caller = (*session.handle.presence).clone();
    metrics::counter!("quicmatch_rpc_calls_total").increment(1);
    Dispatched::Later(Box::pin(async move {
        let call = tokio::task::spawn_blocking(move || {
            let ctx = RpcContext {
                caller: &caller,
                runtime: &runtime,
            };
            catch_unwind(AssertUnwindSafe(|| function(&ctx, &payload)))
        });
        let output = match tokio::time::timeout(RPC_TIMEOUT, call).await {
            Err(_) => return Err(exception("the rpc function did not finish in time")),
            Ok(Err(_)) | Ok(Ok(Err(_))) => {
                metrics::counter!("quicmatch_rpc_failures_total").increment(1);
                tracing::error!(rpc = %id, "rpc function panicked");
                return Err(exception("the rpc function failed"));
            }
            Ok(Ok(Ok(result))) => result.map_err(|message| {
                metrics::counter!("quicmatch_rpc_failures_total").increment(1);
                exception(message)
            })?,
        };
        if output.len() > MAX_RPC_PAYLOAD {
            return Err(exception(format!(
                "the rpc function's output of {} bytes exceeds {MAX_RPC_PAYLOAD}",
                output.len()
            )));
        }
        Ok(Some(Response::Rpc {
            id,
            payload: output,
        }))
    }))
}
