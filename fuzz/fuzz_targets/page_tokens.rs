//! Any text as a page or resume token: reading it never panics, and a token that is accepted
//! names a time inside the bounds a listing may start from.
#![no_main]

use herald_store::token::{self, FAILURES, INBOX, MAX_AHEAD_MS};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let scope = token::scope(&["acme", "ana", "all", ""]);
    for tag in [INBOX, FAILURES] {
        if let Ok((ms, _id)) = token::decode(tag, &scope, &text, NOW) {
            assert!((0..=NOW + MAX_AHEAD_MS).contains(&ms), "{ms}");
        }
    }
    if let Some((ms, _cursor)) = herald_query::watch::decode_token("acme", "ana", &text, NOW) {
        assert!((0..=NOW + MAX_AHEAD_MS).contains(&ms), "{ms}");
    }
    // Tokens we issue read back as issued.
    if data.len() >= 8 {
        let ms = i64::from_le_bytes(data[..8].try_into().unwrap_or_default()).rem_euclid(NOW);
        let id = String::from_utf8_lossy(&data[8..]);
        let t = token::encode(INBOX, &scope, ms, &id);
        if t.len() <= token::MAX_TOKEN_LEN {
            assert_eq!(
                token::decode(INBOX, &scope, &t, NOW).ok(),
                Some((ms, id.into_owned()))
            );
        }
    }
});
