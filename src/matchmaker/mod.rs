//! The matchmaker: tickets, the query language, grouping, signed match tokens.
//!
//! - [`query`]: parse and evaluate queries (pure).
//! - [`pool`]: the ticket pool and `process(now)` (pure, deterministic).
pub mod pool;
pub mod query;
