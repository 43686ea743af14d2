//! The floor of Coffer's HTTPS stack, for `benches/https/floor.py`.
//!
//! The same runtime, TLS and HTTP layers as Coffer's HTTPS front end (a multi-thread tokio
//! runtime, rustls with the aws-lc-rs provider, hyper-util's HTTP/1.1 + HTTP/2 server, an
//! axum router), and no work of Coffer's own: no credential, no lookup, no key, no cipher,
//! no audit.
//!
//! - `GET /f/{name}` answers 4,096 bytes from memory;
//! - `PUT /f/{name}` reads the body and answers 201;
//! - `PUT /durable/{name}` also appends the body to one file under DIR and flushes it
//!   (`fdatasync`) before answering: the one durable write an upload needs at least.
//!
//! A small request on this server costs what any server built on these crates costs before
//! it does anything; the gap between it and nginx is the stack's, not Coffer's.
//!
//! Usage: `https_floor ADDR CERT_PEM KEY_PEM DIR`

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

static BODY: [u8; 4096] = [0x5a; 4096];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, cert, key, dir] = args.as_slice() else {
        return Err("usage: https_floor ADDR CERT_PEM KEY_PEM DIR".into());
    };
    let addr: SocketAddr = addr.parse()?;
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let log = File::options()
        .create(true)
        .append(true)
        .open(std::path::Path::new(dir).join("durable.log"))?;
    let app = Router::new()
        .route("/f/{name}", get(|| async { Bytes::from_static(&BODY) }))
        .route("/f/{name}", put(|_: Bytes| async { StatusCode::CREATED }))
        .route("/durable/{name}", put(durable))
        .with_state(Arc::new(Mutex::new(log)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The HTTP/2 settings of Coffer's listener (protocol/src/https/server.rs).
        builder
            .http2()
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(32 << 20)
            .max_frame_size(256 << 10);
        let builder = Arc::new(builder);
        loop {
            let (stream, _) = listener.accept().await?;
            let (acceptor, builder, app) = (acceptor.clone(), builder.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = TowerToHyperService::new(app);
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}

/// Appends the body to the log and flushes it before answering, on the calling worker as
/// Coffer's commit in place does (`block_in_place`).
async fn durable(State(log): State<Arc<Mutex<File>>>, body: Bytes) -> StatusCode {
    let written = tokio::task::block_in_place(|| {
        let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&body)?;
        file.sync_data()
    });
    match written {
        Ok(()) => StatusCode::CREATED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
