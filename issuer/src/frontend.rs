//! Dex's `frontend:` section: the name, logo, theme and extra strings the issuer's pages show, and the files
//! behind `{issuer}/theme/…` and `{issuer}/static/…`: built in, or replaced file by file from `frontend.dir`,
//! a directory laid out like Dex's web directory (`static/`, `themes/<theme>/`). Dex's Go templates
//! (`templates/`) cannot run here: the built-in pages are always used, and [`Frontend::warnings`] says so.
//!
//! Configuration parsing and validation live here and report through the config loader's [`Problem`] list;
//! the templates, the page headers and the asset routes live in `http` (`page`, `http/assets.rs`). Files are
//! read once at start-up into a map from relative path to bytes, so a request can only name a file that was
//! loaded: `../` (plain or percent-encoded) finds nothing.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use serde::Deserialize;
use url::Url;

use crate::config::{Config, Problem};

/// The display name when `frontend.issuer` is not set (Dex's is "dex").
pub const DEFAULT_NAME: &str = "tokengate";

/// The `frontend.extra` keys the built-in pages show; others are accepted (Dex passes every key to its
/// templates) and reported by [`Frontend::warnings`].
pub const EXTRA_KEYS: &[&str] = &["footer", "loginHint"];

/// At most this many files are loaded from `frontend.dir` (theme and static together).
const MAX_FILES: usize = 1000;
/// At most this many bytes are loaded from `frontend.dir`: the files are held in memory.
const MAX_BYTES: u64 = 32 * 1024 * 1024;
/// How deep `static/` and the theme directory are walked (a symlink loop ends here).
const MAX_DEPTH: usize = 8;

/// `frontend:` as written (Dex's keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawFrontend {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default, rename = "logoURL")]
    logo_url: Option<String>,
    #[serde(default)]
    theme: Option<String>,
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default)]
    extra: BTreeMap<String, String>,
}

/// `frontend:`, validated.
#[derive(Debug, Clone)]
pub struct Frontend {
    /// The display name on every page (title and header).
    pub issuer: String,
    /// The logo: an http(s) URL, an absolute path, or a path under the issuer (`theme/logo.png`). `None`:
    /// the theme's `logo.png`.
    pub logo_url: Option<String>,
    /// `light`, `dark`, or the name of a directory under `dir/themes`.
    pub theme: String,
    /// A Dex-style web directory whose files replace the built-in ones.
    pub dir: Option<PathBuf>,
    /// Strings for the pages: `footer` and `loginHint` are shown (see [`EXTRA_KEYS`]).
    pub extra: BTreeMap<String, String>,
}

impl Default for Frontend {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_NAME.to_owned(),
            logo_url: None,
            theme: "light".to_owned(),
            dir: None,
            extra: BTreeMap::new(),
        }
    }
}

// === impl Frontend ===

impl Frontend {
    /// Validates `frontend:`, pushing each problem (key path and expectation) onto `problems`.
    pub fn parse(raw: RawFrontend, problems: &mut Vec<Problem>) -> Self {
        let mut problem = |key: &str, expected: String| problems.push(Problem::new(key, expected));
        let dir = match raw.dir {
            Some(d) if d.is_dir() => Some(d),
            Some(d) => {
                problem("frontend.dir", format!("an existing directory, got {}", d.display()));
                None
            }
            None => None,
        };
        let theme = match raw.theme.as_deref().map(str::trim) {
            // Dex's legacy names stand for its default theme.
            None | Some("" | "light" | "coreos" | "tectonic") => "light".to_owned(),
            Some("dark") => "dark".to_owned(),
            Some(name) => {
                let custom = dir.as_ref().is_some_and(|d| is_segment(name) && d.join("themes").join(name).is_dir());
                if !custom {
                    problem(
                        "frontend.theme",
                        format!(
                            "\"light\", \"dark\" or the name of a directory under frontend.dir/themes, got {name:?}"
                        ),
                    );
                }
                name.to_owned()
            }
        };
        if let Some(logo) = &raw.logo_url {
            if let Err(why) = check_image_url(logo) {
                problem("frontend.logoURL", why);
            }
        }
        let issuer = raw.issuer.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        Self {
            issuer: issuer.unwrap_or_else(|| DEFAULT_NAME.to_owned()),
            logo_url: raw.logo_url,
            theme,
            dir,
            extra: raw.extra,
        }
    }

    /// What an operator should know at start-up: a `templates/` directory that is not used, `extra` keys
    /// no page shows.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(templates) = self.dir.as_ref().map(|d| d.join("templates")).filter(|t| t.exists()) {
            out.push(format!(
                "frontend.dir: {} holds Dex's Go templates, which this issuer cannot run: the built-in pages are \
                 used (the theme and static files still apply)",
                templates.display()
            ));
        }
        for key in self.extra.keys().filter(|k| !EXTRA_KEYS.contains(&k.as_str())) {
            out.push(format!(
                "frontend.extra.{key}: accepted but shown on no page (the pages show {})",
                EXTRA_KEYS.join(" and ")
            ));
        }
        out
    }

    /// `extra.footer`: a line at the bottom of every page.
    pub fn footer(&self) -> Option<&str> {
        self.extra.get("footer").map(String::as_str).filter(|s| !s.trim().is_empty())
    }

    /// `extra.loginHint`: a line under the login page's heading.
    pub fn login_hint(&self) -> Option<&str> {
        self.extra.get("loginHint").map(String::as_str).filter(|s| !s.trim().is_empty())
    }
}

/// Checks a logo URL (`frontend.logoURL`, a client's `logoURL`): an http(s) URL, an absolute path, or a path
/// relative to the issuer (as Dex's default `theme/logo.png`) without `..`. The error says what was expected.
pub fn check_image_url(value: &str) -> Result<(), String> {
    let expected = || {
        format!(
            "an http(s) URL, an absolute path, or a path under the issuer such as \"theme/logo.png\", got {value:?}"
        )
    };
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
        return Err(expected());
    }
    match Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(expected()),
        // Not absolute: a path. `//host` would be another site without a scheme; `..` would leave the issuer.
        Err(_) if value.starts_with("//") || value.split(['/', '?', '#']).any(|s| s == "..") => Err(expected()),
        Err(_) => Ok(()),
    }
}

/// Where a page links an image given as in [`check_image_url`]: URLs and absolute paths as they are, other
/// paths under the issuer's path `prefix`.
pub fn image_href(prefix: &str, value: &str) -> String {
    if value.starts_with('/') || Url::parse(value).is_ok() {
        value.to_owned()
    } else {
        format!("{prefix}/{}", value.trim_start_matches("./"))
    }
}

/// The origin of an absolute image URL, for the pages' `img-src`.
fn image_origin(value: &str) -> Option<String> {
    Url::parse(value).ok().filter(|u| matches!(u.scheme(), "http" | "https")).map(|u| u.origin().ascii_serialization())
}

fn is_segment(name: &str) -> bool {
    !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

// === assets ===

/// One file the issuer serves under `theme/` or `static/`.
#[derive(Debug, Clone)]
pub struct Asset {
    /// The file's bytes.
    pub body: axum::body::Bytes,
    /// `Content-Type`, from the file name's extension.
    pub content_type: &'static str,
    /// A strong `ETag` (quoted), from a digest of the bytes.
    pub etag: String,
}

impl Asset {
    fn new(name: &str, body: Vec<u8>) -> Self {
        let sum = digest::digest(&digest::SHA256, &body);
        let etag = format!("\"{}\"", sum.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect::<String>());
        Self { body: body.into(), content_type: content_type(name), etag }
    }

    /// The `ETag` without quotes: a page appends it as `?v=` so a changed file is fetched again.
    pub fn version(&self) -> &str {
        self.etag.trim_matches('"')
    }
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

const LAYOUT_CSS: &[u8] = include_bytes!("../web/static/layout.css");

fn built_in_theme(theme: &str) -> [(&'static str, &'static [u8]); 3] {
    if theme == "dark" {
        [
            ("styles.css", include_bytes!("../web/themes/dark/styles.css")),
            ("logo.png", include_bytes!("../web/themes/dark/logo.png")),
            ("favicon.png", include_bytes!("../web/themes/dark/favicon.png")),
        ]
    } else {
        [
            ("styles.css", include_bytes!("../web/themes/light/styles.css")),
            ("logo.png", include_bytes!("../web/themes/light/logo.png")),
            ("favicon.png", include_bytes!("../web/themes/light/favicon.png")),
        ]
    }
}

/// A start-up failure reading `frontend.dir`.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A file or directory could not be read.
    #[error("frontend.dir: cannot read {}: {source}", .path.display())]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// More files or bytes than are held in memory.
    #[error("frontend.dir: {} holds more than {MAX_FILES} files or {MAX_BYTES} bytes", .path.display())]
    TooLarge {
        /// The directory.
        path: PathBuf,
    },
}

/// What every page shows around its content, and the headers it is sent with; built once from the
/// configuration and the loaded files.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The display name (`frontend.issuer`).
    pub name: String,
    /// The layout and theme stylesheets, in order.
    pub stylesheets: Vec<String>,
    /// The theme's favicon.
    pub favicon: String,
    /// The logo.
    pub logo: String,
    /// `extra.footer`.
    pub footer: Option<String>,
    /// The pages' Content-Security-Policy: no scripts, stylesheets from the issuer and inline, images from
    /// the issuer, `data:` and the origins of configured logo URLs, no framing.
    pub csp: String,
}

impl Default for Chrome {
    /// The built-in light theme at the root path: for a page rendered outside a request of the router.
    fn default() -> Self {
        Site::new(&Frontend::default(), "", &[], HashMap::new(), HashMap::new()).chrome.as_ref().clone()
    }
}

/// The files under `theme/` and `static/`, and the page chrome that links them.
#[derive(Debug)]
pub struct Site {
    theme: HashMap<String, Asset>,
    statics: HashMap<String, Asset>,
    chrome: Arc<Chrome>,
}

// === impl Site ===

impl Site {
    /// Loads the built-in files and those of `frontend.dir` (which replace built-in ones of the same path).
    pub fn load(config: &Config) -> Result<Self, FrontendError> {
        let f = &config.frontend;
        let (mut theme, mut statics) = (HashMap::new(), HashMap::new());
        if let Some(dir) = &f.dir {
            let mut budget = Budget { files: 0, bytes: 0, root: dir.clone() };
            for (sub, into) in [(dir.join("themes").join(&f.theme), &mut theme), (dir.join("static"), &mut statics)] {
                if sub.is_dir() {
                    read_tree(&sub, "", 0, into, &mut budget)?;
                }
            }
        }
        let client_logos: Vec<&str> = config.static_clients.iter().filter_map(|c| c.logo_url.as_deref()).collect();
        Ok(Self::new(f, &config.path_prefix(), &client_logos, theme, statics))
    }

    fn new(
        f: &Frontend,
        prefix: &str,
        client_logos: &[&str],
        mut theme: HashMap<String, Asset>,
        mut statics: HashMap<String, Asset>,
    ) -> Self {
        for (name, bytes) in built_in_theme(&f.theme) {
            theme.entry(name.to_owned()).or_insert_with(|| Asset::new(name, bytes.to_vec()));
        }
        statics.entry("layout.css".to_owned()).or_insert_with(|| Asset::new("layout.css", LAYOUT_CSS.to_vec()));
        let versioned = |base: &str, name: &str, files: &HashMap<String, Asset>| {
            let v = files.get(name).map(|a| format!("?v={}", a.version())).unwrap_or_default();
            format!("{prefix}/{base}/{name}{v}")
        };
        let logo = match &f.logo_url {
            Some(url) => image_href(prefix, url),
            None => versioned("theme", "logo.png", &theme),
        };
        let mut img_src = vec!["'self'".to_owned(), "data:".to_owned()];
        for origin in f.logo_url.iter().map(String::as_str).chain(client_logos.iter().copied()).filter_map(image_origin)
        {
            if !img_src.contains(&origin) {
                img_src.push(origin);
            }
        }
        let chrome = Chrome {
            name: f.issuer.clone(),
            stylesheets: vec![versioned("static", "layout.css", &statics), versioned("theme", "styles.css", &theme)],
            favicon: versioned("theme", "favicon.png", &theme),
            logo,
            footer: f.footer().map(str::to_owned),
            csp: format!(
                "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src {}; frame-ancestors 'none'",
                img_src.join(" ")
            ),
        };
        Self { theme, statics, chrome: Arc::new(chrome) }
    }

    /// A file of the theme (`{issuer}/theme/{path}`).
    pub fn theme_file(&self, path: &str) -> Option<&Asset> {
        self.theme.get(path)
    }

    /// A static file (`{issuer}/static/{path}`).
    pub fn static_file(&self, path: &str) -> Option<&Asset> {
        self.statics.get(path)
    }

    /// What pages show around their content.
    pub fn chrome(&self) -> &Arc<Chrome> {
        &self.chrome
    }
}

struct Budget {
    files: usize,
    bytes: u64,
    root: PathBuf,
}

/// Reads every file under `dir` into `into`, keyed by its `/`-separated path below the walk's start
/// (`prefix`). Names that are not UTF-8 or start with a dot are skipped: no URL names them.
fn read_tree(
    dir: &Path,
    prefix: &str,
    depth: usize,
    into: &mut HashMap<String, Asset>,
    budget: &mut Budget,
) -> Result<(), FrontendError> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| FrontendError::Read { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if name.starts_with('.') {
            continue;
        }
        let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        let meta = std::fs::metadata(&path).map_err(read_err(&path))?;
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                read_tree(&path, &key, depth + 1, into, budget)?;
            }
        } else if meta.is_file() {
            budget.files += 1;
            budget.bytes += meta.len();
            if budget.files > MAX_FILES || budget.bytes > MAX_BYTES {
                return Err(FrontendError::TooLarge { path: budget.root.clone() });
            }
            let body = std::fs::read(&path).map_err(read_err(&path))?;
            into.insert(key, Asset::new(&name, body));
        }
    }
    Ok(())
}

tokio::task_local! {
    static CHROME: Arc<Chrome>;
}

/// Runs `fut` (a request's handling) with `chrome` as what its pages show (see [`current`]).
pub async fn with_chrome<F: Future>(chrome: Arc<Chrome>, fut: F) -> F::Output {
    CHROME.scope(chrome, fut).await
}

/// The chrome of the request being handled: the router sets it for every request, so pages rendered by any
/// handler (or error path) carry the configured name, theme and logo. Outside a request, the built-in one.
pub fn current() -> Arc<Chrome> {
    CHROME.try_with(Arc::clone).unwrap_or_else(|_| Arc::new(Chrome::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Frontend, Vec<String>) {
        let raw: RawFrontend = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let f = Frontend::parse(raw, &mut problems);
        (f, problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn image_urls_are_urls_or_paths_that_stay_under_the_issuer() {
        let cases: &[(&str, bool)] = &[
            ("https://cdn.example.com/logo.svg", true),
            ("http://127.0.0.1:8080/logo.png", true),
            ("/assets/logo.png", true),
            ("theme/logo.png", true),
            ("static/img/brand.png?v=2", true),
            ("", false),
            ("javascript:alert(1)", false),
            ("data:image/png;base64,AAAA", false),
            ("ftp://example.com/logo.png", false),
            ("//evil.example/logo.png", false),
            ("../secrets/logo.png", false),
            ("static/../../logo.png", false),
            ("logo .png", false),
            ("logo\".png", false),
        ];
        for (value, ok) in cases {
            assert_eq!(check_image_url(value).is_ok(), *ok, "{value:?}");
        }
        assert_eq!(image_href("/dex", "theme/logo.png"), "/dex/theme/logo.png");
        assert_eq!(image_href("/dex", "/logo.png"), "/logo.png");
        assert_eq!(image_href("", "https://cdn.example.com/l.png"), "https://cdn.example.com/l.png");
    }

    #[test]
    fn themes_are_light_dark_or_a_directory_of_frontend_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("themes/brand")).unwrap();
        let d = dir.path().display();
        let cases: &[(String, Result<&str, &str>)] = &[
            (String::new(), Ok("light")),
            ("theme: dark".into(), Ok("dark")),
            ("theme: coreos".into(), Ok("light")),
            (format!("{{theme: brand, dir: {d}}}"), Ok("brand")),
            ("theme: brand".into(), Err("frontend.theme: expected \"light\", \"dark\" or the name of a directory")),
            (format!("{{theme: ../brand, dir: {d}}}"), Err("frontend.theme: expected")),
            (format!("{{theme: missing, dir: {d}}}"), Err("frontend.theme: expected")),
            ("dir: /nonexistent/web".into(), Err("frontend.dir: expected an existing directory")),
            ("logoURL: 'javascript:x'".into(), Err("frontend.logoURL: expected an http(s) URL")),
        ];
        for (yaml, want) in cases {
            let (f, problems) = parse(if yaml.is_empty() { "{}" } else { yaml });
            match want {
                Ok(theme) => assert_eq!((f.theme.as_str(), problems.len()), (*theme, 0), "{yaml}: {problems:?}"),
                Err(p) => {
                    assert_eq!(problems.len(), 1, "{yaml}: {problems:?}");
                    assert!(problems[0].starts_with(p), "{yaml}: {problems:?}");
                }
            }
        }
    }

    #[test]
    fn defaults_name_the_product_and_use_the_light_theme() {
        let (f, problems) = parse("{issuer: '  '}");
        assert!(problems.is_empty());
        assert_eq!((f.issuer.as_str(), f.theme.as_str()), (DEFAULT_NAME, "light"));
        let chrome = Chrome::default();
        assert_eq!(chrome.name, DEFAULT_NAME);
        assert!(chrome.logo.starts_with("/theme/logo.png?v="), "{}", chrome.logo);
        assert!(chrome.stylesheets[1].starts_with("/theme/styles.css?v="), "{:?}", chrome.stylesheets);
    }

    #[test]
    fn warnings_name_an_unused_templates_dir_and_unused_extra_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        let (f, _) = parse(&format!("{{dir: {}, extra: {{footer: x, tagline: y}}}}", dir.path().display()));
        let w = f.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains(&dir.path().join("templates").display().to_string()), "{w:?}");
        assert!(w[0].contains("built-in pages are used"), "{w:?}");
        assert!(w[1].starts_with("frontend.extra.tagline: accepted but shown on no page"), "{w:?}");
        assert!(parse("{extra: {footer: x, loginHint: y}}").0.warnings().is_empty());
    }

    #[test]
    fn files_of_the_dir_replace_built_in_ones_and_logo_origins_join_img_src() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("themes/dark")).unwrap();
        std::fs::create_dir_all(dir.path().join("static/img")).unwrap();
        std::fs::write(dir.path().join("themes/dark/styles.css"), "body { color: red }").unwrap();
        std::fs::write(dir.path().join("static/img/brand.svg"), "<svg/>").unwrap();
        std::fs::write(dir.path().join("static/.hidden"), "x").unwrap();
        let (f, problems) =
            parse(&format!("{{theme: dark, dir: {}, logoURL: 'https://cdn.example.com/l.png'}}", dir.path().display()));
        assert!(problems.is_empty(), "{problems:?}");
        let mut theme = HashMap::new();
        let mut statics = HashMap::new();
        let mut budget = Budget { files: 0, bytes: 0, root: dir.path().into() };
        read_tree(&dir.path().join("themes/dark"), "", 0, &mut theme, &mut budget).unwrap();
        read_tree(&dir.path().join("static"), "", 0, &mut statics, &mut budget).unwrap();
        let site = Site::new(&f, "/dex", &["https://apps.example.org/app.png", "/local.png"], theme, statics);
        assert_eq!(&site.theme_file("styles.css").unwrap().body[..], b"body { color: red }");
        assert_eq!(&site.theme_file("logo.png").unwrap().body[..], include_bytes!("../web/themes/dark/logo.png"));
        assert_eq!(site.static_file("img/brand.svg").unwrap().content_type, "image/svg+xml");
        assert!(site.static_file(".hidden").is_none(), "dot files are not served");
        assert!(site.static_file("layout.css").is_some(), "the built-in layout stays");
        let c = site.chrome();
        assert_eq!(c.logo, "https://cdn.example.com/l.png");
        assert!(c.csp.contains("img-src 'self' data: https://cdn.example.com https://apps.example.org;"), "{}", c.csp);
    }
}
