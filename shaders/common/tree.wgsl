// Workgroup tree reductions over 256 invocations, prepended by the registry to the shaders that
// use them (reduce, embedding, softmax). Each returns the result in every invocation; the
// trailing barrier lets the caller reduce again without racing reads of partial[0]. Callers
// must reach them in uniform control flow with workgroup_size(256).

const TREE_WG: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

fn tree_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = TREE_WG / 2u; s > 0u; s = s / 2u) {
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
    for (var s = TREE_WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { partial[lid] = max(partial[lid], partial[lid + s]); }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
