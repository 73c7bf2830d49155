//! A real gRPC stack for the gRPC tests (included by them only, so the other
//! test binaries do not build tonic): tonic's server and client APIs (no code
//! generation), serving a small test service `test.Echo` — unary, server-,
//! client- and bidirectional streaming — and the standard health service
//! (`tonic-health`), over h2c or h2/TLS, with switches for failing statuses,
//! delays and GOAWAY.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::body::Body as TonicBody;
use tonic::codegen::Service;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_prost::ProstCodec;

use crate::support::{start_guarded, Leaf, StopGuard};

/// The test service's one message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    /// Server streaming: how many messages to answer with.
    #[prost(uint32, tag = "3")]
    pub count: u32,
}

impl Msg {
    pub fn text(text: &str) -> Msg {
        Msg {
            text: text.to_string(),
            ..Msg::default()
        }
    }
}

pub const UNARY: &str = "/test.Echo/Unary";
pub const SERVER_STREAM: &str = "/test.Echo/ServerStream";
pub const CLIENT_STREAM: &str = "/test.Echo/ClientStream";
pub const BIDI: &str = "/test.Echo/Bidi";

/// What the server does with each call.
#[derive(Clone, Copy, Debug, Default)]
pub enum Reply {
    /// Answers: unary echoes with its name; streams as described.
    #[default]
    Echo,
    /// Fails every call with this code, its message and trailing metadata
    /// `x-detail: <name>`.
    Status(Code),
    /// Waits this long, then echoes.
    Delay(Duration),
}

struct State {
    name: String,
    reply: Mutex<Reply>,
    calls: AtomicUsize,
    connections: AtomicUsize,
}

/// A running gRPC server on 127.0.0.1; stops when dropped.
pub struct GrpcServer {
    addr: SocketAddr,
    state: Arc<State>,
    health: HealthReporter,
    goaway: watch::Sender<u64>,
    _guard: StopGuard,
}

impl GrpcServer {
    /// An h2c server (prior knowledge).
    pub async fn start(name: &str) -> GrpcServer {
        Self::serve(name, None).await
    }

    /// An h2 server over TLS with `leaf` (ALPN h2).
    pub async fn start_tls(name: &str, leaf: &Leaf) -> GrpcServer {
        Self::serve(name, Some(leaf.acceptor(b"h2"))).await
    }

    async fn serve(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> GrpcServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            name: name.to_string(),
            reply: Mutex::default(),
            calls: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let health = HealthReporter::new();
        health.set_serving::<Named>().await;
        let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
        let service = Dispatch {
            echo: Echo(Arc::clone(&state)),
            health: health_service,
        };
        let (goaway, signal) = watch::channel(0u64);
        let counted = Arc::clone(&state);
        let guard =
            start_guarded(move |stop| accept(listener, tls, service, signal, stop, counted));
        GrpcServer {
            addr,
            state,
            health,
            goaway,
            _guard: guard,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_reply(&self, reply: Reply) {
        *self.state.reply.lock().expect("reply") = reply;
    }

    /// Calls received so far (health checks not included).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// What the health service answers for the whole server ("").
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
    }

    /// Sends GOAWAY on every open connection (graceful: streams in flight
    /// finish); the server keeps accepting new connections.
    pub fn goaway(&self) {
        self.goaway.send_modify(|n| *n += 1);
    }
}

/// The name the health reporter's generic setter wants.
struct Named;

impl tonic::server::NamedService for Named {
    const NAME: &'static str = "";
}

async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: Dispatch,
    goaway: watch::Receiver<u64>,
    mut stop: watch::Receiver<()>,
    state: Arc<State>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let (service, goaway, stop) = (service.clone(), goaway.clone(), stop.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(TokioIo::new(stream), service, goaway, stop).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        connection(TokioIo::new(stream), service, goaway, stop).await;
                    }
                }
            }
        });
    }
}

async fn connection<I>(
    io: I,
    service: Dispatch,
    mut goaway: watch::Receiver<u64>,
    mut stop: watch::Receiver<()>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    goaway.borrow_and_update();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = goaway.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        _ = stop.changed() => {}
    }
}

/// Routes health checks to the health service, the rest to `test.Echo`.
#[derive(Clone)]
struct Dispatch {
    echo: Echo,
    health: HealthServer<HealthService>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl Service<http::Request<Incoming>> for Dispatch {
    type Response = http::Response<TonicBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        if req.uri().path().starts_with("/grpc.health.v1.Health/") {
            return Box::pin(self.health.call(req));
        }
        let echo = self.echo.clone();
        Box::pin(async move { Ok(echo.serve(req).await) })
    }
}

#[derive(Clone)]
struct Echo(Arc<State>);

impl Echo {
    async fn serve(self, req: http::Request<Incoming>) -> http::Response<TonicBody> {
        let state = Arc::clone(&self.0);
        state.calls.fetch_add(1, Ordering::SeqCst);
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default())
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024);
        match req.uri().path() {
            UNARY => grpc.unary(Unary(state), req).await,
            SERVER_STREAM => grpc.server_streaming(ServerStream(state), req).await,
            CLIENT_STREAM => grpc.client_streaming(ClientStream(state), req).await,
            BIDI => grpc.streaming(Bidi(state), req).await,
            _ => Status::unimplemented("no such method").into_http(),
        }
    }
}

/// The reply switch before answering: a status to fail with, or a delay.
async fn gate(state: &State) -> Result<(), Status> {
    let reply = *state.reply.lock().expect("reply");
    match reply {
        Reply::Echo => Ok(()),
        Reply::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        Reply::Status(code) => {
            let mut status = Status::new(code, format!("{} says {code:?}", state.name));
            if let Ok(detail) = MetadataValue::try_from(state.name.as_str()) {
                status.metadata_mut().insert("x-detail", detail);
            }
            Err(status)
        }
    }
}

fn answer<T>(state: &State, message: T) -> Response<T> {
    let mut response = Response::new(message);
    if let Ok(name) = MetadataValue::try_from(state.name.as_str()) {
        response.metadata_mut().insert("x-served-by", name);
    }
    response
}

type GrpcFuture<T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>;
type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

struct Unary(Arc<State>);

impl tonic::server::UnaryService<Msg> for Unary {
    type Response = Msg;
    type Future = GrpcFuture<Msg>;

    fn call(&mut self, request: Request<Msg>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move {
            gate(&state).await?;
            let mut msg = request.into_inner();
            msg.text = format!("{}: {}", state.name, msg.text);
            Ok(answer(&state, msg))
        })
    }
}

struct ServerStream(Arc<State>);

impl tonic::server::ServerStreamingService<Msg> for ServerStream {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = GrpcFuture<MsgStream>;

    fn call(&mut self, request: Request<Msg>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move {
            gate(&state).await?;
            let msg = request.into_inner();
            let name = state.name.clone();
            let items: Vec<Result<Msg, Status>> = (0..msg.count)
                .map(|i| Ok(Msg::text(&format!("{name}: {} #{i}", msg.text))))
                .collect();
            let stream: MsgStream = Box::pin(tokio_stream::iter(items));
            Ok(answer(&state, stream))
        })
    }
}

struct ClientStream(Arc<State>);

impl tonic::server::ClientStreamingService<Msg> for ClientStream {
    type Response = Msg;
    type Future = GrpcFuture<Msg>;

    fn call(&mut self, request: Request<Streaming<Msg>>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move {
            gate(&state).await?;
            let mut stream = request.into_inner();
            let (mut texts, mut bytes) = (Vec::new(), 0usize);
            while let Some(msg) = stream.next().await {
                let msg = msg?;
                texts.push(msg.text);
                bytes += msg.payload.len();
            }
            let text = format!("{}: {} ({bytes} bytes)", state.name, texts.join(","));
            Ok(answer(&state, Msg::text(&text)))
        })
    }
}

struct Bidi(Arc<State>);

impl tonic::server::StreamingService<Msg> for Bidi {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = GrpcFuture<MsgStream>;

    fn call(&mut self, request: Request<Streaming<Msg>>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move {
            gate(&state).await?;
            let name = state.name.clone();
            let echoed = request
                .into_inner()
                .map(move |msg| msg.map(|m| Msg::text(&format!("{name}: {}", m.text))));
            let stream: MsgStream = Box::pin(echoed);
            Ok(answer(&state, stream))
        })
    }
}

/// A gRPC client for `test.Echo` over one channel.
#[derive(Clone)]
pub struct EchoClient(tonic::client::Grpc<Channel>);

impl EchoClient {
    /// Over h2c (prior knowledge) to `addr`.
    pub async fn connect(addr: SocketAddr) -> EchoClient {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        Self::over(channel)
    }

    /// Over h2/TLS to `addr`, trusting `ca_pem`, with `name` as SNI.
    pub async fn connect_tls(addr: SocketAddr, ca_pem: &str, name: &str) -> EchoClient {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_| {
                let (connector, name) = (connector.clone(), name.clone());
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .expect("connect over TLS");
        Self::over(channel)
    }

    fn over(channel: Channel) -> EchoClient {
        let grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024);
        EchoClient(grpc)
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.0
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("not ready: {e}")))
    }

    pub async fn unary(
        &mut self,
        request: impl tonic::IntoRequest<Msg>,
    ) -> Result<Response<Msg>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(UNARY);
        self.0
            .unary(request.into_request(), path, ProstCodec::default())
            .await
    }

    pub async fn server_stream(&mut self, msg: Msg) -> Result<Vec<Msg>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(SERVER_STREAM);
        let response = self
            .0
            .server_streaming(Request::new(msg), path, ProstCodec::default())
            .await?;
        collect(response.into_inner()).await
    }

    pub async fn client_stream(&mut self, msgs: Vec<Msg>) -> Result<Msg, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(CLIENT_STREAM);
        let request = Request::new(tokio_stream::iter(msgs));
        let response = self
            .0
            .client_streaming(request, path, ProstCodec::default())
            .await?;
        Ok(response.into_inner())
    }

    pub async fn bidi(&mut self, msgs: Vec<Msg>) -> Result<Vec<Msg>, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(BIDI);
        let request = Request::new(tokio_stream::iter(msgs));
        let response = self
            .0
            .streaming(request, path, ProstCodec::default())
            .await?;
        collect(response.into_inner()).await
    }
}

async fn collect(mut stream: Streaming<Msg>) -> Result<Vec<Msg>, Status> {
    let mut out = Vec::new();
    while let Some(msg) = stream.next().await {
        out.push(msg?);
    }
    Ok(out)
}
