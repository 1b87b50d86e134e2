//! Services (`ContainerService`) on this node: [`inputs`] picks what this node programs
//! from the API objects, [`plan`] turns services and their endpoints
//! into the nftables objects that implement them (pure), [`render`] writes them as nft script
//! (pure), [`mesh`] how connections cross nodes (pure), and `kernel::ServiceDataplane` and
//! `kernel::MeshDataplane` apply them (effects).

pub mod inputs;
pub mod mesh;
pub mod plan;
pub mod render;
