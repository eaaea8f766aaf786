//! A static file server for `www/` with the headers the page needs: cross-origin
//! isolation (for SharedArrayBuffer and precise timers), a strict CSP, correct MIME types
//! (browsers refuse module scripts and streaming wasm compilation otherwise), and Range
//! requests for large model files.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

/// Request threads. A thread answering with a large model file stays busy for as long as the
/// client takes to read it — a page whose worker is computing reads slowly, and a closed page's
/// socket may take a while to fail — so keep far more than a browser's six connections per
/// origin: with 8, browser tests under load saw the page's own module scripts wait for a free
/// thread for over a minute.
const WORKERS: usize = 32;

/// Most origins one script URL may add to its `connect-src` (keeps the header short).
const MAX_CONNECT: usize = 16;

/// The Content-Security-Policy of the page (`connect` empty) and of every script. A dedicated
/// worker's policy is the one delivered with its own main script, not the page's, so scripts
/// carry one too; the headers of modules it imports are ignored. `connect` holds the sources a
/// worker URL asked for with `?connect=` (already checked by [`connect_source`]): the model
/// hosts the user chose, so the worker can reach those and nothing else.
fn csp(connect: &[String]) -> String {
    let mut connect_src = String::from("'self'");
    for source in connect {
        connect_src.push(' ');
        connect_src.push_str(source);
    }
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; \
         connect-src {connect_src}; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:; object-src 'none'; base-uri 'self'"
    )
}

/// The `connect` query parameters of a request target as CSP sources; `Err` when one is not a
/// plain http(s) origin (see [`connect_source`]) or there are too many.
fn connect_params(target: &str) -> Result<Vec<String>, ()> {
    let Some((_, query)) = target.split_once('?') else {
        return Ok(Vec::new());
    };
    let query = query.split('#').next().unwrap_or("");
    let mut sources = Vec::new();
    for pair in query.split('&') {
        let Some(("connect", value)) = pair.split_once('=') else {
            continue;
        };
        let source = percent_decode(value)
            .as_deref()
            .and_then(connect_source)
            .ok_or(())?;
        if !sources.contains(&source) {
            sources.push(source);
        }
    }
    if sources.len() > MAX_CONNECT {
        return Err(());
    }
    Ok(sources)
}

/// `value` as a CSP host source if it is `http(s)://host[:port]`: the host a DNS name or IPv4
/// address (letters, digits, hyphens, dots), optionally prefixed with `*.` (its subdomains, where
/// a Hub serves its large files). Everything else — a path, a quote, a space, a semicolon,
/// userinfo, another scheme — is refused, so a parameter can add an origin to `connect-src` but
/// never another directive or keyword.
fn connect_source(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, port) = match rest.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    if let Some(port) = port {
        let digits =
            !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !digits || port.parse::<u32>().ok()? > 65535 {
            return None;
        }
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !name.split('.').all(label_ok) {
        return None;
    }
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("{scheme}://{}{port}", host.to_ascii_lowercase()))
}

/// A running server. Dropping it stops the server and waits for its threads.
pub struct ServerHandle {
    addr: SocketAddr,
    server: Arc<Server>,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address actually bound (a free port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks while the server runs (until the process is interrupted).
    pub fn wait(mut self) {
        for worker in std::mem::take(&mut self.workers) {
            let _ = worker.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Each unblock wakes exactly one thread waiting in `recv`.
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Serves the files under `root` on `addr` from background threads.
pub fn serve_dir(root: &Path, addr: SocketAddr) -> Result<ServerHandle> {
    let root = root
        .canonicalize()
        .with_context(|| format!("cannot serve {}: no such directory", root.display()))?;
    let server = Server::http(addr).map_err(|err| anyhow!("cannot listen on {addr}: {err}"))?;
    let addr = server
        .server_addr()
        .to_ip()
        .context("the server is not listening on an IP address")?;
    let server = Arc::new(server);
    let stopping = Arc::new(AtomicBool::new(false));
    let workers = (0..WORKERS)
        .map(|i| {
            let (server, stopping, root) = (server.clone(), stopping.clone(), root.clone());
            std::thread::Builder::new()
                .name(format!("serve-{i}"))
                .spawn(move || worker(&server, &stopping, &root))
                .context("cannot start a server thread")
        })
        .collect::<Result<_>>()?;
    Ok(ServerHandle {
        addr,
        server,
        stopping,
        workers,
    })
}

fn worker(server: &Server, stopping: &AtomicBool, root: &Path) {
    loop {
        match server.recv() {
            Ok(request) => {
                let line = format!("{} {}", request.method(), request.url());
                let (status, result) = respond(request, root);
                // Successes are routine; failures usually mean a wrong path in the page or
                // a test, which is worth seeing in the terminal.
                if status >= 400 {
                    eprintln!("serve: {line} -> {status}");
                }
                if let Err(err) = result {
                    eprintln!("serve: {line}: {err}");
                }
            }
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(err) => eprintln!("serve: {err}"),
        }
    }
}

type Body = Box<dyn Read + Send>;

/// Answers one request; returns the status sent and whether sending worked.
fn respond(request: Request, root: &Path) -> (u16, io::Result<()>) {
    let response = match request.method() {
        Method::Get | Method::Head => file_response(&request, root),
        _ => text(405, "405 Method Not Allowed\n").with_header(header("Allow", "GET, HEAD")),
    };
    let status = response.status_code().0;
    (status, request.respond(response))
}

fn file_response(request: &Request, root: &Path) -> Response<Body> {
    let url_path = request.url();
    let path = match resolve(root, url_path) {
        Resolved::File(path) => path,
        Resolved::AddSlash => {
            // A directory without its trailing slash would resolve the index page's
            // relative links against the parent directory.
            let (path, query) = url_path.split_at(url_path.find('?').unwrap_or(url_path.len()));
            let location = format!("{path}/{query}");
            return text(301, "301 Moved Permanently\n").with_header(header("Location", &location));
        }
        Resolved::Forbidden => return text(403, "403 Forbidden\n"),
        Resolved::NotFound => return text(404, "404 Not Found\n"),
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return text(404, "404 Not Found\n"),
        Err(_) => return text(403, "403 Forbidden\n"),
    };
    let len = match file.metadata() {
        Ok(meta) => meta.len(),
        Err(_) => return text(500, "500 Internal Server Error\n"),
    };
    let content_type = content_type(&path);
    let policy = if content_type.starts_with("text/html") {
        // The page's policy is fixed: a query string cannot widen it.
        Some(csp(&[]))
    } else if content_type.starts_with("text/javascript") {
        match connect_params(url_path) {
            Ok(connect) => Some(csp(&connect)),
            Err(()) => {
                return text(
                    400,
                    "400 Bad Request: each connect parameter must be one http(s) origin\n",
                )
            }
        }
    } else {
        None
    };
    let range = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .map_or(RangeRequest::Full, |h| parse_range(h.value.as_str(), len));
    let (status, body, body_len, content_range) = match range {
        RangeRequest::Full => (200, Box::new(file) as Body, len, None),
        RangeRequest::Partial { start, end } => {
            let mut file = file;
            if file.seek(SeekFrom::Start(start)).is_err() {
                return text(500, "500 Internal Server Error\n");
            }
            let body_len = end - start + 1;
            let content_range = format!("bytes {start}-{end}/{len}");
            (
                206,
                Box::new(file.take(body_len)) as Body,
                body_len,
                Some(content_range),
            )
        }
        RangeRequest::Unsatisfiable => {
            return text(416, "416 Range Not Satisfiable\n")
                .with_header(header("Content-Range", &format!("bytes */{len}")));
        }
    };
    let Ok(body_len) = usize::try_from(body_len) else {
        return text(500, "500 Internal Server Error\n");
    };
    let mut response = with_common_headers(
        Response::new(StatusCode(status), Vec::new(), body, Some(body_len), None),
        content_type,
    )
    .with_header(header("Accept-Ranges", "bytes"));
    if let Some(content_range) = content_range {
        response = response.with_header(header("Content-Range", &content_range));
    }
    if let Some(policy) = policy {
        response = response.with_header(header("Content-Security-Policy", &policy));
    }
    response
}

/// A short plain-text response (errors, redirects).
fn text(status: u16, body: &'static str) -> Response<Body> {
    let response = Response::new(
        StatusCode(status),
        Vec::new(),
        Box::new(body.as_bytes()) as Body,
        Some(body.len()),
        None,
    );
    with_common_headers(response, "text/plain; charset=utf-8")
}

fn with_common_headers(response: Response<Body>, content_type: &str) -> Response<Body> {
    response
        // tiny_http switches to chunked encoding above 32 KiB by default, which drops
        // Content-Length; fetch() progress bars for model downloads need it.
        .with_chunked_threshold(usize::MAX)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cross-Origin-Opener-Policy", "same-origin"))
        .with_header(header("Cross-Origin-Embedder-Policy", "require-corp"))
        .with_header(header("Cross-Origin-Resource-Policy", "same-origin"))
        .with_header(header("Cache-Control", "no-cache"))
        .with_header(header("X-Content-Type-Options", "nosniff"))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values are ASCII")
}

/// The Content-Type for a file, from its name.
fn content_type(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".d.ts") {
        return "text/plain; charset=utf-8";
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "jsonl" => "application/jsonl",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" | "ts" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        _ => "application/octet-stream", // includes .gguf, .safetensors, .bin
    }
}

/// Where a request path leads.
#[derive(Debug, PartialEq)]
enum Resolved {
    File(PathBuf),
    /// A directory asked for without its trailing slash.
    AddSlash,
    Forbidden,
    NotFound,
}

/// Maps a request target (`/a/b.js?x=1`) to a file under `root`. Any `..` segment,
/// percent-encoded or not, is refused outright instead of being normalised, so no
/// request can name a file outside `root`.
fn resolve(root: &Path, target: &str) -> Resolved {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let Some(path) = path.strip_prefix('/') else {
        return Resolved::NotFound;
    };
    let Some(decoded) = percent_decode(path) else {
        return Resolved::NotFound;
    };
    let mut file = root.to_path_buf();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Resolved::Forbidden,
            // A backslash or NUL never belongs in a URL path; on Windows a backslash
            // would also separate path components.
            s if s.contains(['\\', '\0']) => return Resolved::Forbidden,
            s => file.push(s),
        }
    }
    if file.is_dir() {
        if !decoded.is_empty() && !decoded.ends_with('/') {
            return Resolved::AddSlash;
        }
        file.push("index.html");
    }
    if file.is_file() {
        Resolved::File(file)
    } else {
        Resolved::NotFound
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How to answer a request given its `Range` header.
#[derive(Debug, PartialEq)]
enum RangeRequest {
    /// No usable range: send the whole file with 200.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial { start: u64, end: u64 },
    /// The range starts past the end of the file: 416.
    Unsatisfiable,
}

/// Parses a `Range` header for a file of `len` bytes. Only a single byte range is
/// supported; anything else (several ranges, other units, malformed) is ignored, which
/// HTTP allows, and the whole file is sent.
fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (first.trim().is_empty(), last.trim().is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len.saturating_sub(1)),
            None => return RangeRequest::Full,
        },
        // `bytes=A-`: from A to the end.
        (false, true) => match parse(first) {
            Some(start) => (start, len.saturating_sub(1)),
            None => return RangeRequest::Full,
        },
        // `bytes=A-B`, with B clamped to the file.
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
            _ => return RangeRequest::Full,
        },
        (true, true) => return RangeRequest::Full,
    };
    if len == 0 || start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::net::TcpStream;

    /// A fresh directory tree under the system temp dir, removed on drop.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xtask-serve-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("www/sub")).unwrap();
            fs::create_dir_all(dir.join("www/empty")).unwrap();
            fs::write(dir.join("www/index.html"), "<!doctype html>root").unwrap();
            fs::write(dir.join("www/sub/index.html"), "sub").unwrap();
            fs::write(dir.join("www/sub/a b.js"), "export {};").unwrap();
            fs::write(dir.join("www/worker.js"), "export {};").unwrap();
            fs::write(dir.join("secret.txt"), "outside").unwrap();
            TempTree(dir)
        }

        fn www(&self) -> PathBuf {
            self.0.join("www")
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn resolves_index_pages() {
        let tree = TempTree::new("index");
        let www = tree.www();
        assert_eq!(resolve(&www, "/"), Resolved::File(www.join("index.html")));
        assert_eq!(
            resolve(&www, "/?x=1"),
            Resolved::File(www.join("index.html"))
        );
        assert_eq!(
            resolve(&www, "/sub/"),
            Resolved::File(www.join("sub/index.html"))
        );
        assert_eq!(resolve(&www, "/sub"), Resolved::AddSlash);
        assert_eq!(resolve(&www, "/empty/"), Resolved::NotFound);
        assert_eq!(
            resolve(&www, "/sub/a%20b.js"),
            Resolved::File(www.join("sub/a b.js"))
        );
        assert_eq!(resolve(&www, "/missing.js"), Resolved::NotFound);
    }

    #[test]
    fn rejects_traversal() {
        let tree = TempTree::new("traversal");
        let www = tree.www();
        for target in [
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E%2Fsecret.txt",
            "/sub/..%2f..%2fsecret.txt",
            "/..%5csecret.txt",
            "/sub%2f..%2f..%2fsecret.txt",
            "/a%00b",
        ] {
            assert_eq!(resolve(&www, target), Resolved::Forbidden, "{target}");
        }
        for target in ["secret.txt", "/%zz", "/%2", "/%ff"] {
            assert_eq!(resolve(&www, target), Resolved::NotFound, "{target}");
        }
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("100%"), None);
        assert_eq!(percent_decode("%g1"), None);
    }

    #[test]
    fn parses_ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Partial { start: 0, end: 9 });
        assert_eq!(
            parse_range("bytes=10-", 100),
            Partial { start: 10, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-200", 100),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=90-200", 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=99-99", 100),
            Partial { start: 99, end: 99 }
        );
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        // Ignored: served whole.
        assert_eq!(parse_range("bytes=5-1", 100), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range("items=0-1", 100), Full);
        assert_eq!(parse_range("bytes=a-b", 100), Full);
        assert_eq!(parse_range("bytes=-", 100), Full);
        assert_eq!(parse_range("bytes=5", 100), Full);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type(Path::new("a/webtune.d.ts")),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x.WASM")), "application/wasm");
        assert_eq!(
            content_type(Path::new("m.gguf")),
            "application/octet-stream"
        );
        assert_eq!(
            content_type(Path::new("i.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }

    #[test]
    fn connect_sources() {
        assert_eq!(
            connect_source("https://huggingface.co").as_deref(),
            Some("https://huggingface.co")
        );
        assert_eq!(
            connect_source("HTTP://LocalHost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            connect_source("https://*.hf.co").as_deref(),
            Some("https://*.hf.co")
        );
        for bad in [
            "huggingface.co",
            "ftp://a.com",
            "https://a.com/",
            "https://a.com:",
            "https://a.com:80:80",
            "https://-a.com",
            "https://a..com",
            "https://*",
            "https://a.*.com",
            "https://a.com;script-src",
            "https://a com",
            "https://a.com\"",
        ] {
            assert_eq!(connect_source(bad), None, "{bad}");
        }
        assert_eq!(connect_params("/w.js"), Ok(vec![]));
        assert_eq!(connect_params("/w.js?connectx=1&x=connect"), Ok(vec![]));
        let many: Vec<String> = (0..=MAX_CONNECT)
            .map(|i| format!("connect=http%3A%2F%2Fh{i}.example"))
            .collect();
        assert_eq!(
            connect_params(&format!("/w.js?{}", many.join("&"))),
            Err(())
        );
    }

    /// Sends a raw HTTP/1.1 request and returns the whole response.
    fn fetch(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn serves_over_http() {
        let tree = TempTree::new("http");
        let server = serve_dir(&tree.www(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.addr();
        assert_ne!(addr.port(), 0);

        let get = |path: &str, extra: &str| {
            fetch(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"),
            )
        };
        let index = get("/", "");
        assert!(index.starts_with("HTTP/1.1 200"), "{index}");
        assert!(
            index.contains("Content-Type: text/html; charset=utf-8"),
            "{index}"
        );
        assert!(
            index.contains("Content-Security-Policy: default-src 'self'"),
            "{index}"
        );
        assert!(
            index.contains("Cross-Origin-Embedder-Policy: require-corp"),
            "{index}"
        );
        assert!(index.ends_with("<!doctype html>root"), "{index}");

        let js = get("/sub/a%20b.js", "");
        assert!(js.contains("Content-Type: text/javascript"), "{js}");
        assert!(js.contains("connect-src 'self'; "), "{js}");

        // A worker's policy comes from its own script: `connect-src 'self'` plus exactly the
        // origins its URL asked for, and nothing else whatever the query says.
        let csp_of = |response: &str| {
            response
                .lines()
                .find_map(|l| l.strip_prefix("Content-Security-Policy: "))
                .map(str::to_owned)
        };
        let connect_src = |response: &str| {
            csp_of(response).and_then(|p| {
                p.split("; ")
                    .find_map(|d| d.strip_prefix("connect-src "))
                    .map(str::to_owned)
            })
        };
        let worker = get("/worker.js", "");
        assert!(worker.starts_with("HTTP/1.1 200"), "{worker}");
        assert_eq!(connect_src(&worker).as_deref(), Some("'self'"), "{worker}");
        assert_eq!(csp_of(&worker), Some(csp(&[])), "{worker}");
        assert!(
            csp_of(&worker)
                .unwrap()
                .contains("script-src 'self' 'wasm-unsafe-eval'"),
            "{worker}"
        );
        let hub = get(
            "/worker.js?connect=https%3A%2F%2Fhuggingface.co&connect=https%3A%2F%2F*.hf.co\
             &connect=http%3A%2F%2F127.0.0.1%3A9000&x=1&connect=https%3A%2F%2FHuggingFace.co",
            "",
        );
        assert!(hub.starts_with("HTTP/1.1 200"), "{hub}");
        assert_eq!(
            connect_src(&hub).as_deref(),
            Some("'self' https://huggingface.co https://*.hf.co http://127.0.0.1:9000"),
            "{hub}"
        );
        for hostile in [
            "x%3B%20script-src%20*",
            "https%3A%2F%2Fa.com%3B%20script-src%20*",
            "javascript%3Aalert(1)",
            "https%3A%2F%2Fa.com%2Fpath",
            "https%3A%2F%2Fa.com%2F",
            "https%3A%2F%2Fa.com%27",
            "https%3A%2F%2Fa.com%20'unsafe-eval'",
            "'unsafe-inline'",
            "*",
            "https%3A%2F%2F*",
            "https%3A%2F%2Fuser%40a.com",
            "data%3A",
            "https%3A%2F%2Fa.com%3A99999",
            "https%3A%2F%2F%5B%3A%3A1%5D",
            "%zz",
            "",
        ] {
            let response = get(&format!("/worker.js?connect={hostile}"), "");
            assert!(
                response.starts_with("HTTP/1.1 400"),
                "{hostile}: {response}"
            );
            assert!(csp_of(&response).is_none(), "{hostile}: {response}");
        }
        // The page's own policy never takes a parameter.
        let page = get("/?connect=https%3A%2F%2Fa.com", "");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert_eq!(connect_src(&page).as_deref(), Some("'self'"), "{page}");

        let partial = get("/index.html", "Range: bytes=2-4\r\n");
        assert!(partial.starts_with("HTTP/1.1 206"), "{partial}");
        assert!(partial.contains("Content-Range: bytes 2-4/19"), "{partial}");
        assert!(partial.contains("Content-Length: 3"), "{partial}");
        assert!(partial.ends_with("\r\n\r\ndoc"), "{partial}");

        let head = fetch(
            addr,
            "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(head.contains("Content-Length: 19"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");

        let missing = get("/nope", "");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        assert!(
            missing.contains("Cross-Origin-Opener-Policy: same-origin"),
            "{missing}"
        );

        let traversal = get("/%2e%2e/secret.txt", "");
        assert!(traversal.starts_with("HTTP/1.1 403"), "{traversal}");

        let redirect = get("/sub?x", "");
        assert!(redirect.starts_with("HTTP/1.1 301"), "{redirect}");
        assert!(redirect.contains("Location: /sub/?x"), "{redirect}");

        let post = fetch(
            addr,
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        drop(server); // must return: every worker thread stops
    }
}
