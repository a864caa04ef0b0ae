//! Unit tests of the approval module: answer signatures, the API's authorization, reading
//! answers from the approvals topic. Kept apart so `mod.rs` reads as the code alone.

use super::*;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn key() -> AnswerKey {
    AnswerKey::new(KEY, "test").unwrap()
}

/// A new approvals group starts at the end of the topic, even when `kafka.properties` sets
/// another reset for the incident consumer: first enabling it replays no old answer.
#[test]
fn a_new_approvals_group_starts_at_the_end_of_the_topic() {
    let mut s = KafkaSettings {
        group_id: "remediator".into(),
        ..KafkaSettings::default()
    };
    let c = approvals_consumer_config(&s);
    assert_eq!(c.get("auto.offset.reset"), Some("latest"));
    assert_eq!(c.get("group.id"), Some("remediator-approvals"));
    assert_eq!(c.get("enable.auto.commit"), Some("false"));
    s.properties.insert("auto.offset.reset".into(), "earliest".into());
    assert_eq!(approvals_consumer_config(&s).get("auto.offset.reset"), Some("latest"));
}

#[test]
fn a_signed_message_authenticates_and_any_change_breaks_it() {
    let m = key().signed_message("a1", true, "alice", "h1");
    assert_eq!(m.authenticate(&key()), Ok(()));
    let other = AnswerKey::new("another key, also thirty-two bytes!", "test").unwrap();
    assert!(m.authenticate(&other).unwrap_err().contains("does not verify"));
    for tamper in [
        |m: &mut AnswerMessage| m.approval_id = "a2".into(),
        |m: &mut AnswerMessage| m.decision = "deny".into(),
        |m: &mut AnswerMessage| m.approver = "mallory".into(),
        |m: &mut AnswerMessage| m.action_hash = Some("h2".into()),
        |m: &mut AnswerMessage| m.signature = Some("zz".into()),
    ] {
        let mut t = m.clone();
        tamper(&mut t);
        assert!(t.authenticate(&key()).is_err(), "{t:?}");
    }
}

#[test]
fn missing_signature_or_hash_is_refused_and_named() {
    let mut m = key().signed_message("a1", true, "alice", "h1");
    m.signature = None;
    assert!(m.authenticate(&key()).unwrap_err().contains("signature is missing"));
    // A signature over an empty hash does not make the hash optional.
    let m = AnswerMessage {
        action_hash: None,
        ..key().signed_message("a1", true, "alice", "")
    };
    assert!(m.authenticate(&key()).unwrap_err().contains("action_hash is required"));
}

#[test]
fn the_signed_text_is_unambiguous() {
    // Moving a boundary between fields changes the text, so it changes the signature.
    assert_ne!(signed_text("a", "b:c", "d", "e"), signed_text("a:b", "c", "d", "e"));
    assert_ne!(signed_text("a\n1:b", "c", "d", "e"), signed_text("a", "b", "c", "d"));
    assert_eq!(
        String::from_utf8(signed_text("id", "approve", "alice", "h")).unwrap(),
        "29:remediator-approval-answer-v1\n2:id\n7:approve\n5:alice\n1:h\n"
    );
}

/// The signature is the lower-case hex HMAC-SHA256 of the signed text (a known vector,
/// computed independently), so any signer that follows docs can produce it.
#[test]
fn the_signature_is_hex_hmac_sha256_of_the_signed_text() {
    let sig = key().sign("id", "approve", "alice", "h");
    assert_eq!(sig, "6e27eaffe21acd72d8da6292172d312e4e75fb06c8c09586985937820617c774");
    assert!(key().verify("id", "approve", "alice", "h", &sig));
    assert!(
        key().verify("id", "approve", "alice", "h", &sig.to_uppercase()),
        "hex in any case"
    );
    // Not hex, odd length, not ASCII (a multi-byte character is never split), truncated: refused,
    // never a panic.
    for bad in [
        &sig[..63],
        &sig[..62],
        "",
        "zz",
        &"é".repeat(32),
        &format!("{}é", &sig[..62]),
        // A two-byte pair would cut the 'é' in half.
        &format!("aéa{}", &sig[..60]),
    ] {
        assert!(!key().verify("id", "approve", "alice", "h", bad), "{bad:?}");
    }
}

/// The key comes from the environment first, then the file; an error names the one it came
/// from (never the key). The variable's value is passed in: a test never changes the
/// process environment other threads read.
#[test]
fn the_key_is_loaded_from_the_env_then_the_file_and_errors_name_the_source() {
    let dir = std::env::temp_dir().join(format!("remediator-key-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short");
    std::fs::write(&short, "tiny\n").unwrap();
    let long = dir.join("long");
    std::fs::write(&long, format!("{KEY}\n")).unwrap();
    let (short, long) = (short.to_str().unwrap(), long.to_str().unwrap());
    let e = AnswerKey::load_from(None, "").unwrap_err();
    assert_eq!(
        e,
        "REMEDIATOR_APPROVAL_HMAC_KEY (or approvals.hmac_key_file) is not set"
    );
    let e = AnswerKey::load_from(None, short).unwrap_err();
    assert!(e.starts_with(&format!("approvals.hmac_key_file {short}: ")), "{e}");
    let from_file = AnswerKey::load_from(None, long).unwrap();
    assert!(from_file.verify("i", "approve", "a", "h", &key().sign("i", "approve", "a", "h")));
    // The environment wins over the file, and an error then names the variable.
    let e = AnswerKey::load_from(Some("tiny"), long).unwrap_err();
    assert!(e.starts_with("REMEDIATOR_APPROVAL_HMAC_KEY: "), "{e}");
    assert!(
        AnswerKey::load_from(Some("  "), long).is_ok(),
        "a blank variable counts as unset"
    );
    let from_env = AnswerKey::load_from(Some(&format!(" {KEY} ")), short).unwrap();
    assert!(from_env.verify("i", "approve", "a", "h", &key().sign("i", "approve", "a", "h")));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A message on the approvals topic: approve and deny mean what they say, and only once
/// the signature verifies; anything else is refused with the reason.
#[test]
fn a_topic_message_is_an_answer_only_when_signed_and_well_formed() {
    for approve in [true, false] {
        let m = key().signed_message("a1", approve, "alice", "h1");
        let (id, answer) = read_answer(Some(&serde_json::to_vec(&m).unwrap()), &key()).unwrap();
        assert_eq!(id, "a1");
        assert_eq!(answer.approve, approve);
        assert_eq!(answer.approver, "alice");
        assert_eq!(answer.action_hash.as_deref(), Some("h1"));
    }
    let mut forged = key().signed_message("a1", false, "alice", "h1");
    forged.decision = "approve".into();
    match read_answer(Some(&serde_json::to_vec(&forged).unwrap()), &key()) {
        Err(Refusal::Unauthenticated(m, why)) => {
            assert_eq!(m.approval_id, "a1");
            assert_eq!(why, "signature does not verify (unauthenticated answer)");
        }
        other => panic!("a changed decision must not verify: {other:?}"),
    }
    let mut odd = key().signed_message("a1", true, "alice", "h1");
    odd.decision = "maybe".into();
    for (payload, why) in [
        (None, "empty message".to_string()),
        (
            Some(b"{".to_vec()),
            "not an approval answer: EOF while parsing an object at line 1 column 1".into(),
        ),
        (
            Some(serde_json::to_vec(&odd).unwrap()),
            r#"decision must be approve or deny, got "maybe""#.into(),
        ),
    ] {
        match read_answer(payload.as_deref(), &key()) {
            Err(Refusal::Malformed(got)) => assert_eq!(got, why),
            other => panic!("{payload:?}: {other:?}"),
        }
    }
}

/// `remediator approve ID`: the id becomes a URL path segment, so anything that could leave
/// the segment is refused before a request is made.
#[tokio::test]
async fn the_client_refuses_an_id_that_could_leave_its_path_segment() {
    let body = AnswerBody {
        approver: "alice".into(),
        action_hash: None,
    };
    // Port 9 (discard) on loopback: nothing answers, so a request that is made fails to connect.
    let url = "http://127.0.0.1:9";
    for id in ["", "../../v1/x", "a/b", "a b", "a?x=1", "é"] {
        let e = client_answer(url, "t", id, true, &body).await.unwrap_err();
        assert_eq!(e, format!("approval id {id:?} must be letters, digits and '-'"));
    }
    let e = client_answer(url, "t", "Ab-09", false, &body).await.unwrap_err();
    assert!(e.starts_with("http://127.0.0.1:9/v1/approvals/Ab-09/deny: "), "{e}");
}

/// Debug output (config dumps, logs) never shows the key.
#[test]
fn the_key_never_appears_in_debug_output() {
    assert_eq!(format!("{:?}", key()), "AnswerKey(..)");
}

#[test]
fn short_keys_are_refused_without_showing_them() {
    let e = AnswerKey::new("short", "REMEDIATOR_APPROVAL_HMAC_KEY").unwrap_err();
    assert!(
        e.contains("REMEDIATOR_APPROVAL_HMAC_KEY") && e.contains("at least 32 bytes"),
        "{e}"
    );
    assert!(!e.contains("short\""), "{e}");
}

#[test]
fn secrets_compare_equal_only_when_equal() {
    assert!(same_secret("s3cret", "s3cret"));
    assert!(!same_secret("s3cret", "s3creT"));
    assert!(!same_secret("s3cret", "s3cret-longer"));
    assert!(!same_secret("", "x"));
}

mod api {
    //! The HTTP API and the answer task, in process: a memory store (or one that is down), and
    //! a publisher whose broker is never reached (nothing here is published).

    use super::super::*;
    use crate::clock::SystemClock;
    use crate::engine::{EventIds, Settings};
    use crate::executor::simulated::SimulatedExecutor;
    use crate::guardrails::memory::MemoryStore;
    use crate::guardrails::{
        AnswerResult, CircuitSnapshot, DecideAnswer, DecideRequest, FinishAnswer, FinishRequest, GuardrailStore,
        LedgerStore, PendingSummary, RenewRequest, Renewal, Store, StoreError, TrustStats,
    };
    use crate::metrics::Metrics;
    use crate::runbook::Catalogue;
    use std::time::Instant;

    const TOKEN: &str = "s3cret-token";

    fn engine(store: Arc<dyn Store>) -> Arc<Engine> {
        let catalogue = Catalogue::from_yaml(include_str!("../../config/runbooks.yaml"), "config/runbooks.yaml")
            .expect("the shipped catalogue loads");
        Arc::new(Engine::new(
            Arc::new(catalogue),
            store,
            Arc::new(SimulatedExecutor::new()),
            Arc::new(SystemClock),
            Settings::default(),
            Metrics::new(),
            EventIds::Random,
        ))
    }

    /// A producer that is never used: creating one does not connect.
    fn publisher() -> Publisher {
        Publisher::new(&KafkaSettings {
            brokers: "127.0.0.1:9".into(),
            ..KafkaSettings::default()
        })
        .expect("a producer is created without a broker")
    }

    /// Serve the API's routes on a free local port; the base URL.
    async fn serve(api: Api) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let routes = Arc::new(api).routes();
        tokio::spawn(async move { axum::serve(listener, routes).await });
        url
    }

    /// The API over a memory store holding a pending approval for each of `ids` (for a runbook
    /// the catalogue lacks, so an approval aborts without running anything), publishing to an
    /// embedded mock broker. Keep the broker and the trigger alive while the URL is used.
    async fn serve_with_pending(
        ids: &[&str],
    ) -> (
        rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        crate::shutdown::Trigger,
        String,
    ) {
        let broker = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        let settings = KafkaSettings {
            brokers: broker.bootstrap_servers(),
            ..KafkaSettings::default()
        };
        broker.create_topic(&settings.outcomes_topic, 1, 1).expect("topic");
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
        for id in ids {
            let pending = Approval {
                id: id.to_string(),
                incident_id: format!("inc-{id}"),
                runbook: "no-such-runbook".into(),
                action_hash: "h".into(),
                action: "nothing".into(),
                incident: "{}".into(),
                created_at_ms: 0,
                expires_at_ms: 0,
                state: crate::guardrails::ApprovalState::Pending,
                approver: None,
                group: String::new(),
            };
            store.create_approval(&pending, 60_000).await.expect("approval stored");
        }
        let (trigger, tasks) = crate::shutdown::channel();
        let to_broker = Publisher::new(&settings).expect("producer");
        let url = serve(Api::new(
            engine(store),
            to_broker,
            identity::Gate::token(TOKEN.into()),
            tasks,
        ))
        .await;
        (broker, trigger, url)
    }

    /// Only the configured bearer token reads or answers approvals; the list answers with it.
    #[tokio::test]
    async fn the_api_answers_only_the_right_bearer_token() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
        let (_trigger, tasks) = crate::shutdown::channel();
        let url = serve(Api::new(
            engine(store),
            publisher(),
            identity::Gate::token(TOKEN.into()),
            tasks,
        ))
        .await;
        let client = reqwest::Client::new();
        let list = format!("{url}/v1/approvals");
        for auth in [
            None,
            Some("Bearer wrong-token"),
            Some(TOKEN),
            Some("Bearer s3cret-toke"),
        ] {
            let mut req = client.get(&list);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.expect("the API answers");
            assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        }
        let r = client
            .post(format!("{url}/v1/approvals/a1/approve"))
            .header("authorization", "Bearer wrong-token")
            .json(&serde_json::json!({"approver": "mallory"}))
            .send()
            .await
            .expect("the API answers");
        assert_eq!(r.status().as_u16(), 401, "an answer needs the token too");
        let r = client
            .get(&list)
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .await
            .expect("the API answers");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.text().await.expect("body"), "[]", "no approval pending");
    }

    /// Answers over HTTP with the token: an approval is approved or denied as the route says
    /// (200, the store's verdict and the outcomes, published to a mock broker); an unknown one is
    /// refused (409); with the store down, the list and the answers are 503.
    #[tokio::test]
    async fn answers_over_http_take_the_route_s_decision_and_refusals_are_conflicts() {
        let (_broker, _trigger, url) = serve_with_pending(&["a-approve", "a-deny"]).await;
        let client = reqwest::Client::new();
        let answer = |route: String| {
            client
                .post(format!("{url}/v1/approvals/{route}"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .json(&serde_json::json!({"approver": "alice"}))
                .send()
        };
        let r = answer("a-deny/deny".into()).await.expect("answered");
        assert_eq!(r.status().as_u16(), 200);
        let reply: AnswerReply = r.json().await.expect("a reply");
        assert_eq!((reply.accepted, reply.reason.as_str()), (true, "denied"));
        let r = answer("a-approve/approve".into()).await.expect("answered");
        assert_eq!(r.status().as_u16(), 200);
        let reply: AnswerReply = r.json().await.expect("a reply");
        assert_eq!((reply.accepted, reply.reason.as_str()), (true, "approved"));
        assert!(!reply.outcomes.is_empty(), "the answer is audited");
        let r = answer("nobody/approve".into()).await.expect("answered");
        assert_eq!(r.status().as_u16(), 409, "an unknown approval is refused");
        let reply: AnswerReply = r.json().await.expect("a reply");
        assert!(
            !reply.accepted && reply.reason.contains("does not exist"),
            "{}",
            reply.reason
        );

        let (_trigger, tasks) = crate::shutdown::channel();
        let url = serve(Api::new(
            engine(Arc::new(Down)),
            publisher(),
            identity::Gate::token(TOKEN.into()),
            tasks,
        ))
        .await;
        let r = client
            .get(format!("{url}/v1/approvals"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send()
            .await
            .expect("the API answers");
        assert_eq!(r.status().as_u16(), 503, "the store is down");
        assert!(r.text().await.expect("body").contains("store down (test)"));
    }

    /// `remediator approvals` and `approve|deny` as a user runs them: the pending list with the
    /// token, an answer through the client; a wrong token is an error naming the HTTP status.
    #[tokio::test]
    async fn the_command_line_client_lists_and_answers_through_the_api() {
        let (_broker, _trigger, url) = serve_with_pending(&["a-1"]).await;

        let listed = client_pending(&url, TOKEN).await.expect("listed");
        assert_eq!(listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["a-1"]);
        let e = client_pending(&url, "wrong").await.expect_err("a wrong token");
        assert!(e.contains("HTTP 401"), "{e}");

        let body = AnswerBody {
            approver: "alice".into(),
            action_hash: None,
        };
        let e = client_answer(&url, "wrong", "a-1", false, &body)
            .await
            .expect_err("a wrong token");
        assert!(e.contains("HTTP 401"), "{e}");
        let reply = client_answer(&url, TOKEN, "a-1", false, &body).await.expect("answered");
        assert_eq!((reply.accepted, reply.reason.as_str()), (true, "denied"));
        assert!(
            client_pending(&url, TOKEN).await.expect("listed").is_empty(),
            "answered: no longer pending"
        );
    }

    /// A store that is down.
    struct Down;

    fn down<T>() -> Result<T, StoreError> {
        Err(StoreError::Unavailable("store down (test)".into()))
    }

    #[async_trait::async_trait]
    impl GuardrailStore for Down {
        async fn decide(&self, _: &DecideRequest) -> Result<DecideAnswer, StoreError> {
            down()
        }
        async fn renew(&self, _: &RenewRequest) -> Result<Renewal, StoreError> {
            down()
        }
        async fn finish(&self, _: &FinishRequest) -> Result<FinishAnswer, StoreError> {
            down()
        }
        async fn record(&self, _: &str, _: &str, _: &str, _: u64) -> Result<(), StoreError> {
            down()
        }
        async fn circuit(&self, _: &str) -> Result<CircuitSnapshot, StoreError> {
            down()
        }
        async fn ping(&self) -> Result<(), StoreError> {
            down()
        }
    }

    #[async_trait::async_trait]
    impl LedgerStore for Down {
        async fn create_approval(&self, _: &Approval, _: u64) -> Result<Approval, StoreError> {
            down()
        }
        async fn answer_approval(&self, _: &str, _: &Answer) -> Result<AnswerResult, StoreError> {
            down()
        }
        async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
            down()
        }
        async fn pending_summary(&self) -> Result<PendingSummary, StoreError> {
            down()
        }
        async fn record_trust(&self, _: &str, _: bool, _: u32) -> Result<TrustStats, StoreError> {
            down()
        }
        async fn trust(&self, _: &str, _: u32) -> Result<TrustStats, StoreError> {
            down()
        }
        async fn demote(&self, _: &str, _: &str) -> Result<bool, StoreError> {
            down()
        }
        async fn demotion(&self, _: &str) -> Result<Option<String>, StoreError> {
            down()
        }
        async fn promote(&self, _: &str) -> Result<bool, StoreError> {
            down()
        }
        async fn rollout(
            &self,
            _: &str,
            _: &crate::rollout::RolloutPolicy,
        ) -> Result<crate::rollout::RolloutRecord, StoreError> {
            down()
        }
        async fn rollout_apply(
            &self,
            _: &str,
            _: &crate::rollout::RolloutPolicy,
            _: crate::rollout::Transition,
            _: &str,
        ) -> Result<Result<crate::rollout::RolloutRecord, crate::rollout::PromoteRefusal>, StoreError> {
            down()
        }
    }

    /// While the store is down an answer is tried again until its deadline (waits of 500 ms,
    /// then 1 s: three tries in 1.5 s for a 1.2 s deadline), then given up with the store's error;
    /// never given up at once, never retried for ever.
    #[tokio::test]
    async fn an_answer_is_retried_while_the_store_is_down_until_its_deadline() {
        let (_trigger, tasks) = crate::shutdown::channel();
        let answer = Answer {
            approve: true,
            approver: "alice".into(),
            action_hash: None,
        };
        let started = Instant::now();
        let within = Duration::from_millis(1200);
        let task = answer_and_publish(&tasks, engine(Arc::new(Down)), publisher(), "a1".into(), answer, within);
        let result = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("given up at its deadline, not retried for ever");
        let took = started.elapsed();
        let e = result.expect_err("the store never answered");
        assert!(e.contains("store down (test)"), "{e}");
        assert!(
            took >= within && took < Duration::from_secs(4),
            "retried until the deadline, then stopped: {took:?}"
        );
    }
}
