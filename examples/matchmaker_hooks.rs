//! A server with both matchmaker hooks.
//!
//! - Before a ticket is added, the hook rejects tickets that claim a `cheat` property
//!   (the client gets `RUNTIME_FUNCTION_EXCEPTION` with the reason), renames the region
//!   `europe` to `europe-west`, and caps `max_count` at 8.
//! - When a group forms and every member asked for `mode=hosted`, the matched hook
//!   creates a match on the server and the players receive its `match_id` instead of a
//!   token.
//!
//! Run it with `cargo run --example matchmaker_hooks`, then use `quicmatch-cli` as in the
//! README (`mm-add 2 2 --string mode=hosted`).

use quicmatch::{hooks::MatchmakerAddRequest, Config, Server, ServerBuilder};

/// The before-add hook.
fn before_add(
    _who: &quicmatch_protocol::Presence,
    mut req: MatchmakerAddRequest,
) -> Result<MatchmakerAddRequest, String> {
    if req.string_properties.contains_key("cheat") {
        return Err("tickets may not set properties.cheat".into());
    }
    if req.string_properties.get("region").map(String::as_str) == Some("europe") {
        req.string_properties
            .insert("region".into(), "europe-west".into());
    }
    req.max_count = req.max_count.min(8);
    Ok(req)
}

/// The server with both hooks registered.
fn builder(config: Config) -> ServerBuilder {
    Server::builder(config)
        .before_matchmaker_add(before_add)
        .on_matchmaker_matched(|ctx, entries| {
            let hosted = entries
                .iter()
                .all(|e| e.properties.strings.get("mode").map(String::as_str) == Some("hosted"));
            hosted.then(|| ctx.create_match())
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let server = builder(Config::default()).bind()?;
    println!(
        "listening on {} (pin {})",
        server.local_addr(),
        server.fingerprint()
    );
    server
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use quicmatch_client::{ClientConfig, Credentials, ErrorCode, Event, Socket, Trust};
    use tokio::time::timeout;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    async fn start() -> (
        quicmatch::Stats,
        Vec<Socket>,
        tokio_util::sync::CancellationToken,
    ) {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..Config::default()
        };
        config.matchmaker.interval = Duration::from_secs(3600);
        let material = quicmatch::tls::generate(vec!["127.0.0.1".into()]).expect("certificate");
        let server = builder(config)
            .certificate(material)
            .secret([9u8; 32])
            .bind()
            .expect("bind");
        let (addr, cert, stats) = (
            server.local_addr(),
            server.cert_der().clone(),
            server.stats(),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(server.serve(async move { token.cancelled().await }));
        let mut sockets = Vec::new();
        for name in ["hooked-player-1", "hooked-player-2"] {
            let config = ClientConfig::new(
                addr,
                Trust::Certificates(vec![cert.clone()]),
                Credentials::Device { id: name.into() },
            );
            sockets.push(
                timeout(WAIT, Socket::connect(config))
                    .await
                    .expect("connect in time")
                    .expect("connect"),
            );
        }
        (stats, sockets, stop)
    }

    async fn matched(socket: &Socket) -> quicmatch_client::MatchmakerMatched {
        match timeout(WAIT, socket.next_event())
            .await
            .expect("result in time")
        {
            Some(Event::MatchmakerMatched(m)) => m,
            other => panic!("expected a result, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn before_hook_rewrites_and_rejects() {
        let (stats, p, stop) = start().await;
        let err = p[0]
            .add_matchmaker("*", 2, 2)
            .string_property("cheat", "aimbot")
            .await
            .expect_err("rejected");
        assert_eq!(err.code(), Some(ErrorCode::RUNTIME_FUNCTION_EXCEPTION));
        assert!(err.to_string().contains("properties.cheat"), "{err}");
        for s in &p {
            s.add_matchmaker("*", 2, 20)
                .string_property("region", "europe")
                .await
                .expect("ticket");
        }
        // max_count was capped at 8, so the two wait (ideal 8) and then relax.
        let mm = stats.matchmaker_handle();
        assert_eq!(mm.process(std::time::Instant::now()), 0);
        assert_eq!(mm.process(std::time::Instant::now()), 1);
        let m = matched(&p[0]).await;
        assert_eq!(m.self_user.string_properties["region"], "europe-west");
        assert!(m.token.is_some() && m.match_id.is_none());
        stop.cancel();
    }

    #[tokio::test]
    async fn matched_hook_hands_out_a_server_match() {
        let (stats, p, stop) = start().await;
        for s in &p {
            s.add_matchmaker("*", 2, 2)
                .string_property("mode", "hosted")
                .await
                .expect("ticket");
        }
        assert_eq!(
            stats.matchmaker_handle().process(std::time::Instant::now()),
            1
        );
        let a = matched(&p[0]).await;
        let b = matched(&p[1]).await;
        let id = a.match_id.expect("a server match");
        assert_eq!(b.match_id, Some(id));
        assert!(a.token.is_none());
        let first = p[0].join_match(id).await.expect("join by id");
        assert_eq!(first.size, 1);
        let second = p[1].join_match(id).await.expect("join by id");
        assert_eq!(second.size, 2);
        stop.cancel();
    }
}
