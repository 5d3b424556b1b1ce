// Workgroup tree reductions over the WG invocations of a workgroup (WG: the including shader's
// workgroup size, a power of two declared by its launcher), prepended by the registry to the
// shaders that use them (reduce, embedding, softmax, loss). Each returns the result in every
// invocation; the trailing barrier lets the caller reduce again without racing reads of
// partial[0]. Callers must reach them in uniform control flow with workgroup_size(WG).

var<workgroup> partial: array<f32, WG>;

fn tree_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { partial[lid] = partial[lid] + partial[lid + s]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

fn tree_max(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { partial[lid] = max(partial[lid], partial[lid + s]); }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
