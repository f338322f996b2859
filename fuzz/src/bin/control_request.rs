//! afl harness of the `control_request` target: see fuzz/targets.rs for its properties.
#[path = "../../targets.rs"]
mod targets;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        targets::control_request(data);
    });
}
