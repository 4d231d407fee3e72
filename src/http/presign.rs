//! Presigned uploads (S3 store): `POST /api/uploads` hands a client a
//! short-lived URL to PUT one file straight into the bucket, bound to a
//! server-made staging key (`incoming/<id>.<ext>`), the declared kind and
//! the exact declared size; `POST /api/uploads/{id}/complete` then has the
//! store copy it to `<id>.<ext>`, a key no URL can write, and checks that
//! copy (its size, and its kind judged from its first bytes, all of them
//! for text) before the upload counts: the answer is the one `POST /upload`
//! gives, so a message attaches it the same way. What fails the checks is
//! deleted. The URL works until it expires, but a later PUT only rewrites
//! the staging key, which the sweep deletes.
//! `DELETE /api/uploads/{id}` gives an upload up before it is completed
//! (its PUT failed, or the person removed the file): its place and the
//! bytes it charged come back at once, not when it would expire.
//!
//! Uploads handed out and not yet completed are held here, bounded per
//! client (its token's user, else its address) and in all; an entry lives
//! as long as its URL plus the upload timeout, then is forgotten. Their
//! objects carry the store's unattached marker from the start, so the sweep
//! deletes any never completed, even across restarts. The entries are this
//! instance's: `complete` and `DELETE` must reach the instance that
//! presigned. Whoever takes an entry out of the map owns the upload: a
//! `complete` holds it while the bucket copies and checks (putting it back
//! if that can be retried), so a `DELETE` meanwhile finds nothing, and a
//! `DELETE` takes it for good, so a later `complete` finds nothing; the
//! bytes come back only with the entry, so at most once.
//!
//! A client may go away mid-request, and hyper then drops the handler's
//! future wherever it waits: code after an `await` may never run. So what
//! a request holds is held by a guard that gives it back when dropped: an
//! ask's place and bytes ([`Place`]), a taken upload ([`Taken`]). The
//! failure paths let the guards act too, so there is one way back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, UNIX_EPOCH};

use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::client_addr::client_ip;
use super::rate_limit::Charge;
use super::upload::{UploadAnswer, Uploads, human_bytes, storage_unavailable};
use super::{Body, PeerAddr};
use crate::config::Config;
use crate::media::s3::{self, CompleteError};
use crate::media::{DisplayName, Kind, StoredName};
use crate::metrics::Metrics;

/// Largest `POST /api/uploads` body.
const MAX_REQUEST_BYTES: usize = 4096;
/// How long that body may take to arrive.
const READ_TIME: Duration = Duration::from_secs(10);

/// What `POST /api/uploads` asks for, as sent. Other fields are ignored.
#[derive(serde::Deserialize)]
struct AskRaw {
    name: Option<String>,
    size: u64,
    content_type: String,
}

/// One upload handed out, waiting for `complete`.
#[derive(Debug)]
struct Pending {
    size: u64,
    display_name: DisplayName,
    owner: Option<String>,
    client: String,
    forget_at: Instant,
    /// The declared size, as charged to the asking address's bytes for
    /// the hour; given back if the upload is cancelled.
    charge: Charge,
}

/// Why `complete` or `DELETE` cannot have an upload.
enum NotWaiting {
    /// None waits with that id (completed or cancelled already, being
    /// completed, expired, another instance's, or no such id).
    Unknown,
    /// Token mode: another user's.
    NotYours,
}

impl NotWaiting {
    fn answer(self) -> Response<Body> {
        match self {
            Self::Unknown => super::error(
                StatusCode::NOT_FOUND,
                "unknown_upload",
                "no upload is waiting with this id: it was completed or cancelled already, is \
                 being completed, or has expired; start again with POST /api/uploads",
            ),
            Self::NotYours => super::error(
                StatusCode::FORBIDDEN,
                "not_yours",
                "this upload was started by someone else",
            ),
        }
    }
}

/// Which bound a new presigned upload would pass.
enum Full {
    /// The client's own (it has this many waiting).
    Yours(usize),
    /// Everyone's together.
    All,
}

/// The presigned uploads this instance handed out.
#[derive(Debug)]
pub struct Presigned {
    pending: Mutex<HashMap<String, Pending>>,
    per_client: usize,
    total: usize,
    lifetime: Duration,
    trust_proxy: bool,
    metrics: Arc<Metrics>,
}

/// The kind a client's declared type names (a few aliases browsers use).
fn kind_of(content_type: &str) -> Option<Kind> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let alias = match essence.as_str() {
        "image/jpg" => Some(Kind::Jpeg),
        "audio/mp3" => Some(Kind::Mp3),
        "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => Some(Kind::Wav),
        "application/ogg" => Some(Kind::Ogg),
        _ => None,
    };
    alias.or_else(|| Kind::ALL.into_iter().find(|k| k.content_type() == essence))
}

impl Presigned {
    /// The bounds `config` sets.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let (per_client, total) = config.max_pending_uploads;
        Self {
            pending: Mutex::new(HashMap::new()),
            per_client: per_client.max(1),
            total: total.max(1),
            lifetime: config.presign_ttl + config.upload_timeout,
            trust_proxy: config.trust_proxy,
            metrics,
        }
    }

    /// The waiting uploads, locked (a panic while they were locked cannot
    /// have left them half changed: each change is one call on the map).
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client_key(&self, req: &Request<Incoming>, owner: Option<&str>) -> String {
        match (owner, req.extensions().get::<PeerAddr>()) {
            (Some(owner), _) => owner.to_owned(),
            (None, Some(PeerAddr(peer))) => {
                let ip: IpAddr = client_ip(*peer, req.headers(), self.trust_proxy);
                format!("ip:{}", super::client_addr::key_of(ip))
            }
            (None, None) => "ip:unknown".to_owned(),
        }
    }

    /// Answers `POST /api/uploads`; `owner` is the token's identity key.
    pub async fn begin(
        &self,
        uploads: &Uploads,
        req: Request<Incoming>,
        owner: Option<String>,
    ) -> Response<Body> {
        let Some(bucket) = uploads.store().bucket() else {
            return not_here();
        };
        if let Err(wait) = uploads.check_rate(&req) {
            return super::rate_limited("uploads", wait);
        }
        let client = self.client_key(&req, owner.as_deref());
        let (head, body) = req.into_parts();
        let req_head = Request::from_parts(head, ());
        let read = Limited::new(body, MAX_REQUEST_BYTES).collect();
        let body = match tokio::time::timeout(READ_TIME, read).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(_)) => {
                return bad("send at most 4 KiB of JSON: {\"name\", \"size\", \"content_type\"}");
            }
            Err(_) => {
                return super::error(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the request body did not arrive within 10 s; send it again",
                );
            }
        };
        // Read as a map first: a field sent twice then counts as its last
        // value (the protocol's rule), which a derived struct would refuse.
        let ask = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
            .and_then(|fields| serde_json::from_value::<AskRaw>(fields.into()));
        let ask = match ask {
            Ok(ask) => ask,
            Err(e) => {
                return bad(&format!(
                    "send JSON {{\"name\": text, \"size\": bytes, \"content_type\": type}} ({e})"
                ));
            }
        };
        if ask.size == 0 {
            return bad("the file is empty");
        }
        if ask.size > uploads.max_bytes() {
            return super::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the file is {}; the limit is {}",
                    human_bytes(ask.size),
                    human_bytes(uploads.max_bytes())
                ),
            );
        }
        let Some(kind) = kind_of(&ask.content_type) else {
            return super::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_type",
                "this kind of file can't be shared here; allowed: PNG, JPEG, GIF, WebP, MP4, \
                 WebM, MP3, Ogg, WAV, PDF and plain UTF-8 text",
            );
        };
        // The declared size counts against the client's bytes for the hour
        // (the bucket will take exactly that many). From here the place
        // holds it: any way out but `fill` gives it back.
        let charge = match uploads.charge_bytes(&req_head, ask.size) {
            Ok(taken) => taken,
            Err(wait) => return super::rate_limited("bytes uploaded this hour", wait),
        };
        let place = Place::new(self, uploads, charge);
        let display_name = DisplayName::sanitize(ask.name.as_deref());

        // A place is held before the bucket is asked, so concurrent asks
        // cannot pass the bounds together.
        if let Err(full) = self.reserve(&place.key, &client, ask.size, &display_name, &owner) {
            return self.full(full);
        }
        let put = match bucket.presign_put(kind, ask.size).await {
            Ok(put) => put,
            Err(e) => {
                tracing::warn!("cannot presign an upload: {e}");
                return match s3::is_unavailable(&e) {
                    true => storage_unavailable(),
                    false => storage_failed(),
                };
            }
        };
        let id = put.name.as_str().to_owned();
        if !place.fill(&id) {
            return storage_failed();
        }
        let expires_at = put
            .expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let headers: serde_json::Map<String, serde_json::Value> = put
            .headers
            .iter()
            .filter(|(n, _)| *n == "content-type")
            .map(|(_, v)| {
                (
                    "Content-Type".to_owned(),
                    serde_json::Value::from(v.as_str()),
                )
            })
            .collect();
        super::json(
            StatusCode::OK,
            &serde_json::json!({
                "upload_id": id,
                "put_url": put.url,
                "method": "PUT",
                "headers": headers,
                "size": ask.size,
                "expires_at": expires_at,
                "complete_url": format!("/api/uploads/{id}/complete"),
            }),
        )
    }

    /// Holds a place for an upload of `client`, within the bounds.
    fn reserve(
        &self,
        id: &str,
        client: &str,
        size: u64,
        display_name: &DisplayName,
        owner: &Option<String>,
    ) -> Result<(), Full> {
        let now = Instant::now();
        let mut pending = self.waiting();
        pending.retain(|_, p| p.forget_at > now);
        let mine = pending.values().filter(|p| p.client == client).count();
        if mine >= self.per_client {
            return Err(Full::Yours(mine));
        }
        if pending.len() >= self.total {
            return Err(Full::All);
        }
        pending.insert(
            id.to_owned(),
            Pending {
                size,
                display_name: display_name.clone(),
                owner: owner.clone(),
                client: client.to_owned(),
                forget_at: now + self.lifetime,
                charge: Charge::default(),
            },
        );
        Ok(())
    }

    /// The answer when no place is left.
    fn full(&self, full: Full) -> Response<Body> {
        match full {
            Full::Yours(mine) => super::error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_pending",
                format!(
                    "you have {mine} uploads waiting to be completed; complete them, give \
                     them up (DELETE /api/uploads/{{id}}), or wait for them to expire (within \
                     {} s)",
                    self.lifetime.as_secs()
                ),
            ),
            Full::All => {
                let mut res = super::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the server has too many uploads in progress; try again in a minute",
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("60"));
                res
            }
        }
    }

    /// Takes the upload `raw_id` out of the waiting ones, if it is waiting
    /// and `owner`'s (or nobody's); it goes back unless settled.
    fn take_waiting(&self, raw_id: &str, owner: Option<&str>) -> Result<Taken<'_>, NotWaiting> {
        // The id becomes a stored name (a random hex id and an allowed
        // extension) before it is looked up or names any key.
        let name = StoredName::parse(raw_id).ok_or(NotWaiting::Unknown)?;
        let mut pending = self.waiting();
        match pending.get(name.as_str()) {
            Some(p) if p.forget_at <= Instant::now() => {
                pending.remove(name.as_str());
                Err(NotWaiting::Unknown)
            }
            Some(p) if p.owner.is_some() && p.owner.as_deref() != owner => {
                Err(NotWaiting::NotYours)
            }
            _ => match pending.remove(name.as_str()) {
                Some(entry) => Ok(Taken {
                    presigned: self,
                    name,
                    entry: Some(entry),
                }),
                None => Err(NotWaiting::Unknown),
            },
        }
    }

    /// Answers `DELETE /api/uploads/{id}`: forgets a waiting upload, gives
    /// back its place and what its size still costs the hour's bytes, and
    /// deletes whatever it left in the bucket. The upload is forgotten
    /// before the bucket is asked, so a storage failure cannot leave it
    /// half given up: its objects keep their unattached marker (deleted
    /// last) and go with the sweep, and the answer is `204` all the same.
    pub async fn cancel(
        &self,
        uploads: &Uploads,
        raw_id: &str,
        owner: Option<String>,
    ) -> Response<Body> {
        let Some(bucket) = uploads.store().bucket() else {
            return not_here();
        };
        let taken = match self.take_waiting(raw_id, owner.as_deref()) {
            Ok(taken) => taken,
            Err(not) => return not.answer(),
        };
        let name = taken.name.clone();
        uploads.refund_bytes(taken.settle().charge);
        // The staged object, and anything a `complete` that failed after
        // copying may have left (the copy, even a sidecar whose answer was
        // lost): the client was never told the upload was kept. The marker
        // stays for the sweep, in case such a copy lands after this.
        if let Err(e) = bucket.abandon(&name).await {
            tracing::warn!("could not delete a cancelled upload, the sweep will: {e}");
        }
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(header::CACHE_CONTROL, "no-store")
            .body(super::empty())
            .expect("static headers are valid")
    }

    /// Answers `POST /api/uploads/{id}/complete`.
    pub async fn complete(
        &self,
        uploads: &Uploads,
        raw_id: &str,
        owner: Option<String>,
    ) -> Response<Body> {
        let Some(bucket) = uploads.store().bucket() else {
            return not_here();
        };
        // Taken out: a second `complete`, or a `DELETE`, at once finds
        // nothing. Only an answer that ends the upload settles it; on any
        // other way out (an error worth a retry, the client gone) it waits
        // again.
        let taken = match self.take_waiting(raw_id, owner.as_deref()) {
            Ok(taken) => taken,
            Err(not) => return not.answer(),
        };
        let upload = taken.upload();
        let result = bucket
            .complete(
                taken.name.clone(),
                upload.size,
                upload.display_name.clone(),
                upload.owner.clone(),
            )
            .await;
        match result {
            Ok(info) => {
                taken.settle();
                self.metrics.uploads.inc();
                self.metrics.upload_bytes.add(info.size);
                uploads.request_preview(&info);
                super::json(StatusCode::OK, &UploadAnswer::of(&info))
            }
            Err(CompleteError::NotUploaded) => super::error(
                StatusCode::CONFLICT,
                "not_uploaded",
                "nothing has been stored at put_url yet: PUT the file there first, then \
                 complete",
            ),
            Err(CompleteError::SizeMismatch { declared, found }) => {
                taken.settle();
                self.metrics.uploads_refused.inc();
                super::error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "size_mismatch",
                    format!(
                        "{found} bytes arrived but {declared} were declared; the upload was \
                         deleted, start again"
                    ),
                )
            }
            Err(CompleteError::BadType(judged)) => {
                let declared = taken.name.kind().content_type();
                taken.settle();
                self.metrics.uploads_refused.inc();
                let message = match judged {
                    Some(kind) => format!(
                        "the file is {} but was declared {declared}; the upload was deleted, \
                         start again with its real type",
                        kind.content_type()
                    ),
                    None => format!(
                        "the file is not {declared}, nor any kind that can be shared here \
                         (PNG, JPEG, GIF, WebP, MP4, WebM, MP3, Ogg, WAV, PDF, plain UTF-8 \
                         text); the upload was deleted"
                    ),
                };
                super::error(StatusCode::UNPROCESSABLE_ENTITY, "bad_type", message)
            }
            Err(CompleteError::Storage(e)) => {
                tracing::warn!("cannot complete an upload: {e}");
                match s3::is_unavailable(&e) {
                    true => storage_unavailable(),
                    false => storage_failed(),
                }
            }
        }
    }
}

/// A place held among the waiting uploads while the bucket is asked, and
/// the bytes the ask charged. Whatever is still held when it drops is
/// given back, however the ask ends: refused, failed, or abandoned (when a
/// client goes away mid-request hyper drops the handler's future at its
/// `await`, so no code after it runs; drops do).
struct Place<'a> {
    presigned: &'a Presigned,
    uploads: &'a Uploads,
    /// The placeholder's key in the map (never a stored name).
    key: String,
    charge: Charge,
}

impl<'a> Place<'a> {
    fn new(presigned: &'a Presigned, uploads: &'a Uploads, charge: Charge) -> Self {
        Self {
            presigned,
            uploads,
            key: format!("reserving-{}", random_tag()),
            charge,
        }
    }

    /// Turns the place into the upload `id`, waiting with the charge, and
    /// holds nothing more; `false` if the place was forgotten meanwhile
    /// (held longer than an upload lives), and then the charge goes back.
    fn fill(mut self, id: &str) -> bool {
        let mut pending = self.presigned.waiting();
        let Some(entry) = pending.remove(&self.key) else {
            return false;
        };
        let charge = std::mem::take(&mut self.charge);
        pending.insert(id.to_owned(), Pending { charge, ..entry });
        true
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        // Locks anew: in `fill` the map's guard is a local, dropped before
        // `self`, a parameter, is.
        self.presigned.waiting().remove(&self.key);
        self.uploads.refund_bytes(std::mem::take(&mut self.charge));
    }
}

/// A waiting upload taken out of the map: whoever holds this owns the
/// upload. Unless settled it goes back as it was (its charge and its time
/// to be forgotten with it) when this drops, however its holder stopped:
/// an error worth a retry, or a client gone mid-request. While it is out,
/// a `complete` or `DELETE` of it gets `404`; once back, either works.
/// Nothing else puts this id in the map (ids are random and `begin` puts
/// each once), so the put-back never overwrites, and one put back past its
/// time is forgotten at the next look, as any other.
struct Taken<'a> {
    presigned: &'a Presigned,
    name: StoredName,
    /// `None` only once settled, which consumes this.
    entry: Option<Pending>,
}

impl Taken<'_> {
    fn upload(&self) -> &Pending {
        self.entry.as_ref().expect("unsettled while it can be used")
    }

    /// Keeps the upload out for good (completed, refused, given up).
    fn settle(mut self) -> Pending {
        self.entry
            .take()
            .expect("settled once: settling consumes it")
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            let mut pending = self.presigned.waiting();
            pending.insert(self.name.as_str().to_owned(), entry);
        }
    }
}

/// 16 random hex digits (a placeholder's name; never a stored name).
fn random_tag() -> String {
    let mut id = [0u8; 8];
    let _ = getrandom::fill(&mut id);
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn bad(message: &str) -> Response<Body> {
    super::error(StatusCode::BAD_REQUEST, "bad_upload", message)
}

fn storage_failed() -> Response<Body> {
    super::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage_failed",
        "the file storage refused the request; nothing was kept, try again later",
    )
}

/// `404` on a server that keeps uploads itself.
fn not_here() -> Response<Body> {
    super::error(
        StatusCode::NOT_FOUND,
        "no_presigned_uploads",
        "this server keeps uploads itself: send the file to POST /upload",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_name_kinds() {
        assert_eq!(kind_of("image/png"), Some(Kind::Png));
        assert_eq!(kind_of("Text/Plain; charset=utf-8"), Some(Kind::Text));
        assert_eq!(kind_of("image/jpg"), Some(Kind::Jpeg));
        assert_eq!(kind_of("text/html"), None);
        assert_eq!(kind_of("image/svg+xml"), None);
        assert_eq!(kind_of(""), None);
    }

    #[test]
    fn a_waiting_upload_is_taken_once_and_by_its_owner_only() {
        let presigned = Presigned::new(&Config::default(), Arc::new(Metrics::default()));
        let id = "0123456789abcdef0123456789abcdef.png";
        let name = DisplayName::sanitize(Some("a.png"));
        let ann = Some("ann".to_owned());
        assert!(presigned.reserve(id, "ann", 10, &name, &ann).is_ok());
        let taken = |owner: Option<&str>| presigned.take_waiting(id, owner);
        assert!(matches!(taken(Some("bob")), Err(NotWaiting::NotYours)));
        assert!(matches!(taken(None), Err(NotWaiting::NotYours)));
        // Whoever takes it (a `complete` or a `DELETE`) is the only one
        // while it holds it; dropped unsettled (a retry is due, or the
        // request was abandoned), it waits again, as it was.
        let Ok(held) = taken(Some("ann")) else {
            panic!("ann's to take")
        };
        assert_eq!(held.name.as_str(), id);
        assert!(matches!(taken(Some("ann")), Err(NotWaiting::Unknown)));
        drop(held);
        let Ok(held) = taken(Some("ann")) else {
            panic!("back once dropped")
        };
        assert_eq!(held.upload().size, 10);
        assert!(matches!(taken(Some("bob")), Err(NotWaiting::Unknown)));
        held.settle();
        assert!(matches!(taken(Some("ann")), Err(NotWaiting::Unknown)));
        // Ids that are no stored name never reach the map.
        for bad in [
            "",
            "../x.png",
            "incoming/0123456789abcdef0123456789abcdef.png",
        ] {
            assert!(matches!(
                presigned.take_waiting(bad, None),
                Err(NotWaiting::Unknown)
            ));
        }
    }

    #[test]
    fn an_asks_place_and_bytes_come_back_unless_it_is_filled() {
        use crate::media::{LocalStore, MediaStore};
        let config = Config::default()
            .max_pending_uploads((1, 10))
            .upload_bytes_per_hour(1000u64);
        let metrics = Arc::new(Metrics::default());
        let presigned = Presigned::new(&config, Arc::clone(&metrics));
        // Never touched: nothing here stores a file.
        let store = MediaStore::Local(LocalStore::new("/nonexistent"));
        let uploads = Uploads::new(&config, store, metrics);
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(PeerAddr("192.0.2.1:5000".parse().unwrap()));
        let name = DisplayName::sanitize(Some("a.png"));
        let ask = |size: u64| {
            let charge = uploads.charge_bytes(&req, size).ok()?;
            let place = Place::new(&presigned, &uploads, charge);
            presigned
                .reserve(&place.key, "ip", size, &name, &None)
                .ok()?;
            Some(place)
        };

        // Abandoned (dropped mid-ask): the place and the 600 bytes are back.
        let place = ask(600).expect("room for one");
        assert!(ask(1).is_none(), "one place only");
        drop(place);
        // (999: the hour's bytes are floats, a refund may miss a hair.)
        let place = ask(999).expect("the place and the bytes came back");
        drop(place);

        // Filled: the upload keeps both.
        let id = "0123456789abcdef0123456789abcdef.png";
        assert!(ask(600).expect("room for one").fill(id));
        assert!(ask(1).is_none(), "the upload holds the place");
        presigned
            .take_waiting(id, None)
            .ok()
            .expect("waiting")
            .settle();
        assert!(ask(500).is_none(), "the 600 stay charged");
    }
}
