//! Any bytes as a record value of every topic: decoding never panics and never allocates past
//! its limit; whatever decodes encodes again to a value that decodes to the same event.
#![no_main]

use herald_schemas::codec::{Event, decode, encode};
use herald_schemas::{
    DeadLetter, DeliveryResult, Dispatch, Engagement, NotificationAdmitted, NotificationEnriched,
    NotificationRequested,
};
use libfuzzer_sys::fuzz_target;

fn check<E: Event + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(event) = decode::<E>(data) {
        let bytes = encode(&event).expect("a decoded event encodes");
        assert_eq!(decode::<E>(&bytes).expect("and decodes again"), event);
    }
}

/// Also as a value written with the right header: the fuzzer's bytes become the body of a
/// record that claims each type's own (or an older) schema, so decoding goes past the header.
fn framed<E: Event + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let mut value = herald_schemas::codec::MAGIC.to_vec();
    value.extend_from_slice(&E::schema().fingerprint);
    value.extend_from_slice(data);
    check::<E>(&value);
    for old in E::history() {
        let mut value = herald_schemas::codec::MAGIC.to_vec();
        value.extend_from_slice(&old.fingerprint);
        value.extend_from_slice(data);
        let _ = decode::<E>(&value);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<NotificationRequested>(data);
    framed::<NotificationRequested>(data);
    framed::<NotificationEnriched>(data);
    framed::<NotificationAdmitted>(data);
    framed::<Dispatch>(data);
    framed::<DeliveryResult>(data);
    framed::<Engagement>(data);
    framed::<DeadLetter>(data);
});
