//! Client connections under bounds: every connection is admitted against a
//! cap overall and per address, and every request head, body and response
//! on it, whatever its position on the connection, has a deadline.
//!
//! * [`deadlines`]: the pure state machine of one connection's deadlines
//! * [`table`]: the pure table of open connections (caps, eviction)
//! * [`guard`]: the node's table and each connection's shared state
//! * [`io`]: the socket wrapper that enforces the deadlines
//! * [`track`]: middleware telling a connection where its requests start
//!   and end
//! * [`serve`]: the server that puts them together
//!
//! Request bodies have their own deadlines and budget (`http/body.rs`).

pub mod deadlines;
pub mod guard;
pub mod io;
pub mod serve;
pub mod table;
pub mod track;
