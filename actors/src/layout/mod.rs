//! Placement by partitions: the token space is cut into Q = 2^bits equal
//! partitions ([`partition`]), and a [`Layout`] version maps each partition
//! to the N nodes that replicate it ([`assign`]: deterministic, balanced by
//! capacity weight, moving as little as possible from one version to the
//! next). Pure: no I/O, no clocks.

pub mod assign;
pub mod history;
#[allow(clippy::module_inception)]
pub mod layout;
pub mod partition;
pub mod record;

pub use assign::Member;
pub use layout::Layout;
pub use partition::{PartitionId, DEFAULT_PARTITION_BITS};
