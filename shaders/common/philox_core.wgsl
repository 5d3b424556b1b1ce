// Counter-based random numbers, shared by the shaders that draw them (philox, rows):
// Philox4x32-10 and an integer-only Box-Muller, bit-identical to reference/philox.rs on every
// target (see shaders/philox.wgsl and the reference for the derivation). Functions and tables
// only: no bindings.

const M0: u32 = 0xD2511F53u;
const M1: u32 = 0xCD9E8D57u;
const W0: u32 = 0x9E3779B9u;
const W1: u32 = 0xBB67AE85u;
const LN2_Q26: u32 = 46516320u;
const PI4_Q32: u32 = 3373259426u;
const INV_K_Q32: u32 = 2608131496u;

var<private> LN1P_Q26: array<u32, 30> = array<u32, 30>(
    27210303u, 14974910u, 7904286u, 4068450u, 2065051u, 1040468u, 522251u, 261633u, 130944u,
    65504u, 32760u, 16382u, 8192u, 4096u, 2048u, 1024u, 512u, 256u, 128u, 64u, 32u, 16u, 8u, 4u,
    2u, 1u, 0u, 0u, 0u, 0u);
var<private> ATAN_Q29: array<i32, 24> = array<i32, 24>(
    421657428, 248918915, 131521918, 66762579, 33510843, 16771758, 8387925, 4194219, 2097141,
    1048575, 524288, 262144, 131072, 65536, 32768, 16384, 8192, 4096, 2048, 1024, 512, 256, 128,
    64);

// High 32 bits of the 64-bit product a * b, from 16-bit halves (WGSL has no 64-bit integers).
fn mulhi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xFFFFu;
    let a1 = a >> 16u;
    let b0 = b & 0xFFFFu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xFFFFu) + (p10 & 0xFFFFu);
    return p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}

fn philox4x32_10(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = ctr;
    var k = key;
    for (var r = 0u; r < 10u; r = r + 1u) {
        let hi0 = mulhi(M0, c.x);
        let lo0 = M0 * c.x;
        let hi1 = mulhi(M1, c.z);
        let lo1 = M1 * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k = k + vec2<u32>(W0, W1);
    }
    return c;
}

// -2 ln(u) in Q6.26 for u = (a | 1) / 2^32.
fn neg2ln_q26(a: u32) -> u32 {
    let v = a | 1u;
    let lz = countLeadingZeros(v);
    let e = 31u - lz;
    var m = (v << lz) >> 1u;
    var acc = 0u;
    for (var i = 0u; i < 30u; i = i + 1u) {
        let t = m + (m >> (i + 1u));
        if (t <= 0x80000000u) {
            m = t;
            acc = acc + LN1P_Q26[i];
        }
    }
    return 2u * (31u - e) * LN2_Q26 + 2u * acc;
}

// floor(sqrt(l * 2^16)), digit by digit: 16 bit pairs of l, then 8 pairs of zeros.
fn sqrt_q21(l: u32) -> u32 {
    var rem = 0u;
    var res = 0u;
    for (var i = 0u; i < 24u; i = i + 1u) {
        var pair = 0u;
        if (i < 16u) { pair = (l >> (30u - 2u * i)) & 3u; }
        rem = (rem << 2u) | pair;
        let trial = (res << 2u) | 1u;
        if (rem >= trial) {
            rem = rem - trial;
            res = (res << 1u) | 1u;
        } else {
            res = res << 1u;
        }
    }
    return res;
}

// r * (cos t, sin t) in Q.27, t = 2 pi b / 2^32, r in Q3.21.
fn cordic_q27(r_q21: u32, b: u32) -> vec2<i32> {
    let f = b & 0x3FFFFFFFu;
    var phi = i32(mulhi(f, PI4_Q32));
    var x = i32(mulhi(r_q21 << 6u, INV_K_Q32));
    var y = 0;
    for (var i = 0u; i < 24u; i = i + 1u) {
        let dx = y >> i;
        let dy = x >> i;
        if (phi >= 0) {
            x = x - dx;
            y = y + dy;
            phi = phi - ATAN_Q29[i];
        } else {
            x = x + dx;
            y = y - dy;
            phi = phi + ATAN_Q29[i];
        }
    }
    switch (b >> 30u) {
        case 0u: { return vec2<i32>(x, y); }
        case 1u: { return vec2<i32>(-y, x); }
        case 2u: { return vec2<i32>(-x, -y); }
        default: { return vec2<i32>(y, -x); }
    }
}

fn q27_to_f32(v: i32) -> f32 {
    return f32((v + 64) >> 7u) * (1.0 / 1048576.0);
}

fn box_muller(a: u32, b: u32) -> vec2<f32> {
    let cs = cordic_q27(sqrt_q21(neg2ln_q26(a)), b);
    return vec2<f32>(q27_to_f32(cs.x), q27_to_f32(cs.y));
}

fn uniform01(x: u32) -> f32 {
    return f32((x >> 9u) * 2u + 1u) * (1.0 / 16777216.0);
}
