//! The clients, built before the first pull: Pub/Sub's subscriber and its
//! health probe (sharing one set of credentials), and Cloud Storage's.

use crate::config::{Config, Endpoint};
use crate::probe::PubsubProbe;
use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::Subscriber;
use google_cloud_storage::client::Storage;

/// What the worker talks to.
pub struct Clients {
    pub subscriber: Subscriber,
    pub storage: Storage,
    /// Shares the subscriber's credentials: one token cache, one refresh.
    pub probe: PubsubProbe,
}

/// Builds the clients: Application Default Credentials for Google's
/// endpoints, anonymous ones for an emulator.
pub async fn build(cfg: &Config) -> Result<Clients, String> {
    let credentials = match &cfg.pubsub_endpoint {
        Endpoint::Google => google_cloud_auth::credentials::Builder::default()
            .build()
            .map_err(|e| format!("cannot find credentials for Pub/Sub: {e}"))?,
        Endpoint::Emulator(_) => Anonymous::new().build(),
    };
    let builder = Subscriber::builder().with_credentials(credentials.clone());
    let subscriber = match &cfg.pubsub_endpoint {
        Endpoint::Google => builder.build().await,
        Endpoint::Emulator(url) => builder.with_endpoint(url.clone()).build().await,
    }
    .map_err(|e| cannot_create("Pub/Sub", &e))?;
    let probe =
        PubsubProbe::new(&cfg.pubsub_endpoint, credentials, cfg.subscription.clone()).await?;
    // Retries are ours (bounded, drain-aware, see store.rs), so the library
    // makes exactly one attempt per call.
    let builder = Storage::builder().with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
    let storage = match &cfg.storage_endpoint {
        Endpoint::Google => builder.build().await,
        Endpoint::Emulator(url) => {
            builder
                .with_endpoint(url.clone())
                .with_credentials(Anonymous::new().build())
                .build()
                .await
        }
    }
    .map_err(|e| cannot_create("Cloud Storage", &e))?;
    Ok(Clients {
        subscriber,
        storage,
        probe,
    })
}

/// Why a client could not be built, in one line.
fn cannot_create(service: &str, e: &dyn std::fmt::Display) -> String {
    format!("cannot create the {service} client: {e}")
}
