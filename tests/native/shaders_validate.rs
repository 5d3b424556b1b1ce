//! Every registry shader parses and validates with naga, from exactly the source string the
//! pipelines receive; every registry entry specialises with the pipeline constants it is created
//! with; and every uniform struct the launchers declare in Rust has, in the WGSL they generate,
//! the layout naga gives it. Needs no GPU.

use cdl::ops::{OpSpec, OPS};

fn parse(op: &OpSpec) -> naga::Module {
    naga::front::wgsl::parse_str(op.shader.source)
        .unwrap_or_else(|e| panic!("{}.wgsl does not parse:\n{}", op.name, e.emit_to_string(op.shader.source)))
}

fn validate(op: &OpSpec, module: &naga::Module) -> naga::valid::ModuleInfo {
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
        .validate(module)
        .unwrap_or_else(|e| panic!("{}.wgsl does not validate:\n{}", op.name, e.emit_to_string(op.shader.source)))
}

#[test]
fn every_registry_shader_validates() {
    for op in OPS {
        let module = parse(op);
        validate(op, &module);
        for entry in op.entries {
            // A registry entry is a WGSL entry point, or a variant naming one (matmul's layouts).
            let (entry_point, _) = op.pipeline(entry.name);
            let found = module.entry_points.iter().any(|ep| ep.name == entry_point);
            assert!(found, "{}.wgsl has no entry point {entry_point} (registry entry {})", op.name, entry.name);
        }
    }
}

/// Pipeline creation replaces the overrides with the registry's values (naga does this for the
/// native backends, so it is compiled in natively only); a missing, misspelt or out-of-range
/// value, or a module invalid once specialised, fails here as it would at pipeline creation.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn every_registry_entry_specialises_with_its_pipeline_constants() {
    for op in OPS {
        let module = parse(op);
        let info = validate(op, &module);
        for entry in op.entries {
            let (entry_point, constants) = op.pipeline(entry.name);
            let values = constants.iter().map(|&(k, v)| (k.to_string(), v)).collect();
            let stage = Some((naga::ShaderStage::Compute, entry_point));
            naga::back::pipeline_constants::process_overrides(&module, &info, stage, &values)
                .unwrap_or_else(|e| panic!("{}::{} with {constants:?}: {e}", op.name, entry.name));
        }
    }
}

#[test]
fn uniform_structs_have_their_rust_layout_in_wgsl() {
    for op in OPS {
        assert!(!op.shader.uniforms.is_empty(), "{} declares no uniform struct", op.name);
        let module = parse(op);
        // Every uniform the shader binds is one the launcher declares.
        for (_, var) in module.global_variables.iter() {
            if var.space == naga::AddressSpace::Uniform {
                let ty = module.types[var.ty].name.as_deref().unwrap_or("?");
                assert!(
                    op.shader.uniforms.iter().any(|u| u.name == ty),
                    "{}: uniform of undeclared type {ty}",
                    op.name
                );
            }
        }
        for u in op.shader.uniforms {
            let ty = module
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some(u.name))
                .map(|(_, t)| t)
                .unwrap_or_else(|| panic!("{}.wgsl has no struct {}", op.name, u.name));
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("{}: {} is not a struct", op.name, u.name);
            };
            let wgsl: Vec<(&str, usize)> =
                members.iter().map(|m| (m.name.as_deref().unwrap_or("?"), m.offset as usize)).collect();
            assert_eq!(wgsl, u.fields, "{}: member offsets of {} (WGSL, Rust)", op.name, u.name);
            assert_eq!(*span as usize, u.size, "{}: size of {} (WGSL, Rust)", op.name, u.name);
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
