//! Prometheus metrics: what an operator watches. Off unless `metrics` (or `--metrics
//! ADDR`) names an address, where `/metrics` is then served.
//!
//! Counters are bumped where things happen (through the `metrics` facade, which costs
//! nothing when no exporter is installed); gauges are refreshed from live counts once a
//! second.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `quicmatch_connections` | gauge | |
//! | `quicmatch_sessions` | gauge | |
//! | `quicmatch_matches` | gauge | |
//! | `quicmatch_match_presences` | gauge | |
//! | `quicmatch_parties` | gauge | |
//! | `quicmatch_matchmaker_pool` | gauge | |
//! | `quicmatch_datagrams_in_total` | counter | |
//! | `quicmatch_datagrams_out_total` | counter | |
//! | `quicmatch_datagrams_dropped_total` | counter | `reason` (`reader_behind`: an older datagram dropped for a reader that fell behind; `too_large`; `connection_lost`; or an error code) |
//! | `quicmatch_datagram_bytes_in_total` / `_out_total` | counter | |
//! | `quicmatch_reliable_messages_total` | counter | (relayed reliable match data, per recipient) |
//! | `quicmatch_requests_rejected_total` | counter | `code` |
//! | `quicmatch_handshake_failures_total` | counter | |
//! | `quicmatch_auth_failures_total` | counter | `reason` |
//! | `quicmatch_slow_consumer_closes_total` | counter | |
//! | `quicmatch_suspect_sessions` | gauge | (not heard from for `session.suspect_after`) |
//! | `quicmatch_held_sessions` | gauge | (waiting for a resume) |
//! | `quicmatch_sessions_suspected_total` | counter | |
//! | `quicmatch_sessions_timed_out_total` | counter | (nothing heard for `session.idle_timeout`) |
//! | `quicmatch_resume_gaps_total` | counter | (resumes refused with `RESUME_GAP`) |
//! | `quicmatch_held_events_dropped_total` | counter | (events dropped while a session was held, over its limits) |
//! | `quicmatch_authoritative_matches` | gauge | (live server-run matches) |
//! | `quicmatch_matches_created_total` | counter | `handler` |
//! | `quicmatch_matches_ended_total` | counter | (server-run matches ended, any reason) |
//! | `quicmatch_match_panics_total` | counter | (handler callbacks that panicked) |
//! | `quicmatch_match_overruns_total` | counter | (ticks over budget, and callbacks stuck past `matches.overrun_limit`) |
//! | `quicmatch_match_tick_lateness_seconds` | histogram | (how late each tick started) |
//! | `quicmatch_match_input_dropped_total` | counter | (member messages refused by a full input queue) |
//! | `quicmatch_match_broadcast_errors_total` | counter | (handler sends dropped: oversized, match gone) |
//! | `quicmatch_rpc_calls_total` / `quicmatch_rpc_failures_total` | counter | |
//! | `quicmatch_matchmaker_pass_seconds` | histogram | |
//! | `quicmatch_matchmaker_matched_total` | counter | (tickets matched) |

use std::{net::SocketAddr, time::Duration};

use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_util::sync::CancellationToken;

use crate::Stats;

/// How often gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics exporter on {addr}: {reason}")]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

/// Installs the process-wide Prometheus exporter serving `/metrics` on `addr`.
pub(crate) fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
        )
        .and_then(PrometheusBuilder::install)
        .map_err(|e| MetricsError {
            addr,
            reason: e.to_string(),
        })
}

/// Refreshes the gauges until shutdown.
pub(crate) async fn gauges(stats: Stats, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let m = stats.matches();
                metrics::gauge!("quicmatch_connections").set(stats.connections() as f64);
                metrics::gauge!("quicmatch_sessions").set(stats.sessions() as f64);
                metrics::gauge!("quicmatch_matches").set(m.matches as f64);
                metrics::gauge!("quicmatch_match_presences").set(m.presences as f64);
                metrics::gauge!("quicmatch_parties").set(stats.parties() as f64);
                metrics::gauge!("quicmatch_suspect_sessions").set(stats.suspect_sessions() as f64);
                metrics::gauge!("quicmatch_held_sessions").set(stats.held_sessions() as f64);
                metrics::gauge!("quicmatch_authoritative_matches").set(stats.authoritative_matches() as f64);
                metrics::gauge!("quicmatch_matchmaker_pool").set(stats.matchmaker().tickets as f64);
            }
        }
    }
}
