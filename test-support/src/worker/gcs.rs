//! The GCS emulator's REST API, as the tests use it: buckets, listing and
//! reading objects, and the check that a bucket holds every message exactly
//! once.

use super::emulators::{TestEnv, PROJECT};
use super::TestMessage;
use crate::eventually_every;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// An object as listed by the GCS emulator.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
}

impl TestEnv {
    pub(super) fn create_bucket_inner(&self, name: &str) {
        self.call_ok(
            reqwest::Method::POST,
            &format!("{}/storage/v1/b?project={PROJECT}", self.gcs_url()),
            Some(json!({ "name": name })),
        );
    }

    pub fn create_bucket(&mut self, name: &str) {
        self.create_bucket_inner(name);
        self.buckets.push(name.to_string());
    }

    /// Lists every object of a bucket (all pages).
    pub fn list_objects(&self, bucket: &str) -> Vec<ObjectInfo> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/storage/v1/b/{bucket}/o?maxResults=1000", self.gcs_url());
            if let Some(t) = &token {
                url.push_str(&format!("&pageToken={}", encode(t)));
            }
            let v = self.call_ok(reqwest::Method::GET, &url, None);
            for o in v["items"].as_array().into_iter().flatten() {
                out.push(ObjectInfo {
                    name: o["name"].as_str().unwrap_or_default().to_string(),
                    size: o["size"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .or_else(|| o["size"].as_u64())
                        .unwrap_or(0),
                    content_type: o["contentType"].as_str().map(String::from),
                    metadata: serde_json::from_value(o["metadata"].clone()).unwrap_or_default(),
                });
            }
            match v["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        out
    }

    /// Waits until `bucket` holds at least `count` objects; panics, saying
    /// how many it holds, after `timeout`.
    pub fn wait_objects(&self, bucket: &str, count: usize, timeout: Duration) {
        if !self.has_objects_within(bucket, count, timeout) {
            let have = self.list_objects(bucket).len();
            panic!("only {have} of {count} objects in {bucket} after {timeout:?}");
        }
    }

    /// Whether `bucket` holds at least `count` objects within `timeout`,
    /// for a caller that asserts later. Polls every 200 ms, so that a stop
    /// sent once some objects are stored lands while work is in flight;
    /// every 500 ms for a thousand objects or more, whose listing is
    /// several requests.
    pub fn has_objects_within(&self, bucket: &str, count: usize, timeout: Duration) -> bool {
        let every = Duration::from_millis(if count < 1000 { 200 } else { 500 });
        eventually_every(timeout, every, || self.list_objects(bucket).len() >= count)
    }

    /// Reads an object's bytes.
    pub fn read_object(&self, bucket: &str, name: &str) -> Vec<u8> {
        let url = format!(
            "{}/storage/v1/b/{bucket}/o/{}?alt=media",
            self.gcs_url(),
            encode(name)
        );
        self.rt.block_on(async {
            let r = self.http.get(&url).send().await.expect("GET object");
            assert!(r.status().is_success(), "GET {url} -> {}", r.status());
            r.bytes().await.expect("object body").to_vec()
        })
    }

    /// Creates an object directly (plain media upload, no precondition).
    pub fn upload_object(&self, bucket: &str, name: &str, data: &[u8]) {
        let url = format!(
            "{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
            self.gcs_url(),
            encode(name)
        );
        self.rt.block_on(async {
            let r = self
                .http
                .post(&url)
                .header("content-type", "application/octet-stream")
                .body(data.to_vec())
                .send()
                .await
                .expect("upload");
            assert!(r.status().is_success(), "upload {name} -> {}", r.status());
        });
    }

    /// How far `bucket` is from one object per message of `ids`: published
    /// IDs with no object (lost), and objects that are no published ID
    /// (extra). For reports; [`TestEnv::assert_stored_exactly_once`] checks.
    pub fn lost_and_extra(&self, bucket: &str, ids: &[String]) -> (usize, usize) {
        let names: BTreeSet<String> = self
            .list_objects(bucket)
            .into_iter()
            .map(|o| o.name)
            .collect();
        let published: BTreeSet<&String> = ids.iter().collect();
        let lost = published.iter().filter(|id| !names.contains(**id)).count();
        let extra = names.iter().filter(|n| !published.contains(n)).count();
        (lost, extra)
    }

    /// Every published message (`ids[i]` is `msgs[i]`) stored exactly once:
    /// one object per message ID and no other, with the payload's bytes, the
    /// worker's metadata (message ID, publish time) and the attributes; and
    /// nothing left to deliver on `sub`.
    pub fn assert_stored_exactly_once(
        &self,
        bucket: &str,
        sub: &str,
        ids: &[String],
        msgs: &[TestMessage],
    ) {
        let objects = self.list_objects(bucket);
        let names: BTreeSet<_> = objects.iter().map(|o| o.name.clone()).collect();
        let want: BTreeSet<_> = ids.iter().cloned().collect();
        assert_eq!(want.len(), ids.len(), "message IDs are unique");
        assert_eq!(objects.len(), ids.len(), "exactly one object per message");
        assert_eq!(names, want, "the objects are the published messages");
        let by_name: HashMap<_, _> = objects.iter().map(|o| (o.name.as_str(), o)).collect();
        for (id, m) in ids.iter().zip(msgs) {
            let o = by_name[id.as_str()];
            assert_eq!(o.size, m.data.len() as u64, "size of {id}");
            assert!(self.read_object(bucket, id) == m.data, "bytes of {id}");
            assert_eq!(o.metadata.get("pubsub-message-id"), Some(id), "{o:?}");
            assert!(o.metadata.contains_key("pubsub-publish-time"), "{o:?}");
            for (k, v) in &m.attributes {
                let key = format!("pubsub-attr-{k}");
                assert_eq!(o.metadata.get(&key), Some(v), "{key} of {id}: {o:?}");
            }
        }
        assert_eq!(
            self.remaining_message_ids(sub),
            Vec::<String>::new(),
            "subscription drained"
        );
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
