//! The clients, built before the first pull: Pub/Sub's subscriber and its
//! health probe (sharing one set of credentials), and Cloud Storage's.

use crate::config::{Config, Endpoint};
use crate::health::describe;
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

/// Why a client could not be built, in one line. The usual cause is named
/// outright: the Cloud Storage client builds its TLS verifier when it is
/// built, whatever the endpoint's scheme (the plain-HTTP emulators too), and
/// that verifier refuses to exist without CA certificates, while the
/// library's own message says only "could not initialize transport client".
/// No public option of the client skips that step, so the worker cannot
/// avoid it; it can say what to do.
fn cannot_create(service: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let roots = rustls_native_certs::load_native_certs();
    if roots.certs.is_empty() {
        let why: Vec<String> = roots.errors.iter().map(ToString::to_string).collect();
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join("; "))
        };
        return format!(
            "cannot create the {service} client: no CA certificates found{why}; install a CA \
             bundle at /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates) or point \
             SSL_CERT_FILE at one: the client loads it at start, even for a plain-HTTP emulator \
             ({})",
            describe(e)
        );
    }
    format!("cannot create the {service} client: {}", describe(e))
}
