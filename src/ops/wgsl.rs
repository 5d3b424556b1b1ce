//! The WGSL a launcher generates from its Rust declarations, so each kernel parameter has one
//! definition: uniform structs (`uniform!`) and tuning constants (`constants!`), which `shader!`
//! prepends to the shader at compile time (with `concat_str!`).
//!
//! Uniform fields are 4-byte scalars, so WGSL's uniform layout is Rust's `repr(C)`;
//! tests/native/shaders_validate.rs checks every struct against naga's layout all the same.

/// A shader family's WGSL as its pipelines receive it, and what its launcher declares in it.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    /// The generated declarations, the shared helpers, then the shader file.
    pub source: &'static str,
    /// The uniform structs declared for the shader (in `source`).
    pub uniforms: &'static [Uniform],
    /// The values of the shader's pipeline-overridable constants, given to every pipeline.
    pub overrides: &'static [(&'static str, f64)],
}

/// A uniform struct as WGSL sees it, with its Rust layout.
#[derive(Clone, Copy, Debug)]
pub struct Uniform {
    pub name: &'static str,
    /// `struct Name { field: type, ... }`, prepended to the shader.
    pub wgsl: &'static str,
    /// `size_of` of the Rust struct.
    pub size: usize,
    /// Each field's name and `offset_of` in the Rust struct, in declaration order.
    pub fields: &'static [(&'static str, usize)],
}

/// The scalar types a uniform field may have: their names are the same in Rust and WGSL.
pub trait Scalar: bytemuck::Pod {}
impl Scalar for u32 {}
impl Scalar for i32 {}
impl Scalar for f32 {}

/// Compiles only for a `Scalar` type (the field check of `uniform!`).
pub const fn scalar<T: Scalar>() {}

/// Declares a uniform struct once for both languages: the `repr(C)` Pod struct the launcher
/// fills, and `Name::LAYOUT`, its WGSL declaration and Rust layout. Fields are u32, i32 or f32;
/// padding up to a multiple of 16 bytes is written out as `_pad` fields.
macro_rules! uniform {
    ($(#[$meta:meta])* struct $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ident,)* }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct $name {
            $($(#[$fmeta])* $field: $ty,)*
        }

        impl $name {
            const LAYOUT: $crate::ops::Uniform = $crate::ops::Uniform {
                name: stringify!($name),
                wgsl: concat!(
                    "struct ", stringify!($name), " {\n",
                    $("    ", stringify!($field), ": ", stringify!($ty), ",\n",)*
                    "}\n"
                ),
                size: ::core::mem::size_of::<$name>(),
                fields: &[$((stringify!($field), ::core::mem::offset_of!($name, $field)),)*],
            };
        }

        const _: () = { $($crate::ops::wgsl::scalar::<$ty>();)* };
    };
}
pub(crate) use uniform;

/// Declares a shader family's tuning constants once: Rust `usize` constants for the launcher,
/// `WGSL_CONSTANTS` declaring them as WGSL `u32`s, and `OVERRIDES` (both taken by `shader!`).
/// A `const` is declared to WGSL with its value, for what WGSL must know when it compiles
/// (function-scope array sizes); an `override` without, and `OVERRIDES` holds its value, which
/// every pipeline of the family is created with (and keyed by).
///
/// ```ignore
/// constants! {
///     /// Rows per workgroup.
///     const R = 16;
///     /// Invocations per workgroup.
///     override LANES = 64;
/// }
/// ```
macro_rules! constants {
    // Sorts the declarations into `const`s and `override`s, then emits both lists.
    (@sort [$($c:tt)*] [$($o:tt)*]) => {
        $crate::ops::wgsl::constants!(@emit [$($c)*] [$($o)*]);
    };
    (@sort [$($c:tt)*] [$($o:tt)*] $(#[$m:meta])* $vis:vis const $name:ident = $val:literal; $($rest:tt)*) => {
        $crate::ops::wgsl::constants!(@sort [$($c)* {[$(#[$m])*] [$vis] $name $val}] [$($o)*] $($rest)*);
    };
    (@sort [$($c:tt)*] [$($o:tt)*] $(#[$m:meta])* $vis:vis override $name:ident = $val:expr; $($rest:tt)*) => {
        $crate::ops::wgsl::constants!(@sort [$($c)*] [$($o)* {[$(#[$m])*] [$vis] $name $val}] $($rest)*);
    };
    (@emit [$({[$($cm:tt)*] [$cvis:vis] $cname:ident $cval:literal})*]
           [$({[$($om:tt)*] [$ovis:vis] $oname:ident $oval:expr})*]) => {
        $($($cm)* $cvis const $cname: usize = $cval;)*
        $($($om)* $ovis const $oname: usize = $oval;)*

        const WGSL_CONSTANTS: &str = concat!(
            $("const ", stringify!($cname), ": u32 = ", $cval, ";\n",)*
            $("override ", stringify!($oname), ": u32;\n",)*
        );

        const OVERRIDES: &[(&str, f64)] = &[$((stringify!($oname), $oname as f64),)*];
    };
    (@sort $($bad:tt)*) => {
        compile_error!("constants!: expected `const NAME = literal;` or `override NAME = expr;`");
    };
    ($($decl:tt)*) => {
        $crate::ops::wgsl::constants!(@sort [] [] $($decl)*);
    };
}
pub(crate) use constants;

/// Concatenates `&'static str` constants at compile time (`concat!` takes only literals).
macro_rules! concat_str {
    ($($part:expr),* $(,)?) => {{
        const PARTS: &[&str] = &[$($part),*];
        const BYTES: [u8; $crate::ops::wgsl::total_len(PARTS)] = $crate::ops::wgsl::concat_bytes(PARTS);
        match ::core::str::from_utf8(&BYTES) {
            Ok(s) => s,
            Err(_) => panic!("WGSL sources are UTF-8"),
        }
    }};
}
pub(crate) use concat_str;

/// The summed length of `parts`, in bytes.
pub const fn total_len(parts: &[&str]) -> usize {
    let (mut n, mut i) = (0, 0);
    while i < parts.len() {
        n += parts[i].len();
        i += 1;
    }
    n
}

/// The bytes of `parts`, one after the other (`N` is their `total_len`).
pub const fn concat_bytes<const N: usize>(parts: &[&str]) -> [u8; N] {
    let mut out = [0u8; N];
    let (mut i, mut k) = (0, 0);
    while i < parts.len() {
        let bytes = parts[i].as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            out[k] = bytes[j];
            j += 1;
            k += 1;
        }
        i += 1;
    }
    out
}
