//! Arena: a small real-time game run by the server (an authoritative match handler).
//!
//! Up to eight players walk around a 101 × 101 field (`x` and `y` from 0 to 100) and
//! race for one coin. The server owns the game: players only send the direction they
//! want to go, and the server moves everyone 20 times a second, sends every player a
//! snapshot of the whole arena each tick, and announces every coin picked up.
//!
//! # Running and playing
//!
//! ```text
//! cargo run --example arena                             # listens on [::]:7350
//! cargo run --example arena -- --listen 127.0.0.1:7350
//! ```
//!
//! It prints its address and certificate fingerprint; the development certificate is
//! generated into `certs/` on first start. Then, in two more terminals:
//!
//! ```text
//! cargo run -p quicmatch-client --bin quicmatch-cli -- --server 127.0.0.1:7350 \
//!     --device-id alice-device-01 --username alice --ca certs/server.crt
//! cargo run -p quicmatch-client --bin quicmatch-cli -- --server 127.0.0.1:7350 \
//!     --device-id bob-device-0001 --username bob --ca certs/server.crt
//! ```
//!
//! In alice's CLI, `rpc create_arena` answers `{"match_id":"…"}`; both players then
//! `join MATCH_ID` (bob can find it with `list --authoritative --query
//! +label.mode:arena`), and steer with `send MATCH_ID 1 "1 0"` (east, as an
//! unreliable datagram) or `send MATCH_ID 1 "0 -1" --reliable` (north, over the
//! control stream); `send MATCH_ID 1 "0 0"` stops. Snapshots (op 2) scroll by 20 times
//! a second and coin pickups (op 3) stand out among them (`--json` and `grep` help).
//! To be matched instead, both players run `mm-add 2 2`; each receives a `match_id`
//! within a couple of seconds (the matchmaker's pass interval) and joins it with
//! `join MATCH_ID`. `rpc create_arena '{"empty_secs":5}'` makes an arena that ends
//! five seconds after it empties.
//!
//! # Rules
//!
//! - The field is `0..=100` on both axes; positions are clamped to it.
//! - Players spawn, in join order, at (10,10), (90,90), (10,90), (90,10), (50,10),
//!   (50,90), (10,50), (90,50) (the ninth joiner since the match started takes the
//!   first point again, and so on).
//! - Every tick (20 Hz) each player moves one unit along each axis of the direction it
//!   last sent (so up to 20 units a second; diagonals move one unit on both axes). A
//!   direction stays in force until the player sends another; `0 0` stops.
//! - Coin: one coin lies at a position from 5 to 95 on both axes. A player whose
//!   position is within `PICKUP_RADIUS` (2) of it on both axes (Chebyshev distance
//!   at most 2) after a tick's moves scores one point; the coin then respawns at a
//!   pseudo-random position (seeded by the match id) where no player can take it at
//!   once. At most one coin is taken per tick, by the earliest joiner among those in
//!   reach. A coin that a newly spawned player would stand on moves first.
//! - At most `MAX_PLAYERS` (8) players. The ninth is refused with
//!   `MATCH_JOIN_REJECTED` "arena is full". An arena the matchmaker created admits only
//!   the users the matchmaker placed in it; anyone else is refused with "not invited".
//! - The label is `{"mode":"arena","players":N}`, updated as players join and leave,
//!   so `MatchList` can find arenas with room (query `+label.mode:arena`, size filters).
//! - An arena nobody is in for `EMPTY_SECS` (30) seconds of ticks ends with the
//!   reason "arena empty" (this includes a new arena nobody joins).
//!
//! # Messages
//!
//! All payloads are UTF-8 text, so the CLI can send and show them as they are.
//!
//! - Op 1, player → server, reliable or unreliable: the direction, two integers each
//!   in `-1..=1` separated by whitespace, `"dx dy"` (`"1 0"` east, `"-1 1"` south-west:
//!   `y` grows downwards, as on a screen). Anything else is ignored, as are other ops.
//! - Op 2, server → everyone, unreliable (a datagram, sender the server), every tick:
//!   `{"tick":T,"coin":[X,Y],"players":[{"user":"alice","x":10,"y":20,"score":3},…]}`
//!   with the players in join order. `user` is the username cut to its first 16 bytes
//!   (on a character boundary). Eight players with the longest names fit well under
//!   the 1 024-byte datagram limit (see the `snapshot_of_eight_fits_a_datagram` test).
//!   A client keeps the snapshot with the highest `tick` (or the match data `seq`).
//! - Op 3, server → everyone, reliable: a coin was taken,
//!   `{"user":"alice","score":4,"coin":[X,Y]}`: who took it, their new score, and where
//!   the next coin is.
//!
//! # Server code
//!
//! - The match handler `arena`. Its parameters are a JSON object, every key optional:
//!   `{"empty_secs": N}` (1 to 3600, default 30) sets how long the arena may stay
//!   empty; unknown keys are refused. The server itself also ends any server-run
//!   match empty for its `matches.max_empty` (30 s by default), whichever comes first.
//! - The RPC `create_arena`: its payload is empty or such a parameter object; it
//!   creates an arena and returns `{"match_id":"…"}`.
//! - The matchmaker-matched hook: every group of at most 8 is placed into a new arena
//!   that admits exactly that group, and the players receive its `match_id`. A larger
//!   group (or a failure to create the arena) gets the usual token for a relayed match.
//!
//! `cargo test --example arena` plays all of this against an in-process server with
//! the real client SDK.

use std::net::SocketAddr;

use clap::Parser;
use quicmatch::{
    hooks::MatchedContext,
    matchmaker::pool::MatchedEntry,
    runtime::{
        Dispatcher, Inbound, JoinDecision, MatchContext, MatchHandler, MatchInit, Params, Runtime,
    },
    Config, Server, ServerBuilder,
};
use quicmatch_protocol::{MatchId, Presence, SessionId};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The name the handler is registered under.
const ARENA: &str = "arena";
/// Ticks per second.
const TICK_RATE: u32 = 20;
/// Most players in one arena.
const MAX_PLAYERS: usize = 8;
/// The field runs from 0 to this on both axes.
const FIELD_MAX: i32 = 100;
/// Coins appear from this far in from every edge.
const COIN_MARGIN: i32 = 5;
/// How close (on both axes) a player must be to take the coin.
const PICKUP_RADIUS: i32 = 2;
/// Seconds an arena may stay empty before it ends, unless its parameters say otherwise.
const EMPTY_SECS: u64 = 30;
/// Most bytes of a username a snapshot carries.
const NAME_BYTES: usize = 16;

/// Player → server: the direction to move in, `"dx dy"`.
const OP_INPUT: i64 = 1;
/// Server → everyone, unreliable, every tick: a [`Snapshot`].
const OP_STATE: i64 = 2;
/// Server → everyone, reliable: a [`ScoreEvent`].
const OP_SCORE: i64 = 3;

/// Spawn points, taken in join order.
const SPAWNS: [(i32, i32); MAX_PLAYERS] = [
    (10, 10),
    (90, 90),
    (10, 90),
    (90, 10),
    (50, 10),
    (50, 90),
    (10, 50),
    (90, 50),
];

/// The parameters an arena is created with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArenaParams {
    /// Seconds the arena may stay empty before it ends.
    #[serde(default = "default_empty_secs")]
    empty_secs: u64,
}

fn default_empty_secs() -> u64 {
    EMPTY_SECS
}

impl ArenaParams {
    /// Reads and checks the parameters; `null` means every default.
    fn parse(params: &Params) -> Result<Self, String> {
        let parsed: Self = match params {
            Params::Null => serde_json::from_value(json!({})),
            Params::Object(_) => serde_json::from_value(params.clone()),
            _ => return Err("arena parameters must be a JSON object".into()),
        }
        .map_err(|e| format!("bad arena parameters: {e}"))?;
        if !(1..=3600).contains(&parsed.empty_secs) {
            return Err(format!(
                "empty_secs must be 1 to 3600, got {}",
                parsed.empty_secs
            ));
        }
        Ok(parsed)
    }
}

/// Op 2: the whole arena.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Snapshot {
    tick: u64,
    coin: [i32; 2],
    players: Vec<PlayerState>,
}

/// One player in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PlayerState {
    user: String,
    x: i32,
    y: i32,
    score: u32,
}

/// Op 3: a coin was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ScoreEvent {
    user: String,
    score: u32,
    coin: [i32; 2],
}

/// Reads an op 1 payload: two integers in `-1..=1`.
fn parse_input(data: &[u8]) -> Option<(i32, i32)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut parts = text.split_whitespace();
    let mut axis = || {
        parts
            .next()?
            .parse::<i32>()
            .ok()
            .filter(|v| (-1..=1).contains(v))
    };
    let (dx, dy) = (axis()?, axis()?);
    parts.next().is_none().then_some((dx, dy))
}

/// The first `NAME_BYTES` bytes of a name, cut on a character boundary.
fn short_name(name: &str) -> String {
    let mut end = name.len().min(NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// The label listings show.
fn label(players: usize) -> String {
    json!({ "mode": "arena", "players": players }).to_string()
}

#[derive(Serialize, Deserialize)]
struct Player {
    session: SessionId,
    name: String,
    x: i32,
    y: i32,
    dx: i32,
    dy: i32,
    score: u32,
}

impl Player {
    fn reaches(&self, (x, y): (i32, i32)) -> bool {
        (self.x - x).abs() <= PICKUP_RADIUS && (self.y - y).abs() <= PICKUP_RADIUS
    }
}

/// One arena's state (serialized whole as its restart snapshot).
#[derive(Default, Serialize, Deserialize)]
struct Arena {
    /// In join order.
    players: Vec<Player>,
    coin: (i32, i32),
    rng: u64,
    /// Players who have joined so far, for spawn points.
    joined: usize,
    /// Ticks in a row with nobody in the arena, and how many end it.
    empty_ticks: u64,
    empty_limit: u64,
}

impl Arena {
    /// xorshift64: deterministic per match, good enough for coin positions.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn random_coord(&mut self) -> i32 {
        let span = (FIELD_MAX - 2 * COIN_MARGIN + 1) as u64;
        COIN_MARGIN + (self.next_random() % span) as i32
    }

    /// Puts the coin somewhere no player can take it at once (bounded tries: with at
    /// most eight players a free spot is found almost always on the first).
    fn respawn_coin(&mut self) {
        for _ in 0..64 {
            let coin = (self.random_coord(), self.random_coord());
            self.coin = coin;
            if !self.players.iter().any(|p| p.reaches(coin)) {
                return;
            }
        }
    }

    fn view(&self, tick: u64) -> Snapshot {
        Snapshot {
            tick,
            coin: [self.coin.0, self.coin.1],
            players: self
                .players
                .iter()
                .map(|p| PlayerState {
                    user: p.name.clone(),
                    x: p.x,
                    y: p.y,
                    score: p.score,
                })
                .collect(),
        }
    }

    /// The state kept across a server restart.
    fn save(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self).ok()
    }

    /// The arena a [`save`](Self::save) kept.
    fn load(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("bad arena snapshot: {e}"))
    }

    fn relabel(&self, dispatcher: &mut Dispatcher<'_>) {
        dispatcher.set_label(Some(label(self.players.len())));
    }
}

impl MatchHandler for Arena {
    fn init(&mut self, ctx: &MatchContext, params: &Params) -> Result<MatchInit, String> {
        let params = ArenaParams::parse(params)?;
        self.empty_limit = params.empty_secs * u64::from(TICK_RATE);
        let id = ctx.match_id();
        let seed = u64::from_le_bytes(id.as_bytes()[..8].try_into().unwrap_or([1; 8]));
        self.rng = seed | 1;
        self.respawn_coin();
        Ok(MatchInit::new(TICK_RATE)
            .label(label(0))
            .max_size(MAX_PLAYERS as u32))
    }

    /// The whole arena, so a server restart (even `kill -9`) loses at most
    /// `matches.snapshot_interval` of play.
    fn snapshot(&mut self, _ctx: &MatchContext) -> Option<Vec<u8>> {
        self.save()
    }

    /// After a restart: the arena as last kept; its players resume their sessions.
    fn restore(&mut self, _ctx: &MatchContext, snapshot: &[u8]) -> Result<MatchInit, String> {
        *self = Self::load(snapshot)?;
        Ok(MatchInit::new(TICK_RATE)
            .label(label(self.players.len()))
            .max_size(MAX_PLAYERS as u32))
    }

    fn join_attempt(
        &mut self,
        ctx: &MatchContext,
        _dispatcher: &mut Dispatcher<'_>,
        presence: &Presence,
        _metadata: &std::collections::BTreeMap<String, String>,
    ) -> JoinDecision {
        if self
            .players
            .iter()
            .any(|p| p.session == presence.session_id)
        {
            return JoinDecision::Accept;
        }
        let invited = ctx.matched();
        if !invited.is_empty() && !invited.iter().any(|p| p.user_id == presence.user_id) {
            return JoinDecision::Reject("not invited".into());
        }
        if self.players.len() >= MAX_PLAYERS {
            return JoinDecision::Reject("arena is full".into());
        }
        JoinDecision::Accept
    }

    fn join(
        &mut self,
        _ctx: &MatchContext,
        dispatcher: &mut Dispatcher<'_>,
        presences: &[Presence],
    ) {
        for presence in presences {
            if self
                .players
                .iter()
                .any(|p| p.session == presence.session_id)
            {
                continue;
            }
            let (x, y) = SPAWNS[self.joined % SPAWNS.len()];
            self.joined += 1;
            let player = Player {
                session: presence.session_id,
                name: short_name(&presence.username),
                x,
                y,
                dx: 0,
                dy: 0,
                score: 0,
            };
            let on_coin = player.reaches(self.coin);
            self.players.push(player);
            if on_coin {
                self.respawn_coin();
            }
        }
        self.relabel(dispatcher);
    }

    fn leave(
        &mut self,
        _ctx: &MatchContext,
        dispatcher: &mut Dispatcher<'_>,
        presences: &[Presence],
    ) {
        self.players
            .retain(|p| !presences.iter().any(|gone| gone.session_id == p.session));
        self.relabel(dispatcher);
    }

    fn tick(
        &mut self,
        ctx: &MatchContext,
        dispatcher: &mut Dispatcher<'_>,
        messages: Vec<Inbound>,
    ) {
        for m in messages {
            if m.op_code != OP_INPUT {
                continue;
            }
            let Some((dx, dy)) = parse_input(&m.data) else {
                continue;
            };
            if let Some(p) = self
                .players
                .iter_mut()
                .find(|p| p.session == m.sender.session_id)
            {
                (p.dx, p.dy) = (dx, dy);
            }
        }

        if self.players.is_empty() {
            self.empty_ticks += 1;
            if self.empty_ticks >= self.empty_limit {
                dispatcher.end("arena empty");
            }
            return;
        }
        self.empty_ticks = 0;

        for p in &mut self.players {
            p.x = (p.x + p.dx).clamp(0, FIELD_MAX);
            p.y = (p.y + p.dy).clamp(0, FIELD_MAX);
        }
        let coin = self.coin;
        if let Some(p) = self.players.iter_mut().find(|p| p.reaches(coin)) {
            p.score = p.score.saturating_add(1);
            let (user, score) = (p.name.clone(), p.score);
            self.respawn_coin();
            let event = ScoreEvent {
                user,
                score,
                coin: [self.coin.0, self.coin.1],
            };
            if let Ok(data) = serde_json::to_vec(&event) {
                dispatcher.broadcast(OP_SCORE, data, None, None, true);
            }
        }
        if let Ok(data) = serde_json::to_vec(&self.view(ctx.tick())) {
            dispatcher.broadcast(OP_STATE, data, None, None, false);
        }
    }
}

/// The `create_arena` RPC: an empty payload or an [`ArenaParams`] object in,
/// `{"match_id":"…"}` out.
fn create_arena(runtime: &Runtime, payload: &str) -> Result<String, String> {
    let params: Params = if payload.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(payload)
            .map_err(|e| format!("create_arena takes a JSON object: {e}"))?
    };
    if !params.is_object() {
        return Err("create_arena takes a JSON object".into());
    }
    let id = runtime
        .create_match(ARENA, params)
        .map_err(|e| e.to_string())?;
    Ok(json!({ "match_id": id.to_string() }).to_string())
}

/// The matchmaker-matched hook: each group of at most eight gets its own arena.
fn place_group(ctx: &MatchedContext<'_>, entries: &[MatchedEntry]) -> Option<MatchId> {
    if entries.len() > MAX_PLAYERS {
        return None;
    }
    match ctx.create_authoritative(ARENA, json!({})) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, "could not create an arena for a matchmaker group");
            None
        }
    }
}

/// The server with the arena handler, the RPC and the hook.
fn builder(config: Config) -> ServerBuilder {
    Server::builder(config)
        .match_handler(ARENA, Arena::default)
        .rpc("create_arena", |ctx, payload| {
            create_arena(ctx.runtime, payload)
        })
        .on_matchmaker_matched(place_group)
}

#[derive(Parser)]
#[command(name = "arena", about = "The arena example game server")]
struct Args {
    /// UDP address to listen on.
    #[arg(long, default_value = "[::]:7350")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,quinn=warn")),
        )
        .init();
    let args = Args::parse();
    let config = Config {
        listen: args.listen,
        ..Config::default()
    };
    let certs = config.certs_dir.clone();
    let server = builder(config).bind()?;
    println!("arena listening on {}", server.local_addr());
    println!(
        "certificate fingerprint {} (pin it with --pin, or trust {})",
        server.fingerprint(),
        certs.join(quicmatch::tls::CERT_FILE).display()
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

    use quicmatch::Stats;
    use quicmatch_client::{ClientConfig, Credentials, ErrorCode, Event, MatchData, Socket, Trust};
    use quicmatch_protocol::{MatchListRequest, MatchListing};
    use rustls::pki_types::CertificateDer;
    use tokio::time::{timeout, timeout_at, Instant};
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// Every wait is bounded by this.
    const WAIT: Duration = Duration::from_secs(15);

    #[test]
    fn a_saved_arena_loads_the_same() {
        let mut arena = Arena {
            rng: 7,
            empty_limit: 99,
            joined: 2,
            ..Arena::default()
        };
        arena.players.push(Player {
            session: SessionId(uuid::Uuid::from_u128(5)),
            name: "ann".into(),
            x: 3,
            y: 4,
            dx: 1,
            dy: -1,
            score: 6,
        });
        arena.respawn_coin();
        let bytes = arena.save().expect("save");
        let back = Arena::load(&bytes).expect("load");
        assert_eq!(back.view(9), arena.view(9));
        assert_eq!(
            (back.rng, back.joined, back.empty_limit),
            (arena.rng, 2, 99)
        );
        assert_eq!((back.players[0].dx, back.players[0].dy), (1, -1));
        assert!(Arena::load(b"{").is_err());
    }

    struct Harness {
        addr: SocketAddr,
        cert: CertificateDer<'static>,
        stats: Stats,
        stop: CancellationToken,
        _data: tempfile::TempDir,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    impl Harness {
        fn start() -> Self {
            let mut config = Config {
                listen: "127.0.0.1:0".parse().expect("addr"),
                certs_dir: std::env::temp_dir().join("quicmatch-arena-unused"),
                ..Config::default()
            };
            // Each server its own store: arenas recorded for a restart by one test must
            // not come back in another.
            let data = tempfile::tempdir().expect("data dir");
            config.data_dir = data.path().to_owned();
            // Matchmaker passes run by hand.
            config.matchmaker.interval = Duration::from_secs(3600);
            let material = quicmatch::tls::generate(vec!["127.0.0.1".into()]).expect("certificate");
            let server = builder(config)
                .certificate(material)
                .secret([7u8; 32])
                .bind()
                .expect("bind");
            let stop = CancellationToken::new();
            let token = stop.clone();
            let harness = Self {
                addr: server.local_addr(),
                cert: server.cert_der().clone(),
                stats: server.stats(),
                stop,
                _data: data,
            };
            tokio::spawn(server.serve(async move { token.cancelled().await }));
            harness
        }

        /// A player named `name`; `tag` keeps users of different tests apart.
        async fn player(&self, tag: &str, name: &str) -> Socket {
            let config = ClientConfig::new(
                self.addr,
                Trust::Certificates(vec![self.cert.clone()]),
                Credentials::Device {
                    id: format!("arena-{tag}-{name}-device"),
                },
            )
            .username(name);
            timeout(WAIT, Socket::connect(config))
                .await
                .expect("connect in time")
                .expect("connect")
        }

        /// The arena's listing entry, if it is listed.
        fn listing(&self, id: MatchId) -> Option<MatchListing> {
            let request = MatchListRequest {
                limit: 100,
                authoritative: Some(true),
                label: None,
                min_size: None,
                max_size: None,
                query: Some("+label.mode:arena".into()),
            };
            self.stats
                .runtime()
                .list_matches(&request)
                .expect("listing")
                .into_iter()
                .find(|m| m.match_id == id)
        }

        /// Polls the listing until `check` holds for the arena's entry (or its
        /// absence), bounded by [`WAIT`].
        async fn listing_until(
            &self,
            id: MatchId,
            what: &str,
            check: impl Fn(Option<&MatchListing>) -> bool,
        ) {
            let deadline = Instant::now() + WAIT;
            while !check(self.listing(id).as_ref()) {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for the listing: {what}; last {:?}",
                    self.listing(id)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Calls the `create_arena` RPC over the wire; its match id.
    async fn create_arena(socket: &Socket, payload: &str) -> MatchId {
        let out = socket
            .rpc("create_arena", payload)
            .await
            .expect("create_arena");
        let reply: serde_json::Value = serde_json::from_str(&out).expect("JSON reply");
        reply["match_id"]
            .as_str()
            .expect("match_id")
            .parse()
            .expect("a match id")
    }

    fn players_in_label(listing: Option<&MatchListing>) -> Option<u64> {
        let label: serde_json::Value =
            serde_json::from_str(listing?.label.as_deref()?).expect("label is JSON");
        assert_eq!(label["mode"], "arena");
        label["players"].as_u64()
    }

    /// The next event before `deadline`.
    async fn next(socket: &Socket, deadline: Instant, what: &str) -> Event {
        match timeout_at(deadline, socket.next_event()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("disconnected while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }

    /// Match data from the server with this op, checking how it travelled.
    fn server_data(event: &Event, id: MatchId, op: i64) -> Option<MatchData> {
        match event {
            Event::MatchData(d) if d.match_id == id && d.op_code == op => {
                assert!(d.from_server(), "op {op} comes from the server");
                assert_eq!(d.reliable, op == OP_SCORE, "op {op} delivery");
                Some(d.clone())
            }
            _ => None,
        }
    }

    fn snapshot(event: &Event, id: MatchId) -> Option<Snapshot> {
        let d = server_data(event, id, OP_STATE)?;
        assert!(d.data.len() <= 1024);
        Some(serde_json::from_slice(&d.data).expect("snapshot JSON"))
    }

    fn score(event: &Event, id: MatchId) -> Option<ScoreEvent> {
        let d = server_data(event, id, OP_SCORE)?;
        Some(serde_json::from_slice(&d.data).expect("score JSON"))
    }

    fn find<'a>(snap: &'a Snapshot, user: &str) -> Option<&'a PlayerState> {
        snap.players.iter().find(|p| p.user == user)
    }

    /// Waits for a snapshot on `socket` where `check` holds; returns it. When `input`
    /// is given, sends it (unreliably) again on every snapshot, so a lost datagram
    /// only delays it.
    async fn snapshot_until(
        socket: &Socket,
        id: MatchId,
        what: &str,
        input: Option<&'static str>,
        check: impl Fn(&Snapshot) -> bool,
    ) -> Snapshot {
        let deadline = Instant::now() + WAIT;
        loop {
            let event = next(socket, deadline, what).await;
            let Some(snap) = snapshot(&event, id) else {
                continue;
            };
            if check(&snap) {
                return snap;
            }
            if let Some(input) = input {
                socket
                    .send_match_data(id, OP_INPUT, input, false, None)
                    .await
                    .expect("send input");
            }
        }
    }

    async fn score_event(socket: &Socket, id: MatchId) -> ScoreEvent {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = score(&next(socket, deadline, "a score event").await, id) {
                return s;
            }
        }
    }

    fn rejected(err: &quicmatch_client::RequestError, reason: &str) {
        assert_eq!(err.code(), Some(ErrorCode::MATCH_JOIN_REJECTED), "{err}");
        assert!(err.to_string().contains(reason), "{err}");
    }

    #[test]
    fn inputs_parse_strictly() {
        assert_eq!(parse_input(b"1 0"), Some((1, 0)));
        assert_eq!(parse_input(b" -1\t1 \n"), Some((-1, 1)));
        assert_eq!(parse_input(b"0 0"), Some((0, 0)));
        for bad in [
            &b""[..],
            b"1",
            b"2 0",
            b"0 -2",
            b"1 0 0",
            b"a b",
            b"\xff\x01",
        ] {
            assert_eq!(parse_input(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn snapshot_of_eight_fits_a_datagram() {
        // Longest names, each escaping to twice its length, and the largest numbers.
        let players = (0..MAX_PLAYERS)
            .map(|_| PlayerState {
                user: short_name(&"\"".repeat(200)),
                x: FIELD_MAX,
                y: FIELD_MAX,
                score: u32::MAX,
            })
            .collect();
        let snap = Snapshot {
            tick: u64::MAX,
            coin: [FIELD_MAX, FIELD_MAX],
            players,
        };
        let bytes = serde_json::to_vec(&snap).expect("encode");
        assert!(bytes.len() <= 1024, "{} bytes", bytes.len());
        assert_eq!(short_name("ééééééééééé").len(), 16);
        assert_eq!(short_name("aéééééééééé").len(), 15);
    }

    #[test]
    fn params_are_checked() {
        assert_eq!(
            ArenaParams::parse(&Params::Null).expect("null").empty_secs,
            EMPTY_SECS
        );
        assert_eq!(
            ArenaParams::parse(&json!({"empty_secs": 1}))
                .expect("1")
                .empty_secs,
            1
        );
        for bad in [
            json!({"empty_secs": 0}),
            json!({"empty_secs": 3601}),
            json!({"empty_secs": "1"}),
            json!({"speed": 2}),
            json!([1]),
        ] {
            assert!(ArenaParams::parse(&bad).is_err(), "{bad}");
        }
    }

    /// Two players join an arena from the RPC; alice steers east reliably, then south
    /// by datagram, and both see it in the snapshots; the listing counts 2 players.
    #[tokio::test]
    async fn players_move_and_everyone_sees_snapshots() {
        let h = Harness::start();
        let alice = h.player("move", "alice").await;
        let bob = h.player("move", "bob").await;
        let id = create_arena(&alice, "{}").await;
        assert_eq!(alice.join_match(id).await.expect("alice joins").size, 1);
        assert_eq!(bob.join_match(id).await.expect("bob joins").size, 2);
        // What a lobby sees through the SDK's listing (the label is set by the join
        // callback, just after the join reply, so poll briefly).
        let deadline = Instant::now() + WAIT;
        loop {
            let listed = bob
                .list_matches()
                .authoritative(true)
                .query("+label.mode:arena")
                .limit(100)
                .await
                .expect("list_matches");
            let entry = listed.iter().find(|m| m.match_id == id);
            if players_in_label(entry) == Some(2) {
                let entry = entry.expect("listed");
                assert_eq!((entry.size, entry.max_size), (2, 8));
                assert_eq!(entry.handler, ARENA);
                break;
            }
            assert!(Instant::now() < deadline, "label never said 2: {listed:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let both = |s: &Snapshot| find(s, "alice").is_some() && find(s, "bob").is_some();
        let first = snapshot_until(&alice, id, "both players", None, both).await;
        let a0 = find(&first, "alice").expect("alice").clone();
        let b0 = find(&first, "bob").expect("bob").clone();

        alice
            .send_match_data(id, OP_INPUT, "1 0", true, None)
            .await
            .expect("reliable input");
        let east = snapshot_until(&alice, id, "alice moving east", None, |s| {
            find(s, "alice").is_some_and(|a| a.x >= a0.x + 3)
        })
        .await;
        assert_eq!(find(&east, "alice").expect("alice").y, a0.y, "east only");

        let south = snapshot_until(&alice, id, "alice moving south", Some("0 1"), |s| {
            find(s, "alice").is_some_and(|a| a.y >= a0.y + 3)
        })
        .await;
        let turned_at = find(&south, "alice").expect("alice").clone();
        snapshot_until(&alice, id, "alice still moving south only", None, |s| {
            find(s, "alice").is_some_and(|a| a.y > turned_at.y && a.x == turned_at.x)
        })
        .await;

        let seen = snapshot_until(&bob, id, "bob seeing alice move", None, |s| {
            find(s, "alice").is_some_and(|a| a.x >= a0.x + 3 && a.y >= a0.y + 3)
        })
        .await;
        let bob_now = find(&seen, "bob").expect("bob");
        assert_eq!((bob_now.x, bob_now.y), (b0.x, b0.y), "bob did not move");
        assert!(seen.tick > first.tick);
    }

    /// Eight players fill the arena; the ninth is refused until someone leaves.
    #[tokio::test]
    async fn the_ninth_player_is_refused() {
        let h = Harness::start();
        let mut players = Vec::new();
        for n in 0..=MAX_PLAYERS {
            players.push(h.player("full", &format!("player{n}")).await);
        }
        let id = create_arena(&players[0], "").await;
        for (n, p) in players[..MAX_PLAYERS].iter().enumerate() {
            assert_eq!(p.join_match(id).await.expect("joins").size as usize, n + 1);
        }
        let ninth = &players[MAX_PLAYERS];
        let err = ninth.join_match(id).await.expect_err("ninth refused");
        rejected(&err, "arena is full");
        h.listing_until(id, "players 8", |l| players_in_label(l) == Some(8))
            .await;

        players[0].leave_match(id).await.expect("leave");
        assert_eq!(ninth.join_match(id).await.expect("room again").size, 8);
        let snap = snapshot_until(ninth, id, "a full snapshot", None, |s| {
            s.players.len() == MAX_PLAYERS
        })
        .await;
        assert!(find(&snap, "player0").is_none());
        assert!(find(&snap, "player8").is_some());
    }

    /// Alice walks to the coin; both players get the reliable score event, and the
    /// snapshots show her point and the new coin.
    #[tokio::test]
    async fn taking_the_coin_scores_for_everyone_to_see() {
        let h = Harness::start();
        let alice = h.player("coin", "alice").await;
        let bob = h.player("coin", "bob").await;
        let id = create_arena(&alice, "{}").await;
        alice.join_match(id).await.expect("alice joins");
        bob.join_match(id).await.expect("bob joins");

        let deadline = Instant::now() + WAIT;
        let mut heading = (0, 0);
        let scored = loop {
            let event = next(&alice, deadline, "alice reaching the coin").await;
            if let Some(s) = score(&event, id) {
                break s;
            }
            let Some(snap) = snapshot(&event, id) else {
                continue;
            };
            let Some(me) = find(&snap, "alice") else {
                continue;
            };
            let want = (
                (snap.coin[0] - me.x).signum(),
                (snap.coin[1] - me.y).signum(),
            );
            if want != heading {
                heading = want;
                let input = format!("{} {}", want.0, want.1);
                alice
                    .send_match_data(id, OP_INPUT, input, true, None)
                    .await
                    .expect("steer");
            }
        };
        assert_eq!((scored.user.as_str(), scored.score), ("alice", 1));
        assert_eq!(score_event(&bob, id).await, scored);

        let after = snapshot_until(&bob, id, "the new score", None, |s| {
            find(s, "alice").is_some_and(|a| a.score == 1)
        })
        .await;
        assert_eq!(
            after.coin, scored.coin,
            "the coin moved where the event said"
        );
        assert_eq!(find(&after, "bob").expect("bob").score, 0);
    }

    /// The matchmaker's pair lands in a fresh arena that admits exactly them.
    #[tokio::test]
    async fn matchmaker_groups_get_a_private_arena() {
        let h = Harness::start();
        let alice = h.player("mm", "alice").await;
        let bob = h.player("mm", "bob").await;
        let carol = h.player("mm", "carol").await;
        for p in [&alice, &bob] {
            p.add_matchmaker("*", 2, 2).await.expect("ticket");
        }
        assert_eq!(
            h.stats
                .matchmaker_handle()
                .process(std::time::Instant::now()),
            1
        );
        let mut ids = Vec::new();
        for p in [&alice, &bob] {
            let deadline = Instant::now() + WAIT;
            let matched = loop {
                if let Event::MatchmakerMatched(m) = next(p, deadline, "matched").await {
                    break m;
                }
            };
            assert!(matched.token.is_none());
            ids.push(matched.match_id.expect("an arena"));
        }
        assert_eq!(ids[0], ids[1]);
        let id = ids[0];
        assert_eq!(alice.join_match(id).await.expect("alice joins").size, 1);
        assert_eq!(bob.join_match(id).await.expect("bob joins").size, 2);
        rejected(
            &carol.join_match(id).await.expect_err("carol refused"),
            "not invited",
        );
        let listing = h.listing(id).expect("listed");
        assert_eq!(listing.handler, ARENA);
        assert_eq!(listing.tick_rate, TICK_RATE);
    }

    /// With `empty_secs: 1` the arena outlives its last player by about a second.
    #[tokio::test]
    async fn an_empty_arena_ends() {
        let h = Harness::start();
        let alice = h.player("empty", "alice").await;
        for bad in [r#"{"empty_secs": 0}"#, "[1]", "not json"] {
            let err = alice
                .rpc("create_arena", bad)
                .await
                .expect_err("bad parameters");
            assert_eq!(
                err.code(),
                Some(ErrorCode::RUNTIME_FUNCTION_EXCEPTION),
                "{bad}: {err}"
            );
        }
        let id = create_arena(&alice, r#"{"empty_secs": 1}"#).await;
        alice.join_match(id).await.expect("join");
        h.listing_until(id, "players 1", |l| players_in_label(l) == Some(1))
            .await;
        alice.leave_match(id).await.expect("leave");
        let left = Instant::now();
        h.listing_until(id, "players 0", |l| {
            l.is_none() || players_in_label(l) == Some(0)
        })
        .await;
        h.listing_until(id, "gone", |l| l.is_none()).await;
        assert!(
            left.elapsed() >= Duration::from_millis(900),
            "ended {:?} after the leave",
            left.elapsed()
        );
        assert_eq!(h.stats.authoritative_matches(), 0);
        let err = alice.join_match(id).await.expect_err("ended");
        assert_eq!(err.code(), Some(ErrorCode::MATCH_NOT_FOUND), "{err}");
    }
}
