//! Errors that must not be retried, and the deadline.

mod common;

use std::time::{Duration, Instant};

use common::{busy, region_error, test_config, Answer, MockCluster};
use shoal_client::{Client, ClientConfig, Error, Failure};
use shoal_proto::errorpb::{region_error::Kind, EntryTooLarge};
use tonic::Code;

#[tokio::test]
async fn invalid_argument_is_returned_without_retry() {
    let cluster = MockCluster::start(1, &[], &[1]).await;
    let client = cluster.client().await;
    cluster.script(
        None,
        Some("put"),
        usize::MAX,
        Answer::Status(
            Code::InvalidArgument,
            "value too large: 9 MiB > 8 MiB".into(),
        ),
    );
    let err = client.put("k", "v").await.unwrap_err();
    match &err {
        Error::Rejected {
            code,
            message,
            request,
            ..
        } => {
            assert_eq!(*code, Code::InvalidArgument);
            assert_eq!(message, "value too large: 9 MiB > 8 MiB");
            assert_eq!(request.op, "put");
            assert_eq!(request.key.as_deref(), Some(b"k".as_slice()));
            assert_eq!(request.region_id, Some(1));
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(cluster.requests("put").len(), 1, "no retry");
}

#[tokio::test]
async fn entry_too_large_is_returned_without_retry() {
    let cluster = MockCluster::start(1, &[], &[1]).await;
    let client = cluster.client().await;
    cluster.script(
        None,
        Some("put"),
        usize::MAX,
        region_error(Kind::EntryTooLarge(EntryTooLarge {
            region_id: 1,
            entry_size: 1 << 30,
        })),
    );
    let err = client.put("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Region { store_id: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("EntryTooLarge"), "{err}");
    assert_eq!(cluster.requests("put").len(), 1);
}

#[tokio::test]
async fn busy_a_few_times_then_success() {
    let cluster = MockCluster::start(1, &[], &[1]).await;
    let client = cluster.client().await;
    cluster.script(None, Some("get"), 3, busy());
    assert_eq!(client.get("k").await.unwrap(), None);
    let outcomes: Vec<_> = cluster.requests("get").iter().map(|l| l.outcome).collect();
    assert_eq!(
        outcomes,
        ["ServerIsBusy", "ServerIsBusy", "ServerIsBusy", "ok"]
    );
}

#[tokio::test]
async fn an_always_busy_server_fails_at_the_deadline() {
    let cluster = MockCluster::start(1, &[], &[1]).await;
    let config = ClientConfig {
        request_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let client = Client::connect(cluster.endpoints(), config).await.unwrap();
    cluster.script(None, Some("put"), usize::MAX, busy());

    let started = Instant::now();
    let err = client.put("k", "v").await.unwrap_err();
    let elapsed = started.elapsed();

    let Error::DeadlineExceeded { attempts, last, .. } = &err else {
        panic!("expected DeadlineExceeded, got {err:?}");
    };
    assert!(*attempts > 1, "retried before giving up");
    let Failure::Region { error, .. } = last.as_ref() else {
        panic!("expected the last failure to be a region error, got {last:?}");
    };
    assert!(
        matches!(error.kind, Some(Kind::ServerIsBusy(_))),
        "{error:?}"
    );
    assert_eq!(err.last_failure(), Some(last.as_ref()));
    assert!(err.is_retryable());
    assert!(err.to_string().contains("ServerIsBusy"), "{err}");
    // Generous slack: only checks that the deadline bounds the call at all.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}
