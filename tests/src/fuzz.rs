//! A structure-aware fuzzer for the compiled module: random requests (methods, paths, header names and
//! values, cookies, credentials — bytes outside UTF-8 included), random upstream answers, and a random
//! issuer behind every callout (valid discovery and keys some of the time, so flows get deep; broken
//! statuses, headers and bodies the rest). A trap is any `HostError::Guest` from the host: the VM died.
//!
//! Why not libFuzzer: its coverage instruments the host (wasmtime, this crate), not the guest module, so
//! it cannot steer into the filter's code. A grammar of the inputs HTTP allows, with a seeded PRNG, reaches
//! it directly, and a failing seed replays exactly (`fuzz-module --seed S --runs N`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_wasm_host::abi::v0_2_1::InMemoryStore;

use crate::{
    CalloutAnswer, Decision, FilterClock, HeaderPair, HostError, Logs, Request, Response, Worker, WorkerOptions,
};

/// SplitMix64: small, fast, and the same sequence for the same seed everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

const ISSUER: &str = "https://issuer.fuzz";

/// Bytes a header value may hold in HTTP (RFC 9110 §5.5 obs-text included) and a few it may not.
fn bytes(rng: &mut Rng, max: usize) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"\xe9",
        b"\xff",
        b"\xc3\x28",
        b"\xf0\x9f\x92",
        b"\x00",
        b";",
        b"=",
        b",",
        b" ",
        b"\"",
        b"%",
        b"%zz",
        b"Bearer ",
        b"bearer\t",
        b"Basic Zm9v",
        b"eyJhbGciOiJSUzI1NiJ9",
        b".",
        b"..",
        b"_tokengate",
        b"_tokengate_0",
        b"_tokengate_csrf_0123abcd",
        b"text/html",
        b"navigate",
        b"websocket",
        b"Upgrade",
        b"https",
        b"/",
        b"?",
        b"&",
        b"#",
        b"\\",
        b"//evil.example",
        b"\r\n",
        b"\t",
    ];
    let mut out = Vec::new();
    for _ in 0..rng.below(max) {
        if rng.chance(60) {
            out.extend_from_slice(rng.pick(PIECES));
        } else {
            out.push(rng.next() as u8);
        }
    }
    out
}

fn header_name(rng: &mut Rng) -> Vec<u8> {
    const NAMES: &[&[u8]] = &[
        b"authorization",
        b"cookie",
        b"accept",
        b"sec-fetch-mode",
        b"sec-fetch-dest",
        b"x-requested-with",
        b"origin",
        b"access-control-request-method",
        b"x-forwarded-proto",
        b"upgrade",
        b"connection",
        b"host",
        b"x-auth-request-email",
        b"x_auth_request_email",
        b"X_AUTH_REQUEST_GROUPS",
        b"x-trace",
        b"content-type",
    ];
    if rng.chance(80) {
        rng.pick(NAMES).to_vec()
    } else {
        bytes(rng, 12)
    }
}

fn request(rng: &mut Rng) -> Request {
    const METHODS: &[&str] = &["GET", "HEAD", "POST", "OPTIONS", "PUT", "get", "", "BREW"];
    const PATHS: &[&[u8]] = &[
        b"/",
        b"/app",
        b"/oauth2/callback",
        b"/oauth2/callback?code=c&state=0123abcd.x",
        b"/oauth2/sign_out",
        b"/oauth2/sign_out?rd=//evil",
        b"/oauth2/backchannel_logout",
        b"/healthz",
        b"/caf\xe9",
        b"",
        b"?",
        b"/%ff%00",
    ];
    let mut path = rng.pick(PATHS).to_vec();
    if rng.chance(30) {
        path.extend(bytes(rng, 8));
    }
    let mut r = Request {
        method: rng.pick(METHODS).to_owned(),
        path,
        authority: if rng.chance(90) { "app.fuzz".into() } else { String::from_utf8_lossy(&bytes(rng, 6)).into() },
        scheme: "https".into(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    if rng.chance(15) {
        // A back-channel logout: a form body with a logout_token that is anything from a JWT shape to junk.
        r.method = "POST".into();
        r.path = b"/oauth2/backchannel_logout".to_vec();
        r.headers.push((b"content-type".to_vec(), b"application/x-www-form-urlencoded".to_vec()));
        let token = match rng.below(3) {
            0 => b"eyJhbGciOiJFZERTQSIsImtpZCI6ImVkIn0.eyJzaWQiOiJ4In0.c2ln".to_vec(),
            1 => bytes(rng, 40),
            _ => Vec::new(),
        };
        r.body = [b"logout_token=".as_slice(), &token, &bytes(rng, 4)].concat();
    }
    for _ in 0..rng.below(8) {
        let name = header_name(rng);
        let value = bytes(rng, 24);
        r.headers.push((name, value));
    }
    r
}

fn random_headers(rng: &mut Rng) -> Vec<HeaderPair> {
    (0..rng.below(4)).map(|_| (header_name(rng), bytes(rng, 16))).collect()
}

/// The fuzzer's issuer: valid discovery and a JWKS most of the time, anything at all the rest.
fn issuer_answer(rng: &mut Rng, headers: &[HeaderPair]) -> CalloutAnswer {
    if rng.chance(10) {
        return CalloutAnswer::Failed;
    }
    let path = headers.iter().find(|(k, _)| k == b":path").map(|(_, v)| v.clone()).unwrap_or_default();
    let status = if rng.chance(80) { 200 } else { [0u16, 204, 302, 400, 401, 500, 503, 999][rng.below(8)] };
    let good = rng.chance(70);
    let body = match path.as_slice() {
        b"/.well-known/openid-configuration" if good => format!(
            r#"{{"issuer":"{ISSUER}","authorization_endpoint":"{ISSUER}/auth","token_endpoint":"{ISSUER}/token","jwks_uri":"{ISSUER}/keys","revocation_endpoint":"{ISSUER}/revoke","end_session_endpoint":"{ISSUER}/logout","revocation_feed_endpoint":"{ISSUER}/revocations"}}"#
        )
        .into_bytes(),
        b"/keys" if good => {
            br#"{"keys":[{"kty":"OKP","kid":"ed","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#
                .to_vec()
        }
        p if good && p.starts_with(b"/revocations") => format!(
            r#"{{"cursor":"{}","reset":{},"revocations":[{{"kind":"{}","value":"{}","revoked_at":{}}}],"interval":5}}"#,
            rng.below(100),
            rng.chance(20),
            ["sid", "sub", "group", "all", "other"][rng.below(5)],
            String::from_utf8_lossy(&bytes(rng, 8)).replace(['"', '\\'], ""),
            rng.next() % 2_000_000_000
        )
        .into_bytes(),
        b"/token" if good => format!(
            r#"{{"access_token":"a","token_type":"Bearer","id_token":"{}","refresh_token":"{}","expires_in":60}}"#,
            String::from_utf8_lossy(&bytes(rng, 20)).replace('"', ""),
            String::from_utf8_lossy(&bytes(rng, 10)).replace('"', "")
        )
        .into_bytes(),
        _ => bytes(rng, 64),
    };
    let mut out = random_headers(rng);
    out.push((b"content-type".to_vec(), b"application/json".to_vec()));
    CalloutAnswer::Received { status, headers: out, body }
}

/// What a run found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Requests driven through the module.
    pub runs: u64,
    /// VM traps (must stay 0), with the request that caused each.
    pub traps: Vec<String>,
    /// Requests the module paused with nothing to resume them (in Envoy: a hung request; must stay 0).
    pub stalls: Vec<String>,
}

/// The plugin configuration the fuzzer's workers run with.
pub fn configuration() -> String {
    serde_json::json!({
        "issuer": ISSUER,
        "client_id": "gateway",
        "client_secret": "s",
        "cluster": "issuer",
        "cookie_secrets": ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="],
        "claims_to_headers": {"email": "x-auth-request-email", "groups": "x-auth-request-groups"},
        "skip": [{"path_prefix": "/healthz"}],
    })
    .to_string()
}

async fn start_worker(rng: &Arc<std::sync::Mutex<Rng>>, store: &Arc<InMemoryStore>) -> Result<Worker, HostError> {
    let answers = rng.clone();
    let options = WorkerOptions {
        clusters: [("issuer".to_owned(), "http://issuer.fuzz.invalid".to_owned())].into(),
        clock: FilterClock::frozen_at(1_700_000_000_000),
        store: store.clone(),
        logs: Arc::new(Logs::default()),
        ca_certificates: vec![],
        responder: Some(Arc::new(move |_cluster: &str, headers: &[HeaderPair], _body: &[u8]| {
            let mut rng = answers.lock().unwrap_or_else(|p| p.into_inner());
            issuer_answer(&mut rng, headers)
        })),
    };
    Worker::start(&configuration(), options).await
}

/// Drives `runs` random requests (or until `budget` has passed, whichever comes first) through two worker
/// VMs that share one store, starting from `seed`. A trapped worker is replaced and the trap recorded.
pub async fn run(seed: u64, runs: u64, budget: Duration) -> Result<Report, HostError> {
    let rng = Arc::new(std::sync::Mutex::new(Rng::new(seed)));
    let store = crate::shared_store();
    let mut workers = [start_worker(&rng, &store).await?, start_worker(&rng, &store).await?];
    let started = Instant::now();
    let mut report = Report::default();
    while report.runs < runs && started.elapsed() < budget {
        let (req, upstream, which, tick) = {
            let mut r = rng.lock().unwrap_or_else(|p| p.into_inner());
            let req = request(&mut r);
            let upstream = Response { status: 200, headers: random_headers(&mut r), body: bytes(&mut r, 16) };
            (req, upstream, r.below(workers.len()), r.chance(5))
        };
        let shown = format!("{req:?}");
        let w = &workers[which];
        if tick {
            w.clock().advance(Duration::from_secs(61));
        }
        let outcome = async {
            if tick {
                w.tick().await?;
            }
            match w.request(req).await? {
                Decision::Respond(_) => Ok(()),
                Decision::Forward(f) => w.respond(f, upstream).map(|_| ()),
            }
        }
        .await;
        report.runs += 1;
        match outcome {
            Ok(()) => {}
            Err(HostError::Stalled) => report.stalls.push(shown),
            Err(e) => {
                report.traps.push(format!("{e}\n  request: {shown}"));
                workers[which] = start_worker(&rng, &store).await?;
            }
        }
    }
    Ok(report)
}
