//! Tests of the service-account key, the assertion, the token answer and the cache.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::Verifier;
use sha2::Sha256;

use super::*;

use crate::fcm::TEST_KEY_PEM;

fn key_json(private_key: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "kid-1",
        "private_key": private_key,
        "client_email": "herald@test-project.iam.gserviceaccount.com",
        "client_id": "1234",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
}

fn account() -> ServiceAccount {
    let json = key_json(TEST_KEY_PEM).to_string();
    ServiceAccount::from_json(json.as_bytes()).expect("the test key")
}

#[test]
fn a_key_file_gives_its_fields_and_never_prints_the_key() {
    let account = account();
    assert_eq!(
        account.client_email,
        "herald@test-project.iam.gserviceaccount.com"
    );
    assert_eq!(account.private_key_id, "kid-1");
    assert_eq!(account.token_uri, "https://oauth2.googleapis.com/token");
    assert_eq!(account.project_id, "test-project");
    let printed = format!("{account:?}");
    assert!(!printed.contains("PRIVATE KEY"), "{printed}");
    assert!(!printed.contains(&TEST_KEY_PEM[40..80]), "{printed}");
}

#[test]
fn a_bad_key_file_says_what_is_wrong_without_printing_the_key() {
    let broken_key = TEST_KEY_PEM.replacen("MII", "MIA", 1);
    let cut_key = format!(
        "{}\n-----END PRIVATE KEY-----\n",
        &TEST_KEY_PEM[..TEST_KEY_PEM.len() / 2]
    );
    let mut no_email = key_json(TEST_KEY_PEM);
    no_email["client_email"] = serde_json::Value::Null;
    let mut empty_id = key_json(TEST_KEY_PEM);
    empty_id["private_key_id"] = "".into();
    let mut user_key = key_json(TEST_KEY_PEM);
    user_key["type"] = "authorized_user".into();
    let mut odd_project = key_json(TEST_KEY_PEM);
    odd_project["project_id"] = "a/b".into();
    let cases = [
        ("{not json".to_owned(), "not a JSON key file"),
        (key_json("hello").to_string(), "not an RSA private key"),
        (key_json(&broken_key).to_string(), "private_key"),
        (key_json(&cut_key).to_string(), "private_key"),
        (no_email.to_string(), "client_email is missing"),
        (empty_id.to_string(), "private_key_id is missing or empty"),
        (user_key.to_string(), "authorized_user"),
        (odd_project.to_string(), "project_id"),
    ];
    for (json, expected) in cases {
        let error = ServiceAccount::from_json(json.as_bytes()).expect_err(expected);
        assert!(error.contains(expected), "{expected}: {error}");
        assert!(!error.contains(&TEST_KEY_PEM[40..80]), "{error}");
    }
}

#[test]
fn a_missing_key_file_is_a_setup_error_naming_it() {
    let error = ServiceAccount::load(Path::new("/nonexistent/fcm-key.json"))
        .expect_err("no file")
        .to_string();
    assert!(error.contains("/nonexistent/fcm-key.json"), "{error}");
}

fn decode(part: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(part).expect("base64url")
}

#[test]
fn the_assertion_is_an_rs256_jwt_with_these_claims_and_a_valid_signature() {
    let jwt = account()
        .assertion("https://oauth2.googleapis.com/token", 1_767_225_600)
        .expect("signs");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    assert_eq!(
        String::from_utf8(decode(parts[0])).expect("utf-8"),
        r#"{"typ":"JWT","alg":"RS256","kid":"kid-1"}"#
    );
    assert_eq!(
        String::from_utf8(decode(parts[1])).expect("utf-8"),
        r#"{"iss":"herald@test-project.iam.gserviceaccount.com","scope":"https://www.googleapis.com/auth/firebase.messaging","aud":"https://oauth2.googleapis.com/token","iat":1767225600,"exp":1767229200}"#
    );
    // Checked with the rsa crate, apart from the signing library.
    let public = rsa::RsaPrivateKey::from_pkcs8_pem(TEST_KEY_PEM)
        .expect("the test key")
        .to_public_key();
    let verifier = VerifyingKey::<Sha256>::new(public);
    let signature = Signature::try_from(decode(parts[2]).as_slice()).expect("a signature");
    let signed = format!("{}.{}", parts[0], parts[1]);
    assert!(verifier.verify(signed.as_bytes(), &signature).is_ok());
    assert!(verifier.verify(b"something else", &signature).is_err());
}

#[test]
fn the_token_request_is_a_form_with_the_grant_and_the_assertion() {
    assert_eq!(
        token_request_body("aaa.bbb.ccc"),
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=aaa.bbb.ccc"
    );
}

#[test]
fn the_token_answer_is_read_or_explained() {
    let granted = read_grant(
        200,
        br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
    )
    .expect("a token");
    assert_eq!(
        (granted.access_token.as_str(), granted.expires_in),
        ("ya29.x", 3599)
    );
    let refused = read_grant(
        400,
        br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
    )
    .expect_err("refused");
    assert_eq!(
        refused.to_string(),
        "FCM access token: the token endpoint answered 400 invalid_grant Invalid JWT \
         Signature.: check the service-account key (revoked, or a wrong file?)"
    );
    let down = read_grant(503, b"<html>").expect_err("down");
    assert_eq!(down.0, "the token endpoint answered 503");
    for odd in [
        &br#"{"access_token":"x","expires_in":1,"token_type":"MAC"}"#[..],
        br#"{"access_token":"","expires_in":1,"token_type":"Bearer"}"#,
        br#"{"access_token":"x","token_type":"Bearer"}"#,
        b"",
    ] {
        assert!(read_grant(200, odd).is_err());
    }
}

/// A clock the test sets, and a token endpoint that counts its calls.
struct Fixture {
    now: Arc<AtomicU64>,
    fetches: AtomicU32,
    cache: TokenCache,
}

impl Fixture {
    fn new() -> Fixture {
        let now = Arc::new(AtomicU64::new(1_000));
        let clock = Arc::clone(&now);
        Fixture {
            now,
            fetches: AtomicU32::new(0),
            cache: TokenCache::new(Arc::new(move || clock.load(Ordering::SeqCst))),
        }
    }

    fn set(&self, now: u64) {
        self.now.store(now, Ordering::SeqCst);
    }

    /// A token from the cache; a fetch gives `token-<n>` valid for an hour.
    async fn token(&self) -> Result<String, TokenError> {
        let token = self
            .cache
            .get(|_| async {
                // Give concurrent callers the chance to overtake.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Granted {
                    access_token: format!("token-{n}"),
                    expires_in: 3_600,
                    token_type: "Bearer".into(),
                })
            })
            .await?;
        Ok(token.secret().to_owned())
    }
}

#[tokio::test]
async fn a_token_is_reused_until_five_minutes_before_it_expires() {
    let f = Fixture::new();
    assert_eq!(f.token().await, Ok("token-1".into()));
    f.set(1_100);
    assert_eq!(f.token().await, Ok("token-1".into()));
    // Expires at 4,600: five minutes left is still enough, less is not.
    f.set(4_300);
    assert_eq!(f.token().await, Ok("token-1".into()));
    f.set(4_301);
    assert_eq!(f.token().await, Ok("token-2".into()));
    assert_eq!(f.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch() {
    let f = Fixture::new();
    let (a, b, c) = tokio::join!(f.token(), f.token(), f.token());
    assert_eq!(
        (a, b, c),
        (
            Ok("token-1".into()),
            Ok("token-1".into()),
            Ok("token-1".into())
        )
    );
    assert_eq!(f.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_forgotten_token_is_replaced_but_a_newer_one_stays() {
    let f = Fixture::new();
    let first = f
        .cache
        .get(|_| async {
            Ok(Granted {
                access_token: "old".into(),
                expires_in: 3_600,
                token_type: "Bearer".into(),
            })
        })
        .await
        .expect("a token");
    f.cache.forget(&first).await;
    assert_eq!(f.token().await, Ok("token-1".into()));
    // A second sender refused with the old token must not drop the new one.
    f.cache.forget(&first).await;
    assert_eq!(f.token().await, Ok("token-1".into()));
    assert_eq!(f.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_fetch_is_not_cached() {
    let f = Fixture::new();
    let failed = f
        .cache
        .get(|_| async { Err(TokenError("down".into())) })
        .await;
    assert_eq!(failed, Err(TokenError("down".into())));
    assert_eq!(f.token().await, Ok("token-1".into()));
}

#[test]
fn an_access_token_is_never_printed() {
    let token = AccessToken {
        value: "ya29.secret".into(),
        expires_at: 7,
    };
    assert_eq!(format!("{token:?}"), "AccessToken(…, expires at 7)");
}
