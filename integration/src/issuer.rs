//! A token issuer for tests, built on the OpenSSL command line: keys are generated at test time
//! (never committed), tokens are signed by OpenSSL, so the filter's verifier is checked against an
//! independent implementation. Also a JWKS server whose behaviour a test switches (serve, fail,
//! hang, HTML, rotate) and whose hits it counts.

use base64ct::{Base64UrlUnpadded, Encoding};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub fn b64url(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
    /// A 64-byte HMAC secret (enough for HS512).
    Hmac,
}

/// A key pair (or secret) in a temporary directory.
#[derive(Debug)]
pub struct Key {
    pub kid: String,
    pub kind: KeyKind,
    pem: PathBuf,
    secret: Vec<u8>,
    /// The public JWK (the secret itself for HMAC).
    pub jwk: Value,
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("openssl not runnable ({e}); scripts/setup.sh installs it"))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(out.stdout)
}

fn hex_decode(s: &str) -> Result<Vec<u8>, Error> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::from(format!("bad hex at {i}")))
        })
        .collect()
}

/// A directory for keys, removed when dropped.
#[derive(Debug)]
pub struct KeyDir(PathBuf);

impl KeyDir {
    pub fn new() -> Result<Self, Error> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-keys-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Generates a key of `kind` named `kid`.
    pub fn key(&self, kind: KeyKind, kid: &str) -> Result<Key, Error> {
        let pem = self.0.join(format!("{kid}.pem"));
        let pem_s = pem.display().to_string();
        let gen_args: &[&str] = match kind {
            KeyKind::Rsa => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            KeyKind::P256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyKind::P384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            KeyKind::Ed25519 => &["-algorithm", "ED25519"],
            KeyKind::Hmac => &[],
        };
        let mut secret = Vec::new();
        let jwk = match kind {
            KeyKind::Hmac => {
                secret = openssl(&["rand", "64"], None)?;
                json!({"kty": "oct", "kid": kid, "k": b64url(&secret)})
            }
            _ => {
                let mut args = vec!["genpkey"];
                args.extend_from_slice(gen_args);
                args.extend_from_slice(&["-out", &pem_s]);
                openssl(&args, None)?;
                let der = openssl(&["pkey", "-in", &pem_s, "-pubout", "-outform", "DER"], None)?;
                match kind {
                    KeyKind::Rsa => {
                        let out = openssl(&["rsa", "-in", &pem_s, "-noout", "-modulus"], None)?;
                        let text = String::from_utf8(out)?;
                        let hex = text.trim().strip_prefix("Modulus=").ok_or("no modulus")?;
                        // genpkey's default public exponent is 65537.
                        json!({"kty": "RSA", "kid": kid, "n": b64url(&hex_decode(hex)?), "e": "AQAB"})
                    }
                    KeyKind::P256 | KeyKind::P384 => {
                        let (size, crv) = if kind == KeyKind::P256 {
                            (32, "P-256")
                        } else {
                            (48, "P-384")
                        };
                        // The SPKI ends with the uncompressed point 04 || x || y.
                        let point = der.get(der.len() - (2 * size + 1)..).ok_or("short SPKI")?;
                        json!({"kty": "EC", "kid": kid, "crv": crv,
                               "x": b64url(&point[1..=size]), "y": b64url(&point[size + 1..])})
                    }
                    _ => {
                        let x = der.get(der.len() - 32..).ok_or("short SPKI")?;
                        json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64url(x)})
                    }
                }
            }
        };
        Ok(Key {
            kid: kid.to_owned(),
            kind,
            pem,
            secret,
            jwk,
        })
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Key {
    /// The signature OpenSSL makes with this key for `alg` over `input`, in JWS form (ECDSA as
    /// fixed-size `r || s`).
    pub fn sign_input(&self, alg: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let pem = self.pem.display().to_string();
        let digest = match &alg[2..] {
            "256" => "-sha256",
            "384" => "-sha384",
            "512" => "-sha512",
            _ => "",
        };
        match (self.kind, &alg[..2]) {
            (KeyKind::Rsa, "RS") => openssl(&["dgst", digest, "-binary", "-sign", &pem], Some(input)),
            (KeyKind::Rsa, "PS") => openssl(
                &[
                    "dgst",
                    digest,
                    "-binary",
                    "-sign",
                    &pem,
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:digest",
                ],
                Some(input),
            ),
            (KeyKind::P256 | KeyKind::P384, "ES") => {
                let der = openssl(&["dgst", digest, "-binary", "-sign", &pem], Some(input))?;
                let size = if self.kind == KeyKind::P256 { 32 } else { 48 };
                der_ecdsa_to_jws(&der, size)
            }
            (KeyKind::Ed25519, "Ed") => {
                let file = self.pem.with_extension("input");
                std::fs::write(&file, input)?;
                let f = file.display().to_string();
                openssl(&["pkeyutl", "-sign", "-inkey", &pem, "-rawin", "-in", &f], None)
            }
            (KeyKind::Hmac, "HS") => {
                let hex: String = self.secret.iter().map(|b| format!("{b:02x}")).collect();
                openssl(
                    &[
                        "dgst",
                        digest,
                        "-binary",
                        "-mac",
                        "HMAC",
                        "-macopt",
                        &format!("hexkey:{hex}"),
                    ],
                    Some(input),
                )
            }
            _ => Err(format!("{alg} does not fit a {:?} key", self.kind).into()),
        }
    }

    /// A compact JWS of `claims` with header `{"alg", "kid", "typ"}`.
    pub fn sign(&self, alg: &str, claims: &Value) -> Result<String, Error> {
        self.sign_with_header(&json!({"alg": alg, "kid": self.kid, "typ": "JWT"}), claims)
    }

    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> Result<String, Error> {
        let alg = header["alg"].as_str().ok_or("header without alg")?;
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self.sign_input(alg, input.as_bytes())?;
        Ok(format!("{input}.{}", b64url(&sig)))
    }

    /// The private key as PEM, as OpenSSL wrote it at test time (empty for HMAC).
    pub fn private_pem(&self) -> std::io::Result<String> {
        if self.kind == KeyKind::Hmac {
            return Ok(String::new());
        }
        std::fs::read_to_string(&self.pem)
    }

    /// The algorithms this key signs.
    pub fn algs(&self) -> &'static [&'static str] {
        match self.kind {
            KeyKind::Rsa => &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
            KeyKind::P256 => &["ES256"],
            KeyKind::P384 => &["ES384"],
            KeyKind::Ed25519 => &["EdDSA"],
            KeyKind::Hmac => &["HS256", "HS384", "HS512"],
        }
    }
}

/// DER `ECDSA-Sig-Value` → `r || s`, each left-padded to `size` bytes.
fn der_ecdsa_to_jws(der: &[u8], size: usize) -> Result<Vec<u8>, Error> {
    fn int(b: &[u8]) -> Result<(&[u8], &[u8]), Error> {
        if b.first() != Some(&0x02) {
            return Err("expected INTEGER".into());
        }
        let len = *b.get(1).ok_or("short")? as usize;
        let v = b.get(2..2 + len).ok_or("short")?;
        Ok((v, &b[2 + len..]))
    }
    // SEQUENCE, short or one-byte long form length.
    let body = match der {
        [0x30, 0x81, _, rest @ ..] => rest,
        [0x30, _, rest @ ..] => rest,
        _ => return Err("expected SEQUENCE".into()),
    };
    let (r, rest) = int(body)?;
    let (s, _) = int(rest)?;
    let mut out = vec![0u8; 2 * size];
    for (i, v) in [r, s].into_iter().enumerate() {
        let v = v.strip_prefix(&[0]).unwrap_or(v);
        let v = if v.len() > size { &v[v.len() - size..] } else { v };
        out[(i + 1) * size - v.len()..(i + 1) * size].copy_from_slice(v);
    }
    Ok(out)
}

/// `{"keys": [...]}` of the keys' public JWKs.
pub fn jwks(keys: &[&Key]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the JWKS server answers.
#[derive(Debug, Clone)]
pub enum Mode {
    Serve(Value),
    Status(u16),
    Html,
    /// Holds the request this long before answering 200 with an empty set.
    Hang(Duration),
}

/// A JWKS endpoint on loopback (any path). Stops when dropped.
pub struct JwksServer {
    pub port: u16,
    mode: Arc<Mutex<Mode>>,
    hits: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl JwksServer {
    pub fn start(mode: Mode) -> Result<Self, Error> {
        Self::start_on("127.0.0.1:0", mode)
    }

    /// Serves on `addr` (the demo's fixed port).
    pub fn start_on(addr: &str, mode: Mode) -> Result<Self, Error> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let mode = Arc::new(Mutex::new(mode));
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (m, h) = (mode.clone(), hits.clone());
        std::thread::Builder::new().name("jwks".into()).spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let serve = async move {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let (m, h) = (m.clone(), h.clone());
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |_req| {
                                let (m, h) = (m.clone(), h.clone());
                                async move {
                                    h.fetch_add(1, Ordering::SeqCst);
                                    let mode = m.lock().map(|g| g.clone()).unwrap_or(Mode::Status(500));
                                    let (status, ct, body) = match mode {
                                        Mode::Serve(v) => (200, "application/json", v.to_string()),
                                        Mode::Status(s) => (s, "application/json", "{}".to_owned()),
                                        Mode::Html => {
                                            (200, "text/html", "<html><body>login</body></html>".to_owned())
                                        }
                                        Mode::Hang(d) => {
                                            tokio::time::sleep(d).await;
                                            (200, "application/json", r#"{"keys":[]}"#.to_owned())
                                        }
                                    };
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", ct)
                                        .body(Full::new(Bytes::from(body)))
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
            });
        })?;
        Ok(Self {
            port,
            mode,
            hits,
            _stop: stop,
        })
    }

    pub fn set(&self, mode: Mode) {
        if let Ok(mut m) = self.mode.lock() {
            *m = mode;
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
