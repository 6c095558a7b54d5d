//! The Pub/Sub health probe: the one module that uses the official crates'
//! internal transport crate (`google-cloud-gax-internal`, `gaxi` here).
//!
//! Why the internal crate: google-cloud-pubsub 1.7 has no public unary
//! data-plane call (its Subscriber only streams; ModifyAckDeadline and
//! Acknowledge are crate-private), and the public admin calls either need
//! a role the worker does not otherwise need (GetSubscription: a viewer
//! role) or change state (Seek). The dependency is pinned exactly in
//! Cargo.toml (`=0.7.21`, the version google-cloud-pubsub itself uses), so
//! an upgrade of the Google crates cannot change this call unnoticed:
//! cargo refuses to resolve until the pin is moved, and tests/probe.rs
//! checks that the call still compiles and answers against the emulator.
//! NOTES.md ("the health probe") has the alternatives weighed.

use crate::config::Endpoint;
use crate::health::{assess, describe, describe_call, Health, Kind, PUBSUB_URL};
use gaxi::grpc::tonic::{Extensions, GrpcMethod};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A probe unanswered this long counts as a failure (a black hole).
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// `google.pubsub.v1.ModifyAckDeadlineRequest`, the fields the probe sets.
#[derive(Clone, PartialEq, prost::Message)]
struct ModifyAckDeadlineRequest {
    #[prost(string, tag = "1")]
    subscription: String,
    #[prost(int32, tag = "3")]
    ack_deadline_seconds: i32,
    #[prost(string, repeated, tag = "4")]
    ack_ids: Vec<String>,
}

/// A gRPC call to Pub/Sub that changes nothing: ModifyAckDeadline with no
/// ack IDs. It needs only the subscriber role (`subscriptions.consume`, as
/// the stream does), and Pub/Sub checks credentials, permission and the
/// subscription before it refuses the empty list with INVALID_ARGUMENT,
/// which therefore means "usable". It travels the stream's own path: the
/// same transport, endpoint resolution, TLS roots and credentials.
pub struct PubsubProbe {
    client: gaxi::grpc::Client,
    subscription: String,
}

impl PubsubProbe {
    /// A probe of `subscription` (its full name) using the subscriber's
    /// credentials (one token cache).
    pub async fn new(
        endpoint: &Endpoint,
        credentials: google_cloud_auth::credentials::Credentials,
        subscription: String,
    ) -> Result<PubsubProbe, String> {
        let mut config = gaxi::options::ClientConfig::default();
        if let Endpoint::Emulator(url) = endpoint {
            config.endpoint = Some(url.clone());
        }
        config.cred = Some(credentials);
        let client = gaxi::grpc::Client::new(config, PUBSUB_URL)
            .await
            .map_err(|e| format!("cannot create the Pub/Sub probe: {}", describe(&e)))?;
        Ok(PubsubProbe {
            client,
            subscription,
        })
    }

    /// One probe: `Ok` when Pub/Sub answered as a usable service would,
    /// else what went wrong and the error's text.
    pub async fn check(&self) -> Result<(), (Kind, String)> {
        let mut extensions = Extensions::new();
        extensions.insert(GrpcMethod::new(
            "google.pubsub.v1.Subscriber",
            "ModifyAckDeadline",
        ));
        let mut options = google_cloud_gax::options::RequestOptions::default();
        options.set_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
        options.set_attempt_timeout(PROBE_TIMEOUT);
        let request = ModifyAckDeadlineRequest {
            subscription: self.subscription.clone(),
            ack_deadline_seconds: 0,
            ack_ids: Vec::new(),
        };
        let params = format!("subscription={}", self.subscription);
        let call = self.client.execute::<_, ()>(
            extensions,
            http::uri::PathAndQuery::from_static("/google.pubsub.v1.Subscriber/ModifyAckDeadline"),
            request,
            options,
            "gl-rust/pubsub-gcs-worker",
            &params,
        );
        match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Err(_) => Err((Kind::Timeout, format!("no answer within {PROBE_TIMEOUT:?}"))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => match assess(&e) {
                None => Ok(()),
                Some(kind) => Err((kind, describe_call(&e))),
            },
        }
    }
}

/// Starts probing Pub/Sub for the life of the process, reporting to
/// `health`. The receiver yields once, how long Pub/Sub had been unusable,
/// when that reaches `give_up_after` (the caller exits 1).
pub fn watch(
    probe: PubsubProbe,
    health: Arc<Health>,
    give_up_after: Duration,
) -> mpsc::Receiver<Duration> {
    let (give_up_tx, give_up) = mpsc::channel(1);
    tokio::spawn(async move {
        let down = probe_until_given_up(&probe, &health, give_up_after).await;
        let _ = give_up_tx.send(down).await;
    });
    give_up
}

/// Probes until Pub/Sub has been unusable for `give_up_after`, then returns
/// how long that was. Never returns while Pub/Sub answers.
async fn probe_until_given_up(
    probe: &PubsubProbe,
    health: &Health,
    give_up_after: Duration,
) -> Duration {
    loop {
        match probe.check().await {
            Ok(()) => health.success(),
            Err((kind, error)) => health.failure(kind, &error),
        }
        let mut wait = health.next_probe_in();
        if let Some(down) = health.down_for() {
            if down >= give_up_after {
                return down;
            }
            wait = wait.min(give_up_after - down);
        }
        tokio::time::sleep(wait).await;
    }
}
