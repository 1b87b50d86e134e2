//! Services (`ContainerService`) on this node: [`plan`] turns services and their endpoints
//! into the nftables objects that implement them (pure), [`render`] writes them as nft script
//! (pure), and `kernel::ServiceDataplane` applies them (effects).

pub mod plan;
pub mod render;
