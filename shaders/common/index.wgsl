// Shared helpers, prepended to every op shader by the registry (WGSL has no #include).

// The builtins every entry point takes, as `fn name(id: Ids)`.
struct Ids {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

// Linear workgroup id of a grid folded by gpu::fold_workgroups (x fastest, then y, then z).
fn workgroup_linear(id: Ids) -> u32 {
    return (id.wid.z * id.nwg.y + id.wid.y) * id.nwg.x + id.wid.x;
}

// Linear invocation id of a grid of workgroups of `wg` invocations (the entry's workgroup size).
fn invocation_linear(id: Ids, wg: u32) -> u32 {
    return workgroup_linear(id) * wg + id.lid;
}
