//! Weft's nftables tables (`inet weft`, `bridge weft`), written as nft text through one
//! `nft -f -` run per pass (one atomic transaction) and read back with `nft -j`.
//!
//! Writing the difference. [`plan_update`](plan::plan_update) turns what the kernel holds
//! into what is desired with the fewest commands: new chains and rules are appended, rules
//! that must go are deleted by handle (order within a chain does not matter, see
//! `plan::rule_steps`). Only when a base chain's hook changed is the whole table replaced
//! (`add table` + `delete table` + the full table).
//! Why not always replace: a transaction that deletes anything makes the kernel flush its
//! deferred destruction (an RCU grace period) when `nft` closes its socket — ~15 ms per run
//! here against ~2.5 ms for a transaction that only adds. Every transaction is still
//! atomic, so no packet ever sees a half-written table. Every rule gets
//! ` comment "weft:<id>"` appended.
//!
//! The handles of the rules a run added come from the kernel's notifications of its
//! transaction ([`OwnNft`]), or, when no event reader runs, from
//! `nft --echo --handle`; so the handle keeps its cached listing exact without listing again.
//!
//! Reading back. Rebuilding a rule's text from nft's JSON is lossy, so observed rules carry
//! only their id (from the comment) and an empty body, and tables are compared by chain
//! names, base specs and rule ids ([`nft_tables_equivalent`]).
//! Consequence for the planner: a rule id must be a content hash of its body (a different
//! body = a different id), or a changed rule would never be rewritten. A rule without a
//! Weft comment (added by someone else) reads back with an id no planner produces, so it is
//! deleted by handle.
//!
//! Canonical base-chain spec (what [`base_chain`] writes and what
//! observing reconstructs): `type <type> hook <hook> priority <integer>; policy
//! <accept|drop>;` — numeric priority (nft's JSON reports numbers, not names like
//! `srcnat`), single spaces, trailing `;`.
//!
//! One file per part. Pure: `plan` (the update planner, table comparison, what a commit
//! leaves), `render` (script text) and `listing` (parsing what `nft` prints) — they import
//! nothing that runs. Effects: `own` (which transactions are the agent's), `exec` (the one
//! backend choice, and a pass's transaction), `program` (the `nft` child), `libnft` (the
//! in-process library) and `tables` (the handle's cached listing).

mod exec;
mod libnft;
mod listing;
mod own;
pub(crate) mod plan;
mod program;
mod render;
mod tables;

/// The `nft` child and the in-process library, for the services table
/// (`kernel/services.rs`), which has its own writer.
pub(crate) use libnft::{MAX_IN_PROCESS_SCRIPT, Session as NftSession};
pub(crate) use own::{AddedRules, OwnNft};
pub use plan::{base_chain, nft_tables_equivalent};
pub(crate) use program::available;
pub(crate) use program::run as run_program;
pub(crate) use tables::NftTables;
