//! A demo upstream, the way a dashboard behind the gateway sees the world: it shows the identity in the
//! `Authorization: Bearer <ID token>` the filter set (user, email, groups, expiry) and every request
//! header it received. HTML for browsers, JSON otherwise. It does not verify the token: the gateway did,
//! and only the gateway can reach it.
#![allow(clippy::print_stdout)] // a command-line program: its banner goes to stdout

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Show the identity and headers a request arrived with")]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("whoami: listening on http://{}", listener.local_addr()?);
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" })).fallback(show);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn identity(headers: &HeaderMap) -> Option<Value> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = auth.strip_prefix("Bearer ")?;
    serde_json::from_slice(&B64.decode(token.split('.').nth(1)?).ok()?).ok()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn show(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let claims = identity(&headers);
    let header_list: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let wants_html = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if !wants_html {
        let h: serde_json::Map<String, Value> =
            header_list.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        return Json(json!({ "method": method.as_str(), "path": uri.to_string(), "identity": claims, "headers": h }))
            .into_response();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut rows = String::new();
    for (k, v) in &header_list {
        let shown = if k == "authorization" && v.len() > 60 { format!("{}…", &v[..60]) } else { v.clone() };
        let _ = write!(rows, "<tr><th>{}</th><td><code>{}</code></td></tr>", escape(k), escape(&shown));
    }
    let who = match &claims {
        Some(c) => {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("—").to_owned();
            let groups = c.get("groups").and_then(Value::as_array).map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(|g| format!("<span class=\"tag\">{}</span>", escape(g)))
                    .collect::<String>()
            });
            let exp = c.get("exp").and_then(Value::as_i64).unwrap_or(0);
            format!(
                "<h1>Hello, {name}</h1><dl><dt>Email</dt><dd id=\"email\">{email}</dd><dt>Subject</dt><dd><code>{sub}</code></dd>\
                 <dt>Groups</dt><dd id=\"groups\">{groups}</dd><dt>Issuer</dt><dd>{iss}</dd><dt>ID token expires</dt><dd>in {left} s</dd></dl>",
                name = escape(&s("name")),
                email = escape(&s("email")),
                sub = escape(&s("sub")),
                groups = groups.unwrap_or_else(|| "—".into()),
                iss = escape(&s("iss")),
                left = exp - now,
            )
        }
        None => "<h1>No identity</h1><p>This request carried no bearer token.</p>".to_owned(),
    };
    let page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>whoami</title><style>
body{{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f3f5f9}}
main{{max-width:860px;margin:32px auto;padding:32px;background:#fff;border:1px solid #d8dde6;border-radius:12px}}
h1{{font-size:24px;margin:0 0 16px}} h2{{font-size:18px;margin:32px 0 8px}}
dl{{display:grid;grid-template-columns:180px 1fr;gap:6px 16px;margin:0}} dt{{color:#5c6576}} dd{{margin:0}}
.tag{{display:inline-block;margin-right:6px;padding:1px 8px;border-radius:10px;background:#e7edfb;color:#2456d3;font-size:14px}}
table{{width:100%;border-collapse:collapse;font-size:14px}} th{{text-align:left;vertical-align:top;padding:4px 12px 4px 0;color:#5c6576;white-space:nowrap}}
td{{padding:4px 0;word-break:break-all}} a.button{{display:inline-block;margin-top:24px;padding:8px 16px;border-radius:8px;background:#2456d3;color:#fff;text-decoration:none}}
</style></head><body><main>{who}<h2>Request headers</h2><table>{rows}</table>
<a class="button" href="/oauth2/sign_out">Sign out</a></main></body></html>"#
    );
    Html(page).into_response()
}
