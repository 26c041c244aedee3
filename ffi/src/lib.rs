//! quicmatch-ffi: the C ABI of the quicmatch client, for game engines and languages
//! that are not Rust (C, C++, C# through `bindings/csharp`).
//!
//! The API polls: a game calls `qm_poll` once a frame and handles the events it
//! returns; nothing calls back into game code, and nothing blocks the game thread but
//! `qm_connect` and `qm_free`. Each client runs the Rust SDK on a tokio runtime with
//! one background thread of its own. Requests return an id at once and are answered
//! by an event carrying it. No Rust panic crosses into C: every entry point catches
//! them and returns an error value instead.
//!
//! `include/quicmatch.h` is generated from this crate by cbindgen (run as a tool, see
//! `cbindgen.toml`) and is the reference for C programmers; a test checks that it
//! matches the code.
//!
//! # Layout
//! - `types`: the `#[repr(C)]` event, presence, user and listing structs, and every
//!   constant of the header.
//! - `api`: connect, poll, send, close, free.
//! - `requests`: match, matchmaker, listing and RPC requests.
//! - `party`: party requests.
//! - `client`: the runtime, the SDK socket and the pump task behind a `qm_client`.
//! - `item`: SDK events and request outcomes as owned, flat records.
//! - `view`: those records laid out as a `qm_event` whose pointers the client owns.
//! - `args`: reading C arguments, writing error messages, the panic guard.

// The entry points, in the order the header lists them: match requests before party
// ones.
mod api;
mod requests;

mod party;

mod args;
mod client;
mod item;
mod types;
mod view;

pub use api::*;
pub use party::*;
pub use requests::*;
pub use types::*;
