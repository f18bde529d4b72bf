//! The public listener's own accept loop (HTTP/1.1). Gateway calls take a short path:
//! straight into the pipeline, with the trace id, the envelope on panics and the graceful
//! shutdown that the other listeners get from their middleware. Every other path (OAuth2,
//! end users, probes) goes through the axum router with its usual layers.

use std::{net::SocketAddr, panic::AssertUnwindSafe, time::Duration};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    http::HeaderValue,
    response::Response,
    Router,
};
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use portico_core::trace;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::Gateway;

/// Paths that belong to the router, not to the gateway.
fn routed(path: &str) -> bool {
    path.starts_with("/oauth2/") || path.starts_with("/users/") || path.starts_with("/.well-known/") || path.starts_with("/messages/") || path == "/healthz" || path == "/readyz"
}

impl Gateway {
    /// Serves the public listener until `stop` resolves, then lets connections finish
    /// for up to `grace`.
    pub async fn serve(self, listener: TcpListener, router: Router, stop: impl std::future::Future<Output = ()>, grace: Duration) -> std::io::Result<()> {
        let graceful = GracefulShutdown::new();
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let router = router.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let gw = gw.clone();
                let router = router.clone();
                async move { Ok::<_, std::convert::Infallible>(dispatch(gw, router, peer, req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Slow clients: the request head must arrive within 30 s.
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        drop(listener);
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::warn!("public connections still open after the grace period");
        }
        Ok(())
    }
}

async fn dispatch(gw: Gateway, router: Router, peer: SocketAddr, req: Request<Incoming>) -> Response {
    let mut req = req.map(Body::new);
    if routed(req.uri().path()) {
        req.extensions_mut().insert(ConnectInfo(peer));
        return match router.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    }
    let trace_id = req.headers().get(trace::TRACE_HEADER).and_then(|v| v.to_str().ok()).filter(|s| trace::acceptable(s)).map(str::to_string).unwrap_or_else(trace::new_trace_id);
    let header = HeaderValue::from_str(&trace_id).expect("trace ids are ASCII");
    let call = trace::scope(trace_id, AssertUnwindSafe(crate::pipeline::serve(gw, peer, req)).catch_unwind());
    let mut response = match call.await {
        Ok(r) => r,
        Err(panic) => portico_core::http::panic_response(panic),
    };
    response.headers_mut().insert(trace::TRACE_HEADER, header);
    response
}
