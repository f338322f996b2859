//! afl harness of the `client_reply` target: see fuzz/targets.rs for its properties.
#[path = "../../targets.rs"]
mod targets;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        targets::client_reply(data);
    });
}
