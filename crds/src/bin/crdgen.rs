//! Writes every Weft CRD to `crds/<plural>.yaml` (or to the directory given as argument).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for (file, crd) in weft_api::all_crds() {
        let path = dir.join(file);
        std::fs::write(&path, weft_api::render_crd_yaml(&crd)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
