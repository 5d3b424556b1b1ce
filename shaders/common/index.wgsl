// Shared helpers, prepended to every op shader by the registry (WGSL has no #include).

// The workgroup-uniform builtins every entry point takes, as
// `fn name(id: Grid, @builtin(local_invocation_index) lid: u32)`. lid stays a separate parameter:
// Tint's uniformity analysis treats a struct parameter as a whole, so a struct holding lid would
// make every value derived from the workgroup id non-uniform and refuse the barriers after them.
struct Grid {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

// Linear workgroup id of a grid folded by gpu::fold_workgroups (x fastest, then y, then z).
fn workgroup_linear(id: Grid) -> u32 {
    return (id.wid.z * id.nwg.y + id.wid.y) * id.nwg.x + id.wid.x;
}

// Linear invocation id of a grid of workgroups of `wg` invocations (the entry's workgroup size).
fn invocation_linear(id: Grid, lid: u32, wg: u32) -> u32 {
    return workgroup_linear(id) * wg + lid;
}
