//! weft-dns: names of Weft endpoints, answered to the sandboxes that share a network with them.
//!
//! `model` holds the fed data and its index, `answer` decides each reply (pure), `feed` is the
//! agent's side of the seam and `store` the server's, `server` owns the sockets (`batch` their datagrams), `forward`
//! the path to upstream resolvers, `upstream` the node's resolv.conf, `netns` the sockets
//! inside sandboxes.

pub mod answer;
pub mod batch;
pub mod feed;
pub mod forward;
pub mod model;
pub mod netns;
pub mod server;
pub mod services;
pub mod store;
pub mod upstream;
