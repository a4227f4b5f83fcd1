//! `POST /graphql` bodies: the JSON request (one or a batch), the query document's parsing
//! and the schema's validation and limits (depth, complexity, recursion), then execution as a
//! read-only principal of a hub whose log is empty. A first byte of `{` or `[` sends the
//! input as the JSON body; otherwise the rest is the query document itself.
#![no_main]

use async_graphql::{BatchRequest, Request};
use crier_core::Role;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = crier_fuzz::fixture();
    let batch = match data.first() {
        Some(b'{' | b'[') => match serde_json::from_slice::<BatchRequest>(data) {
            Ok(b) => b,
            Err(_) => return,
        },
        Some(_) => match std::str::from_utf8(&data[1..]) {
            Ok(q) => BatchRequest::Single(Request::new(q)),
            Err(_) => return,
        },
        None => return,
    };
    let principal = crier_fuzz::principal(Role::Subscriber, true);
    let schema = f.state.graphql.clone();
    let res =
        f.rt.block_on(schema.execute_batch(batch.data(principal).data(f.state.clone())));
    // The answer serialises, as the hub sends it.
    if let Err(e) = serde_json::to_vec(&res) {
        panic!("a GraphQL answer does not serialise: {e}");
    }
});
