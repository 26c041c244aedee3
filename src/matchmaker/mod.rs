//! The matchmaker: tickets, the query language, grouping, signed match tokens.
pub mod query;
