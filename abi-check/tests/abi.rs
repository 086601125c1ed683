//! ctest2's generated check (see build.rs): for every ABI function, the C
#![allow(warnings)]
//! header's declaration has the Rust signature and resolves to the same
//! symbol; for every struct, size, alignment, field offsets and field types
//! agree between C and Rust.

#![allow(bad_style, clippy::all, unused)]

use libc::*;

include!(concat!(env!("OUT_DIR"), "/decls.rs"));

/// The declarations ctest2 checked are derived from the library's source;
/// this also pins them to the library's actual types.
fn same_layout_as_library() {
    use std::mem::{align_of, size_of};
    assert_eq!(size_of::<Stats>(), size_of::<om_constants::Stats>());
    assert_eq!(align_of::<Stats>(), align_of::<om_constants::Stats>());
    assert_eq!(
        size_of::<StrategyStats>(),
        size_of::<om_constants::StrategyStats>()
    );
    println!("layout of Stats matches om_constants::Stats");
}

mod generated {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/abi_all.rs"));
    pub fn run() {
        main()
    }
}

fn main() {
    same_layout_as_library();
    generated::run();
}
