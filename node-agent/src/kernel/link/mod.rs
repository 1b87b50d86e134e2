//! Links: reading them back into [`Link`](crate::model::Link)s and creating, changing and deleting them.
//!
//! The kernel ignores `IFLA_IFALIAS` on creation, so a creation is up to three writes: the
//! `RTM_NEWLINK` with the kind-specific attributes, an `RTM_SETLINK` with the alias alone
//! (from then on the link is Weft's, so a failure later never leaves an unowned orphan),
//! and one with master, up and a bridge's MTU.
//!
//! `view` reads a dump back (pure); `handle` adds the link methods to [`Kernel`](crate::kernel::Kernel).

mod handle;
mod view;

pub(crate) use handle::{ipvlan_mode, macvlan_mode};
pub(crate) use view::{LinkView, RawLink, owned_index, route_link_index};
