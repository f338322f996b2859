//! afl harness of the `notify` target: see fuzz/targets.rs for its properties.
#[path = "../../targets.rs"]
mod targets;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        targets::notify(data);
    });
}
