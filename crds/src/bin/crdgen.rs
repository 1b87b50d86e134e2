//! Writes every Weft CRD to `crds/<plural>.yaml` and the Helm chart's `charts/weft/crds/`
//! (or only to the directory given as argument).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dirs = match std::env::args_os().nth(1) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![crate_dir.clone(), crate_dir.join("../charts/weft/crds")],
    };
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for (file, crd) in weft_api::all_crds() {
            let path = dir.join(file);
            std::fs::write(&path, weft_api::render_crd_yaml(&crd)?)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
