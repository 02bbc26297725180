//! One conformance suite for every store: each check runs against a fresh SQLite file and a
//! fresh PostgreSQL database (on the server named by `PORTCULLIS_TEST_POSTGRES`), so the two
//! cannot drift apart.

mod common;

use std::sync::Arc;

use portcullis::core::counter::Counter;
use portcullis::core::event::{Event, EventKind};
use portcullis::core::identity::NewUser;
use portcullis::core::secret::SessionHash;
use portcullis::store::{
    CaptchaRecord, EventFilter, Gate, NewJob, PostgresStore, Purged, RecoveryKind, RecoveryRecord,
    RememberRecord, Revocation, Revoked, SessionBounds, SessionRecord, SessionStore, SqliteStore,
    Store, StoreError, UserChange, UserStore,
};

fn new_user(login: &str, email: &str) -> NewUser {
    NewUser {
        login: login.into(),
        email: email.into(),
        name: "Ann Example".into(),
        phone: "+15550100".into(),
        groups: vec!["staff".into(), "ops".into()],
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    }
}

/// What each revocation of a feed ends, why, and how many sessions it has left to count.
fn what(feed: &[Revocation]) -> Vec<(Revoked, &str, u64)> {
    feed.iter()
        .map(|r| (r.what.clone(), r.reason.as_str(), r.uncounted))
        .collect()
}

fn session(n: u8, user_id: i64, at: i64) -> SessionRecord {
    SessionRecord {
        hash: SessionHash([n; 32]),
        user_id,
        created_at: at,
        last_seen: at,
        remember_selector: None,
        ip: "10.1.2.3".into(),
        user_agent: "curl/8.5.0".into(),
    }
}

async fn users(store: Arc<dyn Store>) {
    let ann = store
        .create_user(new_user("ann", "Ann@Example.com"), 100)
        .await
        .unwrap();
    assert_eq!((ann.login.as_str(), ann.created_at), ("ann", 100));
    assert_eq!(ann.groups, ["staff", "ops"]);
    assert!(!ann.dismissed);
    // One case-insensitive namespace for logins and emails.
    for (login, email, message) in [
        (
            "ANN",
            "other@example.com",
            "A user with this login already exists",
        ),
        (
            "bob",
            "ann@EXAMPLE.com",
            "A user with this email already exists",
        ),
        (
            "ann@example.com",
            "x@example.com",
            "A user with this email already exists",
        ),
    ] {
        match store.create_user(new_user(login, email), 1).await {
            Err(StoreError::Duplicate(m)) => assert_eq!(m, message, "{login} {email}"),
            other => panic!("{login} {email}: {other:?}"),
        }
    }
    let bob = store
        .create_user(new_user("bob", "bob@example.com"), 101)
        .await
        .unwrap();
    for typed in ["ANN", " ann ", "ann@example.COM"] {
        assert_eq!(
            store.find_user(typed).await.unwrap(),
            Some(ann.clone()),
            "{typed}"
        );
    }
    assert_eq!(store.find_user("nobody").await.unwrap(), None);
    assert_eq!(store.get_user(bob.id).await.unwrap(), Some(bob.clone()));
    // Corrections keep the one namespace (the user's own names are no conflict), and tell
    // every gateway to read the user's sessions again.
    let seq = store.last_revocation().await.unwrap();
    for (login, email, message) in [
        (
            "bob",
            "ANN@example.com",
            "A user with this email already exists",
        ),
        (
            "ANN",
            "b2@example.com",
            "A user with this login already exists",
        ),
    ] {
        match store
            .update_user(bob.id, &new_user(login, email), 102)
            .await
        {
            Err(StoreError::Duplicate(m)) => assert_eq!(m, message, "{login} {email}"),
            other => panic!("{login} {email}: {other:?}"),
        }
    }
    let mut moved = new_user("bob", "Bob@Example.com");
    moved.groups = vec!["finance".into()];
    moved.name = "Robert".into();
    let bob = store.update_user(bob.id, &moved, 103).await.unwrap();
    assert_eq!(
        (bob.name.as_str(), bob.groups.clone()),
        ("Robert", vec!["finance".to_string()])
    );
    assert_eq!(
        store.find_user("bob@example.com").await.unwrap(),
        Some(bob.clone())
    );
    let published = store.revocations_since(seq).await.unwrap();
    assert!(
        published.iter().any(|r| r.what == Revoked::User(bob.id)),
        "{published:?}"
    );
    assert_eq!(store.get_user(-1).await.unwrap(), None);
    store.set_password_hash(ann.id, "new-hash").await.unwrap();
    store.insert_session(&session(1, ann.id, 50)).await.unwrap();
    assert!(
        store
            .touch_session(&SessionHash([1; 32]), 60)
            .await
            .unwrap()
    );
    store.set_dismissed(ann.id, true).await.unwrap();
    assert!(
        !store
            .touch_session(&SessionHash([1; 32]), 70)
            .await
            .unwrap(),
        "a dismissed user's"
    );
    let listed = store.list_users().await.unwrap();
    assert_eq!(
        listed.iter().map(|u| u.login.as_str()).collect::<Vec<_>>(),
        ["ann", "bob"]
    );
    assert_eq!(
        (listed[0].password_hash.as_str(), listed[0].dismissed),
        ("new-hash", true)
    );
    assert_eq!(listed[1], bob);
    // Parallel creations of one name: exactly one wins.
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create_user(new_user("carol", "carol@example.com"), 1)
                .await
        })
    });
    let mut won = 0;
    for a in attempts {
        match a.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Duplicate(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
}

async fn sessions(store: Arc<dyn Store>) {
    let ann = store
        .create_user(new_user("ann", "ann@example.com"), 0)
        .await
        .unwrap();
    let bob = store
        .create_user(new_user("bob", "bob@example.com"), 0)
        .await
        .unwrap();
    let mut first = session(1, ann.id, 1000);
    first.remember_selector = Some("sel".into());
    store.insert_session(&first).await.unwrap();
    store
        .insert_session(&session(2, ann.id, 1100))
        .await
        .unwrap();
    store
        .insert_session(&session(3, bob.id, 1200))
        .await
        .unwrap();
    assert_eq!(
        store.get_session(&first.hash).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.get_session(&SessionHash([9; 32])).await.unwrap(),
        None
    );
    // last_seen moves forward only.
    assert!(store.touch_session(&first.hash, 1500).await.unwrap());
    assert!(store.touch_session(&first.hash, 1400).await.unwrap());
    assert!(
        !store
            .touch_session(&SessionHash([9; 32]), 1500)
            .await
            .unwrap(),
        "gone"
    );
    // One user's live sessions, most recently seen first; another user's are never listed.
    let bounds = |idle_before, created_before| SessionBounds {
        idle_before,
        created_before,
    };
    let anns = store.user_sessions(ann.id, bounds(0, None)).await.unwrap();
    assert_eq!(
        anns.iter().map(|s| s.hash.0[0]).collect::<Vec<_>>(),
        [1, 2],
        "{anns:?}"
    );
    assert_eq!(anns[0].remember_selector.as_deref(), Some("sel"));
    assert_eq!(
        (anns[1].ip.as_str(), anns[1].user_agent.as_str()),
        ("10.1.2.3", "curl/8.5.0")
    );
    let idle = store
        .user_sessions(ann.id, bounds(1200, None))
        .await
        .unwrap();
    assert_eq!(idle.len(), 1, "the one seen at 1100 is idle");
    let young = store
        .user_sessions(ann.id, bounds(0, Some(1050)))
        .await
        .unwrap();
    assert_eq!(young.len(), 1, "the one made at 1000 is too old");
    assert!(
        store
            .user_sessions(-1, bounds(0, None))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .get_session(&first.hash)
            .await
            .unwrap()
            .unwrap()
            .last_seen,
        1500
    );
    let all = SessionBounds {
        idle_before: 0,
        created_before: None,
    };
    assert_eq!(store.count_sessions(all).await.unwrap(), 3);
    let live = SessionBounds {
        idle_before: 1150,
        created_before: Some(1050),
    };
    assert_eq!(
        store.count_sessions(live).await.unwrap(),
        1,
        "only the third: seen at 1200, made at 1200"
    );
    // Ending one session publishes it; a second end finds nothing.
    let seq = store.last_revocation().await.unwrap();
    assert!(
        store
            .end_session(&SessionHash([2; 32]), 2000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .end_session(&SessionHash([2; 32]), 2001)
            .await
            .unwrap()
    );
    // Everything of bob, his remember-me token too, with a reason and a count to claim.
    store
        .insert_remember(&RememberRecord {
            selector: "bobs".into(),
            validator_hash: vec![7; 32],
            user_id: bob.id,
            expires_at: 9999,
            previous_hash: None,
            rotated_at: 0,
            second_factor: false,
        })
        .await
        .unwrap();
    store
        .insert_session(&session(4, bob.id, 1300))
        .await
        .unwrap();
    assert_eq!(
        store
            .end_user_sessions(bob.id, 2002, "dismissed", UserChange::Dismissed)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.get_remember("bobs").await.unwrap(), None);
    let feed = store.revocations_since(seq).await.unwrap();
    assert_eq!(
        what(&feed),
        [
            (Revoked::Session(SessionHash([2; 32])), "", 0),
            (Revoked::Session(SessionHash([2; 32])), "", 0),
            (Revoked::User(bob.id), "dismissed", 2),
        ]
    );
    let last = feed.last().unwrap().seq;
    assert_eq!(store.last_revocation().await.unwrap(), last);
    assert!(
        store
            .revocations_since(last)
            .await
            .unwrap()
            .iter()
            .all(|r| r.seq <= last)
    );
    // Claimed once, by whoever asks first.
    let claims = (0..6).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.claim_ended(&[last]).await.unwrap() })
    });
    let mut total = 0;
    for c in claims {
        total += c.await.unwrap().iter().sum::<u64>();
    }
    assert_eq!(total, 2);
    // Purge: made before 1050 (absolute), then seen before 1600 (idle).
    store
        .insert_session(&session(5, ann.id, 1700))
        .await
        .unwrap();
    let purged = store
        .purge_sessions(SessionBounds {
            idle_before: 1600,
            created_before: Some(1050),
        })
        .await
        .unwrap();
    assert_eq!(
        purged,
        Purged {
            idle: 0,
            absolute: 1
        }
    );
    let purged = store
        .purge_sessions(SessionBounds {
            idle_before: 1800,
            created_before: None,
        })
        .await
        .unwrap();
    assert_eq!(
        purged,
        Purged {
            idle: 1,
            absolute: 0
        }
    );
    assert_eq!(store.count_sessions(all).await.unwrap(), 0);
}

/// `user dismiss --stdin`: several users at once, each with their count, the feed with one
/// revocation per user in the order given, the counts claimed in one call by one gateway.
async fn users_ended_in_a_batch(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for (i, login) in [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ]
    .iter()
    .enumerate()
    {
        let u = store.create_user(new_user(login, login), 1).await.unwrap();
        for k in 0..i {
            store
                .insert_session(&session((10 * i + k) as u8, u.id, 1000))
                .await
                .unwrap();
        }
        ids.push(u.id);
    }
    let seq = store.last_revocation().await.unwrap();
    // d (3 sessions), b (1), a (none), c (2): not in id order; d stays.
    let given = [ids[3], ids[1], ids[0], ids[2]];
    let ended = store
        .end_users_sessions(&given[..3], 2000, "dismissed", UserChange::Dismissed)
        .await
        .unwrap();
    assert_eq!(ended, [3, 1, 0]);
    for (id, dismissed) in [
        (ids[3], true),
        (ids[1], true),
        (ids[0], true),
        (ids[2], false),
    ] {
        assert_eq!(
            store.get_user(id).await.unwrap().unwrap().dismissed,
            dismissed
        );
    }
    assert_eq!(
        store
            .user_sessions(
                ids[2],
                SessionBounds {
                    idle_before: 0,
                    created_before: None
                }
            )
            .await
            .unwrap()
            .len(),
        2
    );
    let feed = store.revocations_since(seq).await.unwrap();
    assert_eq!(
        what(&feed),
        [
            (Revoked::User(ids[3]), "dismissed", 3),
            (Revoked::User(ids[1]), "dismissed", 1),
            (Revoked::User(ids[0]), "dismissed", 0),
        ]
    );
    let seqs: Vec<i64> = feed.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // Two gateways claim the batch at once (and one a seq that does not exist): each count
    // goes to exactly one of them.
    let mut asked = seqs.clone();
    asked.push(seqs[2] + 1000);
    let (first, second) = tokio::join!(store.claim_ended(&asked), store.claim_ended(&asked));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.len(), 4);
    let total: Vec<u64> = first.iter().zip(&second).map(|(a, b)| a + b).collect();
    assert_eq!(total, [3, 1, 0, 0]);
    assert!(first.iter().zip(&second).all(|(a, b)| *a == 0 || *b == 0));
}

async fn remember_tokens(store: Arc<dyn Store>) {
    let ann = store
        .create_user(new_user("ann", "ann@example.com"), 0)
        .await
        .unwrap();
    let token = RememberRecord {
        selector: "s1".into(),
        validator_hash: vec![1; 32],
        user_id: ann.id,
        expires_at: 5000,
        previous_hash: None,
        rotated_at: 0,
        second_factor: true,
    };
    store.insert_remember(&token).await.unwrap();
    assert_eq!(store.get_remember("s1").await.unwrap(), Some(token.clone()));
    // Only a rotation from the current validator wins.
    assert!(
        store
            .rotate_remember("s1", &[1; 32], &[2; 32], 100)
            .await
            .unwrap()
    );
    assert!(
        !store
            .rotate_remember("s1", &[1; 32], &[3; 32], 101)
            .await
            .unwrap()
    );
    let rotated = store.get_remember("s1").await.unwrap().unwrap();
    assert_eq!(rotated.validator_hash, vec![2; 32]);
    // The replaced validator is kept, with the time of the winning rotation.
    assert_eq!(
        (rotated.previous_hash, rotated.rotated_at),
        (Some(vec![1; 32]), 100)
    );
    store.delete_remember("s1").await.unwrap();
    assert_eq!(store.get_remember("s1").await.unwrap(), None);
}

async fn counters(store: Arc<dyn Store>) {
    assert_eq!(store.counter("login:ann").await.unwrap(), None);
    let bump = |at: i64| -> portcullis::store::CounterUpdate {
        Box::new(move |c: Option<Counter>| {
            let mut c = c.unwrap_or_default();
            c.failures += 1;
            c.last_failure = at;
            Some(c)
        })
    };
    assert_eq!(
        store.update_counter("login:ann", bump(10)).await.unwrap(),
        None
    );
    let before = store
        .update_counter("login:ann", bump(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((before.failures, before.last_failure), (1, 10));
    // Forty increments at once, from as many tasks: none is lost.
    let tasks = (0..40).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .update_counter("addr:10.0.0.1", bump(100 + i))
                .await
                .unwrap()
        })
    });
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store
            .counter("addr:10.0.0.1")
            .await
            .unwrap()
            .unwrap()
            .failures,
        40
    );
    // An update that changes nothing writes nothing; None deletes.
    let same = store.counter("login:ann").await.unwrap();
    assert_eq!(
        store
            .update_counter("login:ann", Box::new(|c| c))
            .await
            .unwrap(),
        same
    );
    store
        .update_counter("login:ann", Box::new(|_| None))
        .await
        .unwrap();
    assert_eq!(store.counter("login:ann").await.unwrap(), None);
    // Purge: no failure since 1000 and nothing pending at 2000.
    let pending = Counter {
        failures: 1,
        last_failure: 500,
        locked_until: 3000,
        budget_full_at: 0,
    };
    store
        .update_counter("login:locked", Box::new(move |_| Some(pending)))
        .await
        .unwrap();
    assert_eq!(
        store.purge_counters(1000, 2000).await.unwrap(),
        1,
        "the 40-failure address"
    );
    assert_eq!(store.counter("login:locked").await.unwrap(), Some(pending));
}

async fn captchas(store: Arc<dyn Store>) {
    let challenge = CaptchaRecord {
        id: "c1".into(),
        answer_hash: vec![5; 32],
        png: vec![0x89, b'P', b'N', b'G'],
        expires_at: 1000,
    };
    assert_eq!(store.insert_captcha(&challenge, 100, 0).await.unwrap(), 0);
    store
        .insert_captcha(
            &CaptchaRecord {
                id: "c2".into(),
                expires_at: 500,
                ..challenge.clone()
            },
            100,
            0,
        )
        .await
        .unwrap();
    assert_eq!(
        store.captcha_image("c1", 999).await.unwrap(),
        Some(challenge.png.clone())
    );
    assert_eq!(
        store.captcha_image("c1", 1000).await.unwrap(),
        None,
        "expired"
    );
    // Each can be answered once, even when asked twice at once.
    let takes = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.take_captcha("c1").await.unwrap() })
    });
    let mut taken = Vec::new();
    for t in takes {
        taken.extend(t.await.unwrap());
    }
    assert_eq!(taken, std::slice::from_ref(&challenge));
    assert_eq!(store.purge_captchas(600).await.unwrap(), 1);
    assert_eq!(store.take_captcha("c2").await.unwrap(), None);
    // At most `limit` live challenges, from everyone: the expired go first, then the oldest.
    let at = |id: &str, expires_at| CaptchaRecord {
        id: id.into(),
        expires_at,
        ..challenge.clone()
    };
    for (id, expires) in [("d1", 2000), ("d2", 1500), ("d3", 2500)] {
        assert_eq!(
            store
                .insert_captcha(&at(id, expires), 3, 1000)
                .await
                .unwrap(),
            0
        );
    }
    assert_eq!(
        store
            .insert_captcha(&at("d4", 3000), 3, 1000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.captcha_image("d2", 1000).await.unwrap(),
        None,
        "the oldest went"
    );
    for id in ["d1", "d3", "d4"] {
        assert!(
            store.captcha_image(id, 1000).await.unwrap().is_some(),
            "{id}"
        );
    }
    // Later, one expired: it makes the room, nobody live is pushed out.
    assert_eq!(
        store
            .insert_captcha(&at("d5", 4000), 3, 2000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.captcha_image("d1", 1999).await.unwrap(), None);
    for id in ["d3", "d4", "d5"] {
        assert!(
            store.captcha_image(id, 2000).await.unwrap().is_some(),
            "{id}"
        );
    }
}

/// Secrets are made once and shared: every caller, at once or later, gets the same bytes.
async fn secrets(store: Arc<dyn Store>) {
    let asks = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.secret("login_csrf").await.unwrap() })
    });
    let mut seen = Vec::new();
    for a in asks {
        seen.push(a.await.unwrap());
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "one secret for all");
    assert_ne!(seen[0], [0u8; 32]);
    assert_eq!(store.secret("login_csrf").await.unwrap(), seen[0]);
    assert_ne!(store.secret("other").await.unwrap(), seen[0]);
}

/// Adding a session that is already there keeps the first (a raced remember-me renewal).
async fn sessions_added_twice(store: Arc<dyn Store>) {
    let ann = store
        .create_user(new_user("ann", "ann@example.com"), 0)
        .await
        .unwrap();
    let first = session(9, ann.id, 100);
    store.insert_session(&first).await.unwrap();
    store
        .insert_session(&SessionRecord {
            last_seen: 999,
            ..first.clone()
        })
        .await
        .unwrap();
    assert_eq!(store.get_session(&first.hash).await.unwrap(), Some(first));
}

async fn events(store: Arc<dyn Store>) {
    let e = |kind, ts, login: &str| {
        Event::new(kind, ts)
            .login(login)
            .client("10.1.2.3", "UA")
            .detail("d")
    };
    store
        .record_events(&[
            e(EventKind::LoginFailure, 100, "ann"),
            e(EventKind::LoginSuccess, 200, "Ann"),
            e(EventKind::Logout, 300, "bob"),
        ])
        .await
        .unwrap();
    store
        .record_events(&[e(EventKind::LoginFailure, 150, "bob")])
        .await
        .unwrap();
    let all = store.events(&EventFilter::default()).await.unwrap();
    let ts: Vec<i64> = all.iter().map(|e| e.ts).collect();
    assert_eq!(ts, [300, 200, 150, 100], "newest first, by time");
    assert_eq!(all[0], e(EventKind::Logout, 300, "bob"));
    let filter = EventFilter {
        login: Some("ANN".into()),
        event: Some("login_success".into()),
        since: Some(200),
        limit: None,
        ip_ranges: None,
    };
    assert_eq!(
        store.events(&filter).await.unwrap(),
        [e(EventKind::LoginSuccess, 200, "Ann")]
    );
    let limited = EventFilter {
        limit: Some(2),
        ..EventFilter::default()
    };
    assert_eq!(store.events(&limited).await.unwrap().len(), 2);
    // By address, through the key index: IPv4 (also written IPv4-mapped), IPv6, none.
    let at = |ts, ip: &str| Event::new(EventKind::IpDenied, ts).client(ip, "UA");
    store
        .record_events(&[
            at(400, "10.9.0.1"),
            at(401, "::ffff:10.9.255.255"),
            at(402, "10.10.0.0"),
            at(403, "2001:db8::7"),
            at(404, ""),
        ])
        .await
        .unwrap();
    let by_ip = |cidrs: &[&str]| {
        let set = portcullis::core::addr::AddrSet::parse(cidrs.iter().copied()).unwrap();
        EventFilter {
            ip_ranges: Some(set.key_ranges()),
            ..EventFilter::default()
        }
    };
    let ts = |events: Vec<Event>| events.iter().map(|e| e.ts).collect::<Vec<_>>();
    assert_eq!(
        ts(store.events(&by_ip(&["10.9.0.0/16"])).await.unwrap()),
        [401, 400]
    );
    assert_eq!(
        ts(store
            .events(&by_ip(&["10.9.0.0/16", "2001:db8::/32"]))
            .await
            .unwrap()),
        [403, 401, 400]
    );
    assert!(
        store
            .events(&by_ip(&["192.0.2.1"]))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.key_events(100).await.unwrap(),
        0,
        "written with their keys"
    );
    // Oldest first, at most `limit` a call.
    assert_eq!(store.purge_events(250, 2).await.unwrap(), 2);
    assert_eq!(store.purge_events(250, 2).await.unwrap(), 1);
    let left: Vec<i64> = store
        .events(&EventFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|e| e.ts)
        .collect();
    assert_eq!(left, [404, 403, 402, 401, 400, 300]);
    assert!(store.ping().await.is_ok());
}

/// Opening the same store from two places at once (two gateways starting together) migrates
/// it once and leaves both working.
async fn opened_twice_at_once(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    first
        .create_user(new_user("ann", "ann@example.com"), 0)
        .await
        .unwrap();
    assert_eq!(second.find_user("ann").await.unwrap().unwrap().login, "ann");
}

/// Recovery secrets: one per user (a newer replaces the older), a link used once while live,
/// an SMS code's tries counted down atomically.
async fn recovery(store: Arc<dyn Store>) {
    let ann = store
        .create_user(new_user("ann", "ann@example.com"), 0)
        .await
        .unwrap();
    let link = |hash: u8, expires_at| RecoveryRecord {
        user_id: ann.id,
        kind: RecoveryKind::Link,
        secret_hash: [hash; 32],
        created_at: 100,
        expires_at,
        tries_left: 1,
        used_at: None,
    };
    store.put_recovery(&link(1, 1000)).await.unwrap();
    assert_eq!(
        store.recovery_by_hash(&[1; 32]).await.unwrap(),
        Some(link(1, 1000))
    );
    // A newer link: the older one is gone.
    store.put_recovery(&link(2, 1000)).await.unwrap();
    assert_eq!(store.recovery_by_hash(&[1; 32]).await.unwrap(), None);
    assert!(
        !store
            .use_recovery(&[1; 32], RecoveryKind::Link, 200)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_recovery(&[2; 32], RecoveryKind::Link, 1000)
            .await
            .unwrap(),
        "expired"
    );
    assert!(
        store
            .use_recovery(&[2; 32], RecoveryKind::Link, 200)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_recovery(&[2; 32], RecoveryKind::Link, 201)
            .await
            .unwrap(),
        "used"
    );
    let used = store.recovery_by_hash(&[2; 32]).await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(200));
    // An invitation's link is used as one, and is no reset link (nor the other way round).
    let invite = RecoveryRecord {
        kind: RecoveryKind::Invite,
        ..link(4, 1000)
    };
    store.put_recovery(&invite).await.unwrap();
    assert!(
        !store
            .use_recovery(&[4; 32], RecoveryKind::Link, 200)
            .await
            .unwrap()
    );
    assert!(
        store
            .use_recovery(&[4; 32], RecoveryKind::Invite, 200)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_recovery(&[4; 32], RecoveryKind::Invite, 201)
            .await
            .unwrap()
    );
    // An SMS code: three tries, then none; not a link.
    let sms = RecoveryRecord {
        kind: RecoveryKind::Sms,
        tries_left: 3,
        ..link(3, 500)
    };
    store.put_recovery(&sms).await.unwrap();
    assert!(
        !store
            .use_recovery(&[3; 32], RecoveryKind::Link, 200)
            .await
            .unwrap(),
        "a code is no link"
    );
    for left in [3, 2, 1] {
        let before = store
            .try_sms_code(ann.id, RecoveryKind::Sms, 200)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(before.tries_left, left);
        assert_eq!(before.secret_hash, [3; 32]);
    }
    assert_eq!(
        store
            .try_sms_code(ann.id, RecoveryKind::Sms, 200)
            .await
            .unwrap(),
        None
    );
    store.put_recovery(&sms).await.unwrap();
    assert_eq!(
        store
            .try_sms_code(ann.id, RecoveryKind::Sms, 500)
            .await
            .unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store
            .try_sms_code(ann.id + 1, RecoveryKind::Sms, 200)
            .await
            .unwrap(),
        None
    );
    // A code of another kind (a new phone's) is not tried as a recovery code.
    store
        .put_recovery(&RecoveryRecord {
            kind: RecoveryKind::Phone,
            ..sms.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .try_sms_code(ann.id, RecoveryKind::Sms, 200)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .try_sms_code(ann.id, RecoveryKind::Phone, 200)
            .await
            .unwrap()
            .is_some()
    );
}

fn job(kind: &str, user_id: Option<i64>) -> NewJob {
    NewJob {
        kind: kind.into(),
        user_id,
        not_after: 5000,
        payload: format!("{kind} for {user_id:?}"),
    }
}

/// The outbox: jobs queued behind a gate, claimed with a lease, retried later, finished.
async fn outbox(store: Arc<dyn Store>) {
    let gate = Gate {
        key: "account:1".into(),
        gap: 60,
    };
    assert_eq!(
        store
            .enqueue(&job("reset_link", Some(1)), Some(&gate), 1000)
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        store
            .enqueue(&job("reset_link", Some(1)), Some(&gate), 1030)
            .await
            .unwrap(),
        Err(30),
        "the gate stays closed for its gap"
    );
    assert_eq!(
        store
            .enqueue(&job("sms_code", None), None, 1030)
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        store
            .enqueue(&job("reset_link", Some(1)), Some(&gate), 1060)
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(store.count_jobs().await.unwrap(), 3);

    let first = store
        .claim_jobs("a", ALL_KINDS, 1060, 120, 2)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(
        (
            first[0].kind.as_str(),
            first[0].user_id,
            first[0].created_at
        ),
        ("reset_link", Some(1), 1000)
    );
    assert_eq!(
        (first[1].kind.as_str(), first[1].user_id, first[1].attempts),
        ("sms_code", None, 0)
    );
    assert_eq!(
        first[1].payload, "sms_code for None",
        "the payload comes back"
    );
    // Another worker gets only what is not claimed; a lease that ran out is free again.
    let second = store
        .claim_jobs("b", ALL_KINDS, 1061, 120, 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].created_at, 1060);
    assert!(
        store
            .claim_jobs("b", ALL_KINDS, 1100, 120, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.retry_job(first[0].id, 1200).await.unwrap();
    store.finish_job(first[1].id).await.unwrap();
    let not_yet = store
        .claim_jobs("b", ALL_KINDS, 1150, 120, 10)
        .await
        .unwrap();
    assert!(not_yet.is_empty(), "one job not due, one under lease");
    // At 1200 the retried job is due and the lease of b's first claim (till 1181) ran out.
    let again = store
        .claim_jobs("c", ALL_KINDS, 1200, 120, 10)
        .await
        .unwrap();
    let seen: Vec<(i64, u32)> = again.iter().map(|j| (j.id, j.attempts)).collect();
    assert_eq!(seen, [(first[0].id, 1), (second[0].id, 0)]);
    store.finish_job(second[0].id).await.unwrap();
    store.finish_job(first[0].id).await.unwrap();
    assert_eq!(store.count_jobs().await.unwrap(), 0);

    // A worker takes only the kinds it can send, and any kind once it is no longer useful
    // (to drop it): a gateway without mail never holds an e-mail back from one with mail.
    store
        .enqueue(&job("reset_link", Some(2)), None, 2000)
        .await
        .unwrap()
        .unwrap();
    store
        .enqueue(&job("sms_code", Some(2)), None, 2000)
        .await
        .unwrap()
        .unwrap();
    let sms_only = store
        .claim_jobs("s", &["sms_code"], 2000, 120, 10)
        .await
        .unwrap();
    assert_eq!(
        sms_only.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(),
        ["sms_code"]
    );
    assert!(
        store
            .claim_jobs("n", &[], 2000, 120, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.finish_job(sms_only[0].id).await.unwrap();
    let not_after = store.claim_jobs("n", &[], 5001, 120, 10).await.unwrap();
    assert_eq!(
        not_after
            .iter()
            .map(|j| j.kind.as_str())
            .collect::<Vec<_>>(),
        ["reset_link"]
    );
    for j in &not_after {
        store.finish_job(j.id).await.unwrap();
    }

    // A gate alone: passed once per gap, on its own or with a job.
    let alone = Gate {
        key: "sent:1".into(),
        gap: 45,
    };
    assert_eq!(store.pass_gate(&alone, 3000).await.unwrap(), Ok(()));
    assert_eq!(store.pass_gate(&alone, 3010).await.unwrap(), Err(35));
    assert_eq!(
        store
            .enqueue(&job("x", None), Some(&alone), 3020)
            .await
            .unwrap(),
        Err(25)
    );
    assert_eq!(store.pass_gate(&alone, 3045).await.unwrap(), Ok(()));
    assert_eq!(store.count_jobs().await.unwrap(), 0);
}

/// Every kind of message: a worker that sends e-mail and SMS.
const ALL_KINDS: &[&str] = &["reset_link", "sms_code", "password_changed"];

/// Many workers claiming at once: each job goes to exactly one of them.
async fn outbox_claims_once(store: Arc<dyn Store>) {
    for _ in 0..40 {
        store
            .enqueue(&job("password_changed", Some(1)), None, 10)
            .await
            .unwrap()
            .unwrap();
    }
    let claims = (0..8).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_jobs(&format!("w{w}"), ALL_KINDS, 10, 120, 3)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
        })
    });
    let mut all: Vec<i64> = Vec::new();
    for c in claims {
        all.extend(c.await.unwrap());
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!((before, all.len()), (40, 40), "every job claimed once");
}

async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(&dir.path().join("store.db"))
            .await
            .unwrap(),
    )
}

macro_rules! conformance {
    ($($check:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$check(super::sqlite_store(&dir).await).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn opened_twice_at_once() {
                let dir = tempfile::tempdir().unwrap();
                let (a, b) = tokio::join!(super::sqlite_store(&dir), super::sqlite_store(&dir));
                super::opened_twice_at_once(a, b).await;
            }
        }

        mod postgres {
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(server) = common::pg::server() else { return };
                    let db = common::pg::Database::create(&server);
                    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&db.url).await.unwrap());
                    super::$check(store).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn opened_twice_at_once() {
                let Some(server) = common::pg::server() else { return };
                let db = common::pg::Database::create(&server);
                let (a, b) = tokio::join!(PostgresStore::open(&db.url), PostgresStore::open(&db.url));
                super::opened_twice_at_once(Arc::new(a.unwrap()), Arc::new(b.unwrap())).await;
            }
        }
    };
}

conformance!(
    users,
    sessions,
    users_ended_in_a_batch,
    sessions_added_twice,
    remember_tokens,
    counters,
    captchas,
    secrets,
    events,
    recovery,
    outbox,
    outbox_claims_once
);

/// A user row whose groups cannot be read is an error, never "no groups" (which would escape
/// every group restriction), on both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_groups_are_corrupt_not_empty_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let ann = store
        .create_user(new_user("ann", "ann@example.com"), 0)
        .await
        .unwrap();
    for bad in ["not json", "{\"a\":1}", "[1,2]", ""] {
        let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        conn.execute("UPDATE users SET groups = ?1", [bad]).unwrap();
        drop(conn);
        for got in [
            store.get_user(ann.id).await.map(|_| ()),
            store.find_user("ann").await.map(|_| ()),
            store.list_users().await.map(|_| ()),
        ] {
            assert!(
                matches!(got, Err(StoreError::Corrupt(_))),
                "{bad:?}: {got:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_groups_are_corrupt_not_empty_on_postgres() {
    let Some(server) = common::pg::server() else {
        return;
    };
    let db = common::pg::Database::create(&server);
    let store = PostgresStore::open(&db.url).await.unwrap();
    let ann = store
        .create_user(new_user("ann", "ann@example.com"), 0)
        .await
        .unwrap();
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for bad in ["not json", "{\"a\":1}", "[1,2]", ""] {
        client
            .execute("UPDATE users SET groups = $1", &[&bad])
            .await
            .unwrap();
        for got in [
            store.get_user(ann.id).await.map(|_| ()),
            store.find_user("ann").await.map(|_| ()),
            store.list_users().await.map(|_| ()),
        ] {
            assert!(
                matches!(got, Err(StoreError::Corrupt(_))),
                "{bad:?}: {got:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_unreachable_postgres_is_an_error_within_seconds_and_never_shows_the_url() {
    let started = std::time::Instant::now();
    let url = "postgres://portcullis:s3cret-pw@127.0.0.1:1/portcullis";
    let err = match PostgresStore::open(url).await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => e.to_string(),
    };
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(err.starts_with("the store is unavailable"), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_announces_revocations_to_every_listening_store() {
    let Some(server) = common::pg::server() else {
        return;
    };
    let db = common::pg::Database::create(&server);
    let (here, there) = (
        PostgresStore::open(&db.url).await.unwrap(),
        PostgresStore::open(&db.url).await.unwrap(),
    );
    let mut changes = there.changes().expect("PostgreSQL announces changes");
    // The listener says so once it is listening; wait for that, then for the announcement.
    let wait = |changes: &mut tokio::sync::watch::Receiver<u64>| {
        let mut changes = changes.clone();
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(2), changes.changed())
                .await
                .is_ok()
        }
    };
    assert!(wait(&mut changes).await, "the listener never started");
    changes.borrow_and_update();
    let before = *changes.borrow();
    here.end_session(&SessionHash([1; 32]), 10).await.unwrap();
    assert!(wait(&mut changes).await, "no announcement within 2 s");
    assert!(*changes.borrow() > before);
    assert!(
        SqliteStore::open(&tempfile::tempdir().unwrap().path().join("s.db"))
            .await
            .unwrap()
            .changes()
            .is_none()
    );
}
