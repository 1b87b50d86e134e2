//! The checked-in `crds/*.yaml` must be exactly what the Rust types generate.

#[test]
fn checked_in_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, crd) in weft_api::all_crds() {
        let expected = weft_api::render_crd_yaml(&crd).expect("render CRD");
        let actual = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            actual == expected,
            "crds/{file} is stale or hand-edited: run `cargo run -p weft-api --bin crdgen`"
        );
    }
}

#[test]
fn helm_chart_carries_the_same_crds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, _) in weft_api::all_crds() {
        let top = std::fs::read_to_string(dir.join(file)).expect("crds/ file");
        let chart =
            std::fs::read_to_string(dir.join("../charts/weft/crds").join(file)).unwrap_or_default();
        assert!(
            top == chart,
            "charts/weft/crds/{file} differs from crds/{file}: run `cargo run -p weft-api --bin crdgen`"
        );
    }
}

#[test]
fn every_crd_is_in_weft_dev_v1alpha1_and_only_endpoints_and_services_are_namespaced() {
    for (_, crd) in weft_api::all_crds() {
        assert_eq!(crd.spec.group, "weft.dev");
        // What a tenant makes in its namespace: its containers' attachments and services.
        let expected =
            if ["ContainerEndpoint", "ContainerService"].contains(&crd.spec.names.kind.as_str()) {
                "Namespaced"
            } else {
                "Cluster"
            };
        assert_eq!(crd.spec.scope, expected, "{}", crd.spec.names.kind);
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
    }
}
