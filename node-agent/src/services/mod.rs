//! Services (`ContainerService`) on this node: [`inputs`] picks what this node programs
//! from the API objects, [`plan`] turns services and their endpoints
//! into the nftables objects that implement them (pure), [`render`] writes them as nft script
//! (pure), and `kernel::ServiceDataplane` applies them (effects).

pub mod inputs;
pub mod plan;
pub mod render;
