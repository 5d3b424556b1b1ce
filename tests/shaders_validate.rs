//! Every registry shader parses and validates with naga, from exactly the source string the
//! pipelines receive. Needs no GPU.

use cdl::ops::OPS;

#[test]
fn every_registry_shader_validates() {
    for op in OPS {
        let module = naga::front::wgsl::parse_str(op.source)
            .unwrap_or_else(|e| panic!("{}.wgsl does not parse:\n{}", op.name, e.emit_to_string(op.source)));
        let info =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{}.wgsl does not validate:\n{}", op.name, e.emit_to_string(op.source)));
        let _ = info;
        for entry in op.entries {
            let found = module.entry_points.iter().any(|ep| ep.name == entry.name);
            // matmul's input-gradient entries reuse the forward kernels; every other registry
            // entry must be a shader entry point of the same name.
            assert!(found, "{}.wgsl has no entry point {}", op.name, entry.name);
        }
    }
}

#[test]
fn registry_names_are_unique_and_match_files() {
    let mut names: Vec<&str> = OPS.iter().map(|o| o.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), OPS.len(), "duplicate op names");
    for op in OPS {
        let path = format!("{}/shaders/{}.wgsl", env!("CARGO_MANIFEST_DIR"), op.name);
        assert!(std::path::Path::new(&path).exists(), "registry op {} has no {path}", op.name);
    }
}
