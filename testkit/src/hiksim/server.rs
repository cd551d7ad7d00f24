//! The server: HTTP/1.1 (hyper 1, keep-alive) on one listener, the terminal's state behind one lock
//! (never held across an await), HTTP Digest checking (MD5, `qop=auth`, nonces that expire), and the
//! ISAPI endpoints a reader uses.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::model::{heartbeat, time_text, xml_escape, HikEvent, HikUser};
use super::{HikCounters, HikSimConfig};

pub(super) type Body = BoxBody<Bytes, Infallible>;

/// The boundary of the alert stream's parts.
pub const BOUNDARY: &str = "boundary";

pub(super) struct State {
    pub(super) cfg: HikSimConfig,
    pub(super) events: Vec<HikEvent>,
    pub(super) next_serial: u64,
    /// nonce -> when it was issued.
    nonces: HashMap<String, Instant>,
    /// Consecutive wrong responses, and the lock they set.
    wrong: u32,
    locked_until: Option<Instant>,
    /// 401s still to give to correct requests (a 401 storm).
    pub(super) storm: u32,
    /// Search results kept by searchID (the newest few).
    searches: VecDeque<(String, Vec<usize>)>,
    pub(super) counters: HikCounters,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) counters_tx: watch::Sender<HikCounters>,
    pub(super) events_tx: broadcast::Sender<HikEvent>,
    /// Drops every open stream now (`true`: left open and silent).
    pub(super) drop_tx: broadcast::Sender<bool>,
    pub(super) stop: CancellationToken,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the counters and wakes their watchers.
    pub(super) fn count(&self, f: impl FnOnce(&mut HikCounters)) {
        let c = {
            let mut st = self.lock();
            f(&mut st.counters);
            st.counters.clone()
        };
        self.counters_tx.send_replace(c);
    }
}

impl State {
    pub(super) fn new(cfg: HikSimConfig) -> State {
        let events = cfg.events.clone();
        let next_serial = events.last().map_or(1, |e| e.serial + 1);
        State {
            cfg,
            events,
            next_serial,
            nonces: HashMap::new(),
            wrong: 0,
            locked_until: None,
            storm: 0,
            searches: VecDeque::new(),
            counters: HikCounters::default(),
        }
    }

    /// The device's wall-clock time now (gateway clock plus the skew, in the device's offset).
    pub(super) fn device_now(&self) -> DateTime<FixedOffset> {
        (Utc::now() + self.cfg.clock_skew).with_timezone(&self.cfg.offset)
    }
}

/// A connection's byte stream: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A TLS acceptor with a new self-signed certificate for `127.0.0.1` and `localhost`.
pub(super) fn self_signed() -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let bad = |e: String| std::io::Error::other(format!("hiksim tls: {e}"));
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(|e| bad(e.to_string()))?;
    let key =
        tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| bad(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
            _ = shared.stop.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let stop = shared.stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, req).await) }
            });
            let io: Box<dyn Io> = match tls {
                None => Box::new(tcp),
                // a client that refuses the certificate ends the handshake: nothing to serve
                Some(tls) => match tls.accept(tcp).await {
                    Ok(stream) => Box::new(stream),
                    Err(_) => return,
                },
            };
            let conn = http1::Builder::new().serve_connection(TokioIo::new(io), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn full(status: StatusCode, ct: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = ct.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn status_doc(status: StatusCode, code: u32, text: &str, sub: &str) -> Response<Body> {
    full(
        status,
        "application/xml",
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ResponseStatus version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\">\n<requestURL></requestURL>\n<statusCode>{code}</statusCode>\n<statusString>{text}</statusString>\n<subStatusCode>{sub}</subStatusCode>\n</ResponseStatus>\n"),
    )
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The parameters of an `Authorization: Digest ...` header (quoted or not).
pub fn digest_params(h: &str) -> Option<HashMap<String, String>> {
    let rest = h.trim().strip_prefix("Digest")?.trim_start();
    let mut out = HashMap::new();
    let mut s = rest;
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(k, v);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

/// A 401 with a new challenge.
fn challenge(shared: &Shared, stale: bool) -> Response<Body> {
    let nonce: String = {
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:x}", rng.random_range(0..16u8)))
            .collect()
    };
    let realm = {
        let mut st = shared.lock();
        st.nonces.insert(nonce.clone(), Instant::now());
        if st.nonces.len() > 10_000 {
            let ttl = st.cfg.nonce_ttl;
            st.nonces.retain(|_, t| t.elapsed() < ttl);
        }
        st.cfg.realm.clone()
    };
    let mut r = status_doc(
        StatusCode::UNAUTHORIZED,
        4,
        "Invalid Operation",
        "unAuthorized",
    );
    let v = format!(
        "Digest qop=\"auth\", realm=\"{realm}\", nonce=\"{nonce}\", stale=\"{}\"",
        if stale { "TRUE" } else { "FALSE" }
    );
    if let Ok(v) = v.parse() {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// Checks the request's digest: `None` when it may go on, or the 401 to send.
fn check_auth(shared: &Shared, req: &Request<()>) -> Option<Response<Body>> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(p) = header.and_then(digest_params) else {
        shared.count(|c| c.challenges += 1);
        return Some(challenge(shared, false));
    };
    let method = req.method().as_str().to_string();
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    let mut st = shared.lock();
    let issued = st.nonces.get(&get("nonce")).copied();
    let ttl = st.cfg.nonce_ttl;
    let stale_flag = st.cfg.stale_flag;
    match issued {
        None => {
            drop(st);
            shared.count(|c| c.stale_nonces += 1);
            return Some(challenge(shared, stale_flag));
        }
        Some(t) if t.elapsed() > ttl => {
            let n = get("nonce");
            st.nonces.remove(&n);
            drop(st);
            shared.count(|c| c.stale_nonces += 1);
            return Some(challenge(shared, stale_flag));
        }
        Some(_) => {}
    }
    if st.locked_until.is_some_and(|t| Instant::now() < t) {
        drop(st);
        shared.count(|c| c.locked_refusals += 1);
        return Some(challenge(shared, false));
    }
    let ha1 = md5_hex(&format!(
        "{}:{}:{}",
        get("username"),
        st.cfg.realm,
        st.cfg.password
    ));
    let ha2 = md5_hex(&format!("{method}:{}", get("uri")));
    let want = if p.contains_key("qop") {
        md5_hex(&format!(
            "{ha1}:{}:{}:{}:{}:{ha2}",
            get("nonce"),
            get("nc"),
            get("cnonce"),
            get("qop")
        ))
    } else {
        md5_hex(&format!("{ha1}:{}:{ha2}", get("nonce")))
    };
    let path_ok = req
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str() == get("uri"));
    if get("username") != st.cfg.username || get("response") != want || !path_ok {
        st.wrong += 1;
        if st.wrong >= st.cfg.lock_after {
            st.locked_until = Some(Instant::now() + st.cfg.lock_for);
        }
        drop(st);
        shared.count(|c| c.auth_failures += 1);
        return Some(challenge(shared, false));
    }
    st.wrong = 0;
    if st.storm > 0 {
        st.storm -= 1;
        drop(st);
        shared.count(|c| c.storm_refusals += 1);
        return Some(challenge(shared, false));
    }
    drop(st);
    shared.count(|c| c.auth_ok += 1);
    None
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    shared.count(|c| c.requests += 1);
    let delay = shared.lock().cfg.reply_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let arrived = Instant::now();
    // the body is read first, even for a 401: a connection left with an unread body could not be
    // kept alive, and clients send the authenticated request on the same connection
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let req = Request::from_parts(parts, ());
    if let Some(r) = check_auth(shared, &req) {
        return r;
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/ISAPI/System/deviceInfo") => device_info(shared),
        (Method::GET, "/ISAPI/System/time") => get_time(shared),
        (Method::PUT, "/ISAPI/System/time") => put_time(shared, &body),
        (Method::POST, "/ISAPI/AccessControl/AcsEvent") => acs_event(shared, &body, arrived).await,
        (Method::POST, "/ISAPI/AccessControl/UserInfo/Search") => user_search(shared, &body),
        (Method::GET, "/ISAPI/Event/notification/alertStream") => alert_stream(shared),
        _ => status_doc(StatusCode::NOT_FOUND, 4, "Invalid Operation", "notSupport"),
    }
}

fn device_info(shared: &Shared) -> Response<Body> {
    shared.count(|c| c.device_info_reads += 1);
    let st = shared.lock();
    full(
        StatusCode::OK,
        "application/xml",
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeviceInfo version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\">\n<deviceName>Access Controller</deviceName>\n<deviceID>255</deviceID>\n<model>{}</model>\n<serialNumber>{}</serialNumber>\n<macAddress>00:00:00:00:00:01</macAddress>\n<firmwareVersion>V3.2.30</firmwareVersion>\n<firmwareReleasedDate>build 210101</firmwareReleasedDate>\n<deviceType>ACS</deviceType>\n</DeviceInfo>\n",
            xml_escape(&st.cfg.model), xml_escape(&st.cfg.serial_number)),
    )
}

/// `CST-8:00:00` for +08:00 (POSIX: the sign says how far behind UTC).
fn posix_zone(o: FixedOffset) -> String {
    let s = -o.local_minus_utc();
    let sign = if s < 0 { '-' } else { '+' };
    let a = s.abs();
    format!("CST{sign}{}:{:02}:{:02}", a / 3600, a % 3600 / 60, a % 60)
}

fn get_time(shared: &Shared) -> Response<Body> {
    let st = shared.lock();
    let now = st.device_now();
    let local = time_text(now.naive_local(), st.cfg.offset, st.cfg.times_with_offset);
    full(
        StatusCode::OK,
        "application/xml",
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Time version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\">\n<timeMode>manual</timeMode>\n<localTime>{local}</localTime>\n<timeZone>{}</timeZone>\n</Time>\n", posix_zone(st.cfg.offset)),
    )
}

fn xml_value(doc: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = doc.find(&open)? + open.len();
    let end = doc[start..].find(&format!("</{name}>"))? + start;
    Some(doc[start..end].trim().to_string())
}

fn parse_time(s: &str, offset: FixedOffset) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok().or_else(|| {
        let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").ok()?;
        offset.from_local_datetime(&t).single()
    })
}

fn put_time(shared: &Shared, body: &[u8]) -> Response<Body> {
    let doc = String::from_utf8_lossy(body);
    let mut st = shared.lock();
    let offset = st.cfg.offset;
    let Some(t) = xml_value(&doc, "localTime").and_then(|s| parse_time(&s, offset)) else {
        return status_doc(
            StatusCode::BAD_REQUEST,
            6,
            "Invalid Content",
            "badXmlContent",
        );
    };
    st.cfg.clock_skew = t.with_timezone(&Utc) - Utc::now();
    st.counters.time_sets += 1;
    let c = st.counters.clone();
    drop(st);
    shared.counters_tx.send_replace(c);
    status_doc(StatusCode::OK, 1, "OK", "ok")
}

fn bad_json() -> Response<Body> {
    status_doc(
        StatusCode::BAD_REQUEST,
        6,
        "Invalid Content",
        "badJsonFormat",
    )
}

/// Waits until `deadline` to within a tenth of a millisecond. The runtime's timer rounds up to whole
/// milliseconds (a 5 ms sleep took 6.25 ms on average on the 2-core test machine), which would make
/// the terminal slower than configured: a blocking thread's sleep keeps to the time asked.
async fn wait_until(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
    }
}

/// One page of the event log. The page takes `page_delay` from the request's arrival to the reply
/// (the terminal's own time, whatever the simulator spends building it), and that time is counted.
async fn acs_event(shared: &Shared, body: &[u8], arrived: Instant) -> Response<Body> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return bad_json();
    };
    let Some(c) = v.get("AcsEventCond") else {
        return bad_json();
    };
    let id = c["searchID"].as_str().unwrap_or("").to_string();
    let pos = c["searchResultPosition"].as_u64().unwrap_or(0) as usize;
    let asked = c["maxResults"].as_u64().unwrap_or(10) as usize;
    let major = c["major"].as_u64().unwrap_or(0) as u32;
    let minor = c["minor"].as_u64().unwrap_or(0) as u32;
    let (reply, delay) = {
        let mut st = shared.lock();
        let offset = st.cfg.offset;
        let start = c["startTime"].as_str().and_then(|s| parse_time(s, offset));
        let end = c["endTime"].as_str().and_then(|s| parse_time(s, offset));
        let cached = st
            .searches
            .iter()
            .position(|(k, _)| *k == id && !id.is_empty());
        let hits = match cached {
            Some(i) => st.searches[i].1.clone(),
            None => {
                let in_range = |e: &HikEvent| {
                    let t = offset.from_local_datetime(&e.time).single();
                    start.is_none_or(|s| t.is_some_and(|t| t >= s))
                        && end.is_none_or(|s| t.is_some_and(|t| t <= s))
                };
                let hits: Vec<usize> = st
                    .events
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| {
                        (major == 0 || e.major == major) && (minor == 0 || e.minor == minor)
                    })
                    .filter(|(_, e)| in_range(e))
                    .map(|(i, _)| i)
                    .collect();
                st.searches.push_back((id.clone(), hits.clone()));
                if st.searches.len() > 8 {
                    st.searches.pop_front();
                }
                hits
            }
        };
        let n = asked.min(st.cfg.max_results_cap as usize).max(1);
        let page: Vec<Value> = hits
            .iter()
            .skip(pos)
            .take(n)
            .filter_map(|i| st.events.get(*i))
            .map(|e| e.info(offset, st.cfg.times_with_offset))
            .collect();
        let status = if hits.is_empty() {
            "NO MATCH"
        } else if pos + page.len() < hits.len() {
            "MORE"
        } else {
            "OK"
        };
        st.counters.acs_pages += 1;
        st.counters.acs_events_served += page.len() as u64;
        st.counters.max_page = st.counters.max_page.max(page.len() as u64);
        let reply = json!({"AcsEvent": {
            "searchID": id,
            "responseStatusStrg": status,
            "numOfMatches": page.len(),
            "totalMatches": hits.len(),
            "InfoList": page,
        }});
        let c = st.counters.clone();
        let delay = st.cfg.page_delay;
        drop(st);
        shared.counters_tx.send_replace(c);
        (reply, delay)
    };
    let reply = reply.to_string();
    wait_until(arrived + delay).await;
    shared.count(|c| {
        c.acs_busy += arrived.elapsed();
        c.first_acs_at.get_or_insert(arrived);
        c.last_acs_at = Some(Instant::now());
    });
    full(StatusCode::OK, "application/json", reply)
}

fn user_search(shared: &Shared, body: &[u8]) -> Response<Body> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return bad_json();
    };
    let c = &v["UserInfoSearchCond"];
    let id = c["searchID"].as_str().unwrap_or("");
    let pos = c["searchResultPosition"].as_u64().unwrap_or(0) as usize;
    let asked = c["maxResults"].as_u64().unwrap_or(10) as usize;
    let mut st = shared.lock();
    let users: &[HikUser] = &st.cfg.users;
    let n = asked.min(st.cfg.max_results_cap as usize).max(1);
    let page: Vec<Value> = users
        .iter()
        .skip(pos)
        .take(n)
        .map(|u| {
            json!({"employeeNo": u.employee_no, "name": u.name, "userType": "normal",
                         "Valid": {"enable": true}, "doorRight": "1"})
        })
        .collect();
    let status = if users.is_empty() {
        "NO MATCH"
    } else if pos + page.len() < users.len() {
        "MORE"
    } else {
        "OK"
    };
    let reply = json!({"UserInfoSearch": {"searchID": id, "responseStatusStrg": status,
        "numOfMatches": page.len(), "totalMatches": users.len(), "UserInfo": page}});
    st.counters.user_pages += 1;
    let c = st.counters.clone();
    drop(st);
    shared.counters_tx.send_replace(c);
    full(StatusCode::OK, "application/json", reply.to_string())
}

fn part(xml: bool, doc: &str) -> Bytes {
    let ct = if xml {
        "application/xml"
    } else {
        "application/json"
    };
    Bytes::from(format!(
        "--{BOUNDARY}\r\nContent-Type: {ct}; charset=\"UTF-8\"\r\nContent-Length: {}\r\n\r\n{doc}\r\n",
        doc.len()
    ))
}

fn alert_stream(shared: &Arc<Shared>) -> Response<Body> {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(64);
    let mut events = shared.events_tx.subscribe();
    let mut drops = shared.drop_tx.subscribe();
    let (xml, beat, drop_after, silent, offset, with_offset) = {
        let st = shared.lock();
        (
            st.cfg.stream_xml,
            st.cfg.heartbeat_every,
            st.cfg.stream_drop_after,
            st.cfg.stream_drop_silent,
            st.cfg.offset,
            st.cfg.times_with_offset,
        )
    };
    shared.count(|c| {
        c.stream_opens += 1;
        c.streams_open += 1;
    });
    let sh = shared.clone();
    tokio::spawn(async move {
        let opened = tokio::time::Instant::now();
        let dropped_at = drop_after.map(|d| opened + d);
        let mut beats = tokio::time::interval(beat.unwrap_or(Duration::from_secs(3600)));
        beats.tick().await;
        loop {
            let frame = tokio::select! {
                _ = sh.stop.cancelled() => break,
                d = async {
                    tokio::select! {
                        _ = async { match dropped_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => silent,
                        d = drops.recv() => d.unwrap_or(false),
                    }
                } => {
                    sh.count(|c| c.stream_drops += 1);
                    if d {
                        // open and silent, as some firmware leaves it
                        tokio::select! {
                            _ = sh.stop.cancelled() => {}
                            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                        }
                    }
                    break;
                }
                _ = beats.tick(), if beat.is_some() => {
                    let now = sh.lock().device_now();
                    part(xml, &heartbeat(xml, &now.format("%Y-%m-%dT%H:%M:%S%:z").to_string()))
                }
                e = events.recv() => match e {
                    Ok(e) => {
                        let doc = if xml { e.alert_xml(offset, with_offset) } else { e.alert_json(offset, with_offset) };
                        part(xml, &doc)
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            if tx.send(Frame::data(frame)).await.is_err() {
                break;
            }
        }
        sh.count(|c| c.streams_open -= 1);
    });
    let mut r = Response::new(body.boxed());
    if let Ok(v) = format!("multipart/mixed; boundary={BOUNDARY}").parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}
