// Workgroup tree reductions over the WG invocations of a workgroup (WG: the including shader's
// workgroup size, a power of two declared by its launcher), prepended by the registry to the
// shaders that use them (reduce, embedding, softmax, loss, groupnorm). Each returns the result in
// every invocation; the trailing barrier lets the caller reduce again without racing reads of
// partial[0]. Callers must reach them in uniform control flow with workgroup_size(WG).

var<workgroup> partial: array<vec2<f32>, WG>;

// Two sums at once (groupnorm's backward reduces two per pass).
fn tree_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
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

fn tree_sum(lid: u32, v: f32) -> f32 {
    return tree_sum2(lid, vec2<f32>(v, 0.0)).x;
}

fn tree_max(lid: u32, v: f32) -> f32 {
    partial[lid] = vec2<f32>(v, 0.0);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { partial[lid] = max(partial[lid], partial[lid + s]); }
        workgroupBarrier();
    }
    let total = partial[0].x;
    workgroupBarrier();
    return total;
}
