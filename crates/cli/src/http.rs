//! The HTTP server of `fanfold serve`: hyper's connection builder with the
//! limits that keep slow and abusive clients from taking the server down.
//!
//! `axum::serve` sets no timeouts, so a client that sends half a request
//! header holds its connection (and a file descriptor) forever; a thousand
//! of them exhaust the process's descriptors and real requests time out.
//! Here every connection has:
//! - a header-read timeout: the request head must arrive within
//!   [`Limits::header_read`] of the connection opening or of the previous
//!   response (hyper starts the same timer while a kept-alive connection
//!   waits for its next request, so this is also the idle timeout);
//! - a cap on open connections ([`Limits::max_connections`], under the
//!   1,024 descriptors of a default `ulimit -n`, leaving room for the
//!   workers' files): a connection over the cap is closed at once instead
//!   of waiting, so the server never runs out of descriptors;
//! - accept errors (EMFILE and the like) back off instead of spinning.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_read: Duration::from_secs(10), max_connections: 512 }
    }
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, router: axum::Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(limits.header_read);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(max = limits.max_connections, "too many open connections; closing a new one");
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
