//! Any bytes as the body of any write route of the HTTP API (or as its
//! `Shoal-Fence` header): the parsers
//! never panic; what they accept survives the model's checks or is refused
//! by them cleanly, encodes and decodes as the same event, and applies to a
//! State without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_model::{
    decode_event, encode_event, validate_op, Command, CommandId, Envelope, Event, EventIdx, Op,
    State, Term,
};

const VERBS: [&str; 7] = [
    "set-if-absent",
    "add",
    "remove",
    "push",
    "keepalive",
    "unlock",
    "nope",
];

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let key = || "fuzz-key".to_owned();
    let op = match route % 14 {
        0 => shoal_request::text(body, "value").map(|value| Op::KvSet { key: key(), value }),
        1 => shoal_request::cas(key(), body),
        2 => shoal_request::lock(key(), body),
        3 => shoal_request::task(body).map(|spec| Op::TaskSubmit { spec }),
        4 => shoal_request::deploy(body),
        13 => shoal_request::txn(body),
        12 => std::str::from_utf8(body)
            .map_err(|_| shoal_request::Invalid(String::new()))
            .and_then(|h| {
                let op = Op::KvSet {
                    key: key(),
                    value: String::new(),
                };
                shoal_request::fence(h, op)
            }),
        r => {
            let ttl = (r % 2 == 0).then_some(u64::from(route));
            match shoal_request::verb(key(), VERBS[usize::from(r - 5)], ttl, body) {
                Ok(Some(op)) => Ok(op),
                Ok(None) | Err(_) => return,
            }
        }
    };
    let Ok(op) = op else {
        return;
    };
    if validate_op(&op).is_err() {
        return;
    }
    let event = Event::Command {
        cmd: Command {
            id: CommandId::parse("fuzz").unwrap(),
            op,
        },
        at_ms: 1,
    };
    let decoded = decode_event(&encode_event(&event)).expect("an accepted command encodes");
    assert_eq!(decoded, event);
    let mut state = State::new();
    let env = Envelope {
        idx: EventIdx(1),
        term: Term(1),
        event,
    };
    state.apply(&env).expect("the next index applies");
});
