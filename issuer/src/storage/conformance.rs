//! The storage contract as tests. Every backend expands `suite!` with a constructor; each case becomes its
//! own `#[tokio::test]`, so a failure names the backend and the case.

use std::sync::Arc;

use super::{
    AuthCode, AuthRequest, Bucket, Client, DeviceRequest, DeviceStatus, Identity, Password, RefreshToken, Session,
    SessionClient, Storage, StorageError,
};
use crate::keys::{self, Algorithm};

/// Expands the conformance cases for one backend. `$make` is a closure returning a future of the store.
/// `suite!(ignore = "reason", $make)` marks every case ignored (a backend that needs an external server).
macro_rules! suite {
    (ignore = $reason:literal, $make:expr) => {
        $crate::storage::conformance::suite!(@cases [ignore = $reason] $make);
    };
    ($make:expr) => {
        // `cfg(all())` is always true: the no-op attribute for backends that always run.
        $crate::storage::conformance::suite!(@cases [cfg(all())] $make);
    };
    (@cases [$($attr:tt)*] $make:expr) => {
        $crate::storage::conformance::suite!(@each [$($attr)*] $make;
            auth_request_crud, auth_code_update_is_atomic_and_sees_the_latest_state, refresh_token_crud,
            rotation_has_exactly_one_winner, rotation_of_a_missing_token_is_not_found, family_deletion,
            keys_update_and_keep, secrets_are_created_once, buckets_update_and_delete,
            garbage_collection_removes_only_expired_records_in_batches, timestamps_round_trip_exactly,
            device_request_crud, device_approval_has_exactly_one_winner, device_request_codes_never_change,
            client_crud, client_update_is_atomic_and_keeps_the_id, password_crud_matches_emails_case_insensitively,
            refresh_tokens_are_listed_by_user, session_crud, session_update_is_atomic_and_keeps_the_id,
            session_records_round_trip_exactly, garbage_collection_removes_expired_sessions,
            revocations_are_listed_after_a_cursor_and_collected_by_age,
            a_reader_following_the_revocation_cursor_never_skips_a_concurrent_insert);
    };
    (@each $attr:tt $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #$attr
            async fn $case() {
                let make = $make;
                $crate::storage::conformance::$case(std::sync::Arc::new(make().await)).await;
            }
        )*
    };
}
pub(crate) use suite;

pub(crate) fn identity() -> Identity {
    Identity {
        user_id: "u1".into(),
        username: "jane".into(),
        email: "jane@example.com".into(),
        email_verified: true,
        groups: vec!["developers".into()],
        connector_id: "local".into(),
        preferred_username: String::new(),
        connector_data: None,
    }
}

pub(crate) fn refresh_token(id: &str, family: &str, expiry: i64) -> RefreshToken {
    RefreshToken {
        id: id.into(),
        family_id: family.into(),
        secret_hash: "h".into(),
        client_id: "c".into(),
        scopes: vec!["openid".into()],
        nonce: None,
        identity: identity(),
        auth_time: 1,
        created_at: 1,
        family_created_at: 1,
        expiry,
        rotated_at: None,
        successor: None,
        session_id: None,
    }
}

fn auth_request(id: &str, expiry: i64) -> AuthRequest {
    AuthRequest {
        id: id.into(),
        client_id: "c".into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        scopes: vec!["openid".into()],
        state: Some("s".into()),
        nonce: None,
        code_challenge: None,
        code_challenge_method: None,
        csrf_token: "x".into(),
        expiry,
        device: None,
        connector_id: None,
        response_types: vec!["code".into(), "id_token".into()],
    }
}

fn auth_code(id: &str, expiry: i64) -> AuthCode {
    AuthCode {
        id: id.into(),
        client_id: "c".into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        scopes: vec!["openid".into()],
        nonce: Some("n".into()),
        code_challenge: None,
        code_challenge_method: None,
        identity: identity(),
        auth_time: 5,
        expiry,
        redeemed_at: None,
        family_id: None,
        session_id: None,
    }
}

fn device_request(device_code: &str, user_code: &str, expiry: i64) -> DeviceRequest {
    DeviceRequest {
        device_code: device_code.into(),
        user_code: user_code.into(),
        client_id: "c".into(),
        scopes: vec!["openid".into(), "offline_access".into()],
        interval: 5,
        last_poll: None,
        status: DeviceStatus::Pending,
        expiry,
    }
}

pub(crate) async fn auth_request_crud<S: Storage>(s: Arc<S>) {
    let r = auth_request("r1", 100);
    s.create_auth_request(r.clone()).await.unwrap();
    assert!(matches!(s.create_auth_request(r.clone()).await, Err(StorageError::AlreadyExists)));
    assert_eq!(s.get_auth_request("r1").await.unwrap(), r);
    s.delete_auth_request("r1").await.unwrap();
    assert!(matches!(s.get_auth_request("r1").await, Err(StorageError::NotFound)));
    assert!(matches!(s.delete_auth_request("r1").await, Err(StorageError::NotFound)));
}

pub(crate) async fn auth_code_update_is_atomic_and_sees_the_latest_state<S: Storage + 'static>(s: Arc<S>) {
    s.create_auth_code(auth_code("c1", 100)).await.unwrap();
    assert!(matches!(s.create_auth_code(auth_code("c1", 100)).await, Err(StorageError::AlreadyExists)));
    // Ten concurrent redemptions: exactly one may see the code unredeemed.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.update_auth_code(
                    "c1",
                    Box::new(move |mut c| {
                        if c.redeemed_at.is_some() {
                            return Err(StorageError::Conflict);
                        }
                        c.redeemed_at = Some(i);
                        Ok(c)
                    }),
                )
                .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StorageError::Conflict) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one redemption wins");
    assert!(s.get_auth_code("c1").await.unwrap().redeemed_at.is_some());
    assert!(matches!(s.update_auth_code("missing", Box::new(Ok)).await, Err(StorageError::NotFound)));
}

pub(crate) async fn refresh_token_crud<S: Storage>(s: Arc<S>) {
    let t = refresh_token("t1", "f1", 100);
    s.create_refresh_token(t.clone()).await.unwrap();
    assert!(matches!(s.create_refresh_token(t.clone()).await, Err(StorageError::AlreadyExists)));
    assert_eq!(s.get_refresh_token("t1").await.unwrap(), t);
    let updated = s
        .update_refresh_token(
            "t1",
            Box::new(|mut t| {
                t.identity.groups = vec!["admins".into()];
                t.expiry = 200;
                Ok(t)
            }),
        )
        .await
        .unwrap();
    assert_eq!(s.get_refresh_token("t1").await.unwrap(), updated);
    assert!(matches!(s.get_refresh_token("nope").await, Err(StorageError::NotFound)));
}

pub(crate) async fn rotation_has_exactly_one_winner<S: Storage + 'static>(s: Arc<S>) {
    s.create_refresh_token(refresh_token("old", "f", 100)).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(
                async move { s.rotate_refresh_token("old", 50, refresh_token(&format!("new{i}"), "f", 100)).await },
            )
        })
        .collect();
    let mut winners = vec![];
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(()) => winners.push(format!("new{i}")),
            Err(StorageError::Conflict) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    let old = s.get_refresh_token("old").await.unwrap();
    assert_eq!(old.rotated_at, Some(50));
    assert_eq!(old.successor.as_ref(), Some(&winners[0]));
    assert_eq!(s.list_refresh_family("f").await.unwrap().len(), 2, "losers left no successor behind");
}

pub(crate) async fn rotation_of_a_missing_token_is_not_found<S: Storage>(s: Arc<S>) {
    let r = s.rotate_refresh_token("ghost", 1, refresh_token("n", "f", 10)).await;
    assert!(matches!(r, Err(StorageError::NotFound)), "{r:?}");
    assert!(matches!(s.get_refresh_token("n").await, Err(StorageError::NotFound)));
}

pub(crate) async fn family_deletion<S: Storage>(s: Arc<S>) {
    for (id, fam) in [("a", "f1"), ("b", "f1"), ("c", "f2")] {
        s.create_refresh_token(refresh_token(id, fam, 100)).await.unwrap();
    }
    assert_eq!(s.delete_refresh_family("f1").await.unwrap(), 2);
    assert!(s.list_refresh_family("f1").await.unwrap().is_empty());
    assert_eq!(s.list_refresh_family("f2").await.unwrap().len(), 1);
    assert_eq!(s.delete_refresh_family("f1").await.unwrap(), 0);
}

pub(crate) async fn keys_update_and_keep<S: Storage>(s: Arc<S>) {
    assert!(matches!(s.get_keys().await, Err(StorageError::NotFound)));
    let first =
        keys::rotate(None, Algorithm::EdDsa, 0, std::time::Duration::from_secs(60), std::time::Duration::from_secs(60))
            .unwrap()
            .unwrap();
    let f = first.clone();
    let stored = s.update_keys(Box::new(move |cur| Ok(if cur.is_none() { Some(f) } else { None }))).await.unwrap();
    assert_eq!(stored.signing.kid, first.signing.kid);
    let kept = s.update_keys(Box::new(|_| Ok(None))).await.unwrap();
    assert_eq!(kept.next.kid, first.next.kid, "None leaves the set as it is");
    assert_eq!(s.get_keys().await.unwrap().signing.pkcs8, first.signing.pkcs8);
}

pub(crate) async fn secrets_are_created_once<S: Storage>(s: Arc<S>) {
    assert_eq!(s.get_or_create_secret("k", vec![1]).await.unwrap(), vec![1]);
    assert_eq!(s.get_or_create_secret("k", vec![2]).await.unwrap(), vec![1], "the first secret stays");
}

pub(crate) async fn buckets_update_and_delete<S: Storage>(s: Arc<S>) {
    assert_eq!(s.get_bucket("u").await.unwrap(), None);
    let b = Bucket { tokens: 19.5, updated_at: 1234.25, expiry: 99 };
    assert_eq!(s.update_bucket("u", Box::new(move |cur| Ok(cur.or(Some(b))))).await.unwrap(), Some(b));
    assert_eq!(s.get_bucket("u").await.unwrap(), Some(b));
    assert_eq!(s.update_bucket("u", Box::new(|_| Ok(None))).await.unwrap(), None);
    assert_eq!(s.get_bucket("u").await.unwrap(), None);
}

pub(crate) async fn garbage_collection_removes_only_expired_records_in_batches<S: Storage>(s: Arc<S>) {
    for i in 0..5 {
        s.create_auth_request(auth_request(&format!("old{i}"), 10)).await.unwrap();
    }
    s.create_auth_request(auth_request("live", 1000)).await.unwrap();
    s.create_auth_code(auth_code("old", 10)).await.unwrap();
    s.create_refresh_token(refresh_token("old", "f", 10)).await.unwrap();
    s.create_refresh_token(refresh_token("live", "g", 1000)).await.unwrap();
    s.update_bucket("b", Box::new(|_| Ok(Some(Bucket { tokens: 1.0, updated_at: 0.0, expiry: 10 })))).await.unwrap();
    s.create_device_request(device_request("old", "BBBBBBBB", 10)).await.unwrap();
    s.create_device_request(device_request("live", "CCCCCCCC", 1000)).await.unwrap();

    let first = s.garbage_collect(500, 3).await.unwrap();
    assert_eq!(first.auth_requests, 3, "a pass removes at most one batch");
    assert_eq!((first.auth_codes, first.refresh_tokens, first.buckets, first.device_requests), (1, 1, 1, 1));
    let second = s.garbage_collect(500, 3).await.unwrap();
    assert_eq!(second.auth_requests, 2);
    assert_eq!(s.garbage_collect(500, 3).await.unwrap().total(), 0);
    assert!(s.get_auth_request("live").await.is_ok());
    assert!(s.get_refresh_token("live").await.is_ok());
    assert!(s.get_device_request("live").await.is_ok());
    assert!(matches!(s.get_device_request_by_user_code("BBBBBBBB").await, Err(StorageError::NotFound)));
    s.create_device_request(device_request("again", "BBBBBBBB", 1000))
        .await
        .expect("a collected user code is free again");
}

pub(crate) async fn timestamps_round_trip_exactly<S: Storage>(s: Arc<S>) {
    // Times are Unix seconds (UTC by definition): what goes in comes out, whatever the local zone.
    let mut t = refresh_token("tz", "f", 4_102_444_800);
    t.created_at = -86_400;
    t.rotated_at = Some(1_700_000_000);
    s.create_refresh_token(t.clone()).await.unwrap();
    assert_eq!(s.get_refresh_token("tz").await.unwrap(), t);
}

pub(crate) async fn device_request_crud<S: Storage>(s: Arc<S>) {
    let d = device_request("d1", "WDJBMJHT", 100);
    s.create_device_request(d.clone()).await.unwrap();
    assert!(matches!(s.create_device_request(d.clone()).await, Err(StorageError::AlreadyExists)));
    assert!(
        matches!(
            s.create_device_request(device_request("d2", "WDJBMJHT", 100)).await,
            Err(StorageError::AlreadyExists)
        ),
        "user codes are unique"
    );
    assert!(matches!(s.get_device_request("d2").await, Err(StorageError::NotFound)), "the clash left nothing behind");
    assert_eq!(s.get_device_request("d1").await.unwrap(), d);
    assert_eq!(s.get_device_request_by_user_code("WDJBMJHT").await.unwrap(), d);
    let approved = s
        .update_device_request(
            "d1",
            Box::new(|mut d| {
                d.status = DeviceStatus::Approved { identity: identity(), auth_time: 7 };
                d.last_poll = Some(42);
                d.interval = 10;
                Ok(d)
            }),
        )
        .await
        .unwrap();
    assert_eq!(s.get_device_request_by_user_code("WDJBMJHT").await.unwrap(), approved);
    assert!(matches!(s.get_device_request("nope").await, Err(StorageError::NotFound)));
    assert!(matches!(s.get_device_request_by_user_code("NOPENOPE").await, Err(StorageError::NotFound)));
    assert!(matches!(s.update_device_request("nope", Box::new(Ok)).await, Err(StorageError::NotFound)));
}

pub(crate) async fn device_approval_has_exactly_one_winner<S: Storage + 'static>(s: Arc<S>) {
    s.create_device_request(device_request("d", "HHHHHHHH", 100)).await.unwrap();
    // The user approving twice at once (two tabs) and the device redeeming race the same way.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.update_device_request(
                    "d",
                    Box::new(move |mut d| {
                        if d.status != DeviceStatus::Pending {
                            return Err(StorageError::Conflict);
                        }
                        d.status = DeviceStatus::Approved { identity: identity(), auth_time: i };
                        Ok(d)
                    }),
                )
                .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StorageError::Conflict) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one answer wins");
}

pub(crate) async fn device_request_codes_never_change<S: Storage>(s: Arc<S>) {
    s.create_device_request(device_request("d", "KKKKKKKK", 100)).await.unwrap();
    let r = s
        .update_device_request(
            "d",
            Box::new(|mut d| {
                d.user_code = "LLLLLLLL".into();
                Ok(d)
            }),
        )
        .await;
    assert!(matches!(r, Err(StorageError::Conflict)), "{r:?}");
    assert!(s.get_device_request_by_user_code("KKKKKKKK").await.is_ok());
}

fn client(id: &str) -> Client {
    Client {
        id: id.into(),
        secret: "s3cret".into(),
        redirect_uris: vec!["https://app.example.com/callback".into()],
        trusted_peers: vec![],
        public: false,
        name: "App".into(),
        logo_url: String::new(),
        allowed_connectors: vec!["local".into()],
        post_logout_redirect_uris: vec![],
        sso_shared_with: vec!["gateway".into()],
        backchannel_logout_uri: "https://app.example.com/backchannel".into(),
    }
}

pub(crate) async fn client_crud<S: Storage>(s: Arc<S>) {
    s.create_client(client("b")).await.unwrap();
    s.create_client(client("a")).await.unwrap();
    assert!(matches!(s.create_client(client("a")).await, Err(StorageError::AlreadyExists)));
    assert_eq!(s.get_client("a").await.unwrap(), client("a"));
    assert!(matches!(s.get_client("c").await, Err(StorageError::NotFound)));
    let ids: Vec<String> = s.list_clients().await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["a", "b"], "listed by id");
    s.delete_client("a").await.unwrap();
    assert!(matches!(s.delete_client("a").await, Err(StorageError::NotFound)));
    assert!(matches!(s.get_client("a").await, Err(StorageError::NotFound)));
    assert_eq!(s.list_clients().await.unwrap().len(), 1);
}

pub(crate) async fn client_update_is_atomic_and_keeps_the_id<S: Storage + 'static>(s: Arc<S>) {
    s.create_client(client("app")).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.update_client(
                    "app",
                    Box::new(move |mut c| {
                        c.redirect_uris.push(format!("https://app.example.com/{i}"));
                        Ok(c)
                    }),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(s.get_client("app").await.unwrap().redirect_uris.len(), 9, "no update was lost");
    let renamed = s
        .update_client(
            "app",
            Box::new(|mut c| {
                c.id = "other".into();
                Ok(c)
            }),
        )
        .await;
    assert!(matches!(renamed, Err(StorageError::Conflict)), "{renamed:?}");
    assert!(matches!(s.get_client("other").await, Err(StorageError::NotFound)));
    let missing = s.update_client("ghost", Box::new(Ok)).await;
    assert!(matches!(missing, Err(StorageError::NotFound)), "{missing:?}");
}

pub(crate) async fn password_crud_matches_emails_case_insensitively<S: Storage>(s: Arc<S>) {
    let p = Password {
        email: "Jane@Example.com".into(),
        hash: crate::connector::local::tests::PASSWORD_HASH.into(),
        username: "jane".into(),
        user_id: "42".into(),
    };
    s.create_password(p.clone()).await.unwrap();
    let clash = Password { email: "jane@example.COM".into(), ..p.clone() };
    assert!(matches!(s.create_password(clash).await, Err(StorageError::AlreadyExists)));
    assert_eq!(s.get_password("JANE@example.com").await.unwrap(), p, "the email keeps its spelling");
    let updated = s
        .update_password(
            "jane@example.com",
            Box::new(|mut p| {
                p.username = "janet".into();
                Ok(p)
            }),
        )
        .await
        .unwrap();
    assert_eq!(updated.username, "janet");
    assert_eq!(s.get_password("jane@example.com").await.unwrap(), updated);
    let moved = s
        .update_password(
            "jane@example.com",
            Box::new(|mut p| {
                p.email = "joe@example.com".into();
                Ok(p)
            }),
        )
        .await;
    assert!(matches!(moved, Err(StorageError::Conflict)), "{moved:?}");
    assert_eq!(s.list_passwords().await.unwrap(), vec![updated]);
    s.delete_password("JANE@EXAMPLE.COM").await.unwrap();
    assert!(matches!(s.delete_password("jane@example.com").await, Err(StorageError::NotFound)));
    assert!(matches!(s.get_password("jane@example.com").await, Err(StorageError::NotFound)));
    assert!(s.list_passwords().await.unwrap().is_empty());
}

pub(crate) async fn refresh_tokens_are_listed_by_user<S: Storage>(s: Arc<S>) {
    let of = |id: &str, family: &str, user: &str, connector: &str, created_at: i64| {
        let mut t = refresh_token(id, family, 100);
        t.identity.user_id = user.into();
        t.identity.connector_id = connector.into();
        t.created_at = created_at;
        t
    };
    for t in [
        of("t2", "f1", "u1", "local", 20),
        of("t1", "f1", "u1", "local", 10),
        of("t3", "f2", "u1", "local", 30),
        of("t4", "f3", "u1", "ldap", 10),
        of("t5", "f4", "u2", "local", 10),
    ] {
        s.create_refresh_token(t).await.unwrap();
    }
    let ids = |v: Vec<RefreshToken>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_user_refresh_tokens("local", "u1").await.unwrap()), ["t1", "t2", "t3"], "oldest first");
    assert_eq!(ids(s.list_user_refresh_tokens("ldap", "u1").await.unwrap()), ["t4"], "per connector");
    assert!(s.list_user_refresh_tokens("local", "u3").await.unwrap().is_empty());
    let all = ids(s.list_refresh_tokens().await.unwrap());
    assert_eq!(all.len(), 5, "every token: {all:?}");
    assert_eq!(all[4], "t3", "oldest first");
    s.delete_refresh_family("f1").await.unwrap();
    assert_eq!(ids(s.list_user_refresh_tokens("local", "u1").await.unwrap()), ["t3"]);
}

fn session(id: &str, expiry: i64) -> Session {
    Session {
        id: id.into(),
        secret_hash: "h".into(),
        identity: identity(),
        auth_time: 100,
        created_at: 100,
        last_used: 100,
        absolute_expiry: expiry + 1000,
        expiry,
        clients: vec![SessionClient { client_id: "c".into(), signed_in: true }],
    }
}

pub(crate) async fn session_crud<S: Storage>(s: Arc<S>) {
    assert!(s.list_sessions().await.unwrap().is_empty());
    s.create_session(session("s1", 500)).await.unwrap();
    s.create_session(session("s0", 500)).await.unwrap();
    let listed: Vec<String> = s.list_sessions().await.unwrap().into_iter().map(|x| x.id).collect();
    assert_eq!(listed, ["s0", "s1"], "every session, by id");
    s.delete_session("s0").await.unwrap();
    assert!(matches!(s.create_session(session("s1", 600)).await, Err(StorageError::AlreadyExists)));
    assert_eq!(s.get_session("s1").await.unwrap(), session("s1", 500), "the first create stays");
    assert!(matches!(s.get_session("s2").await, Err(StorageError::NotFound)));
    let updated = s
        .update_session(
            "s1",
            Box::new(|mut x| {
                x.last_used = 200;
                x.expiry = 700;
                Ok(x)
            }),
        )
        .await
        .unwrap();
    assert_eq!((updated.last_used, updated.expiry), (200, 700));
    assert_eq!(s.get_session("s1").await.unwrap(), updated);
    assert!(matches!(s.update_session("s2", Box::new(Ok)).await, Err(StorageError::NotFound)));
    let refused = s.update_session("s1", Box::new(|_| Err(StorageError::Conflict))).await;
    assert!(matches!(refused, Err(StorageError::Conflict)), "{refused:?}");
    assert_eq!(s.get_session("s1").await.unwrap(), updated, "a refused update changes nothing");
    s.delete_session("s1").await.unwrap();
    assert!(matches!(s.delete_session("s1").await, Err(StorageError::NotFound)));
    assert!(matches!(s.get_session("s1").await, Err(StorageError::NotFound)));
}

pub(crate) async fn session_update_is_atomic_and_keeps_the_id<S: Storage + 'static>(s: Arc<S>) {
    s.create_session(session("s", 500)).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.update_session(
                    "s",
                    Box::new(move |mut x| {
                        x.clients.push(SessionClient { client_id: format!("c{i}"), signed_in: false });
                        Ok(x)
                    }),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(s.get_session("s").await.unwrap().clients.len(), 9, "no update was lost");
    let renamed = s
        .update_session(
            "s",
            Box::new(|mut x| {
                x.id = "other".into();
                Ok(x)
            }),
        )
        .await;
    assert!(matches!(renamed, Err(StorageError::Conflict)), "{renamed:?}");
    assert!(matches!(s.get_session("other").await, Err(StorageError::NotFound)));
}

pub(crate) async fn session_records_round_trip_exactly<S: Storage>(s: Arc<S>) {
    let mut x = session("rt", 4_102_444_800);
    x.identity.connector_data = Some(super::ConnectorData(serde_json::json!({"refresh": "upstream"})));
    x.auth_time = -86_400;
    x.clients.push(SessionClient { client_id: "peer".into(), signed_in: false });
    s.create_session(x.clone()).await.unwrap();
    assert_eq!(s.get_session("rt").await.unwrap(), x);

    // The session a code and a refresh token were minted in survives storage too.
    let mut code = auth_code("code-in-session", 1000);
    code.session_id = Some("rt".into());
    s.create_auth_code(code.clone()).await.unwrap();
    assert_eq!(s.get_auth_code("code-in-session").await.unwrap(), code);
    let mut t = refresh_token("token-in-session", "f", 1000);
    t.session_id = Some("rt".into());
    s.create_refresh_token(t.clone()).await.unwrap();
    assert_eq!(s.get_refresh_token("token-in-session").await.unwrap(), t);
}

pub(crate) async fn garbage_collection_removes_expired_sessions<S: Storage>(s: Arc<S>) {
    for i in 0..3 {
        s.create_session(session(&format!("old{i}"), 10)).await.unwrap();
    }
    s.create_session(session("live", 1000)).await.unwrap();
    let first = s.garbage_collect(500, 2).await.unwrap();
    assert_eq!(first.sessions, 2, "a pass removes at most one batch");
    assert_eq!(s.garbage_collect(500, 2).await.unwrap().sessions, 1);
    assert_eq!(s.garbage_collect(500, 2).await.unwrap().total(), 0);
    assert!(s.get_session("live").await.is_ok());
    assert!(matches!(s.get_session("old0").await, Err(StorageError::NotFound)));
}

pub(crate) async fn revocations_are_listed_after_a_cursor_and_collected_by_age<S: Storage>(s: Arc<S>) {
    use super::RevocationKind;
    assert_eq!(s.get_revocation_bounds().await.unwrap(), None);
    assert!(s.list_revocations_after(0, 10).await.unwrap().is_empty());
    let a = s.create_revocation(RevocationKind::Sub, "u1", 100).await.unwrap();
    let b = s.create_revocation(RevocationKind::Sid, "s1", 200).await.unwrap();
    let c = s.create_revocation(RevocationKind::All, "", 300).await.unwrap();
    assert!(a < b && b < c, "seq grows: {a} {b} {c}");
    let all = s.list_revocations_after(0, 10).await.unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![a, b, c]);
    assert_eq!(all[0].kind, RevocationKind::Sub);
    assert_eq!(all[0].value, "u1");
    assert_eq!(all[0].revoked_at, 100);
    let page = s.list_revocations_after(a, 1).await.unwrap();
    assert_eq!(page.len(), 1, "limit applies");
    assert_eq!((page[0].seq, page[0].kind, page[0].value.as_str()), (b, RevocationKind::Sid, "s1"));
    assert!(s.list_revocations_after(c, 10).await.unwrap().is_empty());
    assert_eq!(s.get_revocation_bounds().await.unwrap(), Some((a, c)));

    // Everything is older than the cutoff, but the newest entry stays: it carries the cursor.
    assert_eq!(s.delete_revocations_before(1000, 1).await.unwrap(), 1, "a pass removes at most one batch");
    assert_eq!(s.delete_revocations_before(1000, 10).await.unwrap(), 1);
    assert_eq!(s.delete_revocations_before(1000, 10).await.unwrap(), 0);
    assert_eq!(s.get_revocation_bounds().await.unwrap(), Some((c, c)));
    let d = s.create_revocation(RevocationKind::Group, "admins", 400).await.unwrap();
    assert!(d > c, "a seq is never reused");
    assert_eq!(s.delete_revocations_before(350, 10).await.unwrap(), 1, "only entries older than the cutoff go");
    assert_eq!(s.list_revocations_after(0, 10).await.unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![d]);
}

/// The revocation feed's cursor is the last `seq` a reader saw: an entry that becomes visible later with a
/// smaller `seq` (an insert that committed after a later one) would be skipped for good.
pub(crate) async fn a_reader_following_the_revocation_cursor_never_skips_a_concurrent_insert<S: Storage + 'static>(
    s: Arc<S>,
) {
    use super::RevocationKind;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for n in 0..40 {
                    seqs.push(s.create_revocation(RevocationKind::Sid, &format!("w{w}-{n}"), 100).await.unwrap());
                }
                seqs
            })
        })
        .collect();
    let (mut cursor, mut seen) = (0, Vec::new());
    let mut done = false;
    loop {
        // Once the writers are done, one more pass reads what is left.
        let last_pass = done;
        done = writers.iter().all(tokio::task::JoinHandle::is_finished);
        let page = s.list_revocations_after(cursor, 7).await.unwrap();
        if let Some(last) = page.last() {
            cursor = last.seq;
        }
        if page.is_empty() && last_pass {
            break;
        }
        seen.extend(page.into_iter().map(|r| r.seq));
    }
    let mut created: Vec<i64> = Vec::new();
    for w in writers {
        created.extend(w.await.unwrap());
    }
    created.sort_unstable();
    assert_eq!(seen, created, "every entry once, in seq order, none skipped");
}
