// Shared helpers, prepended to every op shader by the registry (WGSL has no #include).

// Linear workgroup id of a grid folded by gpu::fold_workgroups (x fastest, then y, then z).
fn workgroup_linear(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.z * nwg.y + wid.y) * nwg.x + wid.x;
}
