//! The Pub/Sub health probe (src/probe.rs) is the worker's one call into
//! the official crates' internal transport crate, `google-cloud-gax-internal`,
//! pinned exactly in Cargo.toml. This test is what fails loudly when an
//! upgrade breaks it: a changed API fails this file's build (it calls the
//! probe directly), and a call that still builds but no longer answers as
//! the worker reads it fails here against the real emulator, before any
//! worker test has to be puzzled out.

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use pubsub_gcs_worker::config::Endpoint;
use pubsub_gcs_worker::probe::PubsubProbe;
use pubsub_gcs_worker::Kind;
use rinit_test_support::free_port;
use rinit_test_support::worker::{TestEnv, PROJECT};

/// One probe of `subscription` (short name) at `url`.
async fn check(url: &str, subscription: &str) -> Result<(), (Kind, String)> {
    let probe = PubsubProbe::new(
        &Endpoint::Emulator(url.to_string()),
        Anonymous::new().build(),
        format!("projects/{PROJECT}/subscriptions/{subscription}"),
    )
    .await
    .expect("the probe's client builds");
    probe.check().await
}

/// An existing subscription answers (the emulator, like Pub/Sub, refuses
/// the empty ModifyAckDeadline only after finding the subscription); a
/// missing one is NOT_FOUND; a closed port is a refused connection.
#[test]
fn the_probe_answers_as_the_worker_reads_it() {
    let Some(env) = TestEnv::start_with("topic-p", "sub-p", "bucket-p") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        assert_eq!(check(&env.pubsub_url(), "sub-p").await, Ok(()));
        match check(&env.pubsub_url(), "sub-none").await {
            Err((Kind::NotFound, _)) => {}
            other => panic!("a missing subscription is NOT_FOUND, got {other:?}"),
        }
        let closed = format!("http://127.0.0.1:{}", free_port());
        match check(&closed, "sub-p").await {
            Err((Kind::ConnectionRefused, _)) => {}
            other => panic!("a closed port is a refused connection, got {other:?}"),
        }
    });
}
