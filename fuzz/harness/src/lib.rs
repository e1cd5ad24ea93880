//! The fuzz harnesses of ringkv: everything that parses network input, fed
//! arbitrary bytes and structure-aware inputs, with the checks each input
//! must pass (see docs/RELIABILITY.md).
//!
//! * [`peer`]: frames and peer requests, through the node's real dispatcher
//!   over a real store.
//! * [`http`]: what HTTP clients send (keys, levels, conditional headers).

pub mod http;
pub mod peer;
