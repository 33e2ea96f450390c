//! Turns SIGTERM / Ctrl-C into the cancellation of a shutdown token. Only `main` installs it:
//! the library takes the token and never touches signals itself.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or Ctrl-C; a second one exits at once.
pub fn on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down (signal again to exit at once)");
        token.cancel();
        wait_for_signal().await;
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
