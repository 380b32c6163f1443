//! TCP proxies for the links between nodes, so that the nemesis can cut and slow
//! the network without root.
//!
//! Node `i` reaches node `j` through its own proxy (the address of `j` in node
//! `i`'s `--initial-cluster` is the proxy of the directed link `i -> j`). A link
//! is [`LinkState::Up`], [`LinkState::Cut`] (its connections are closed and new
//! ones are closed at once: nothing gets through, in either direction of those TCP
//! connections, i.e. `i`'s messages to `j` are lost while `j`'s own link to `i` may
//! still work: one-way loss), or [`LinkState::Delay`] (every chunk forwarded waits).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a link lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Everything, at once.
    Up,
    /// Nothing: connections are closed.
    Cut,
    /// Everything, each chunk after this delay.
    Delay(Duration),
}

/// One directed link's proxy; dropping it stops it.
pub struct Proxy {
    /// The address the source node dials.
    pub addr: String,
    state: watch::Sender<LinkState>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `target`.
    pub async fn start(target: String) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (state, rx) = watch::channel(LinkState::Up);
        let target = Arc::new(target);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *rx.borrow() == LinkState::Cut {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(forward(inbound, target.clone(), rx.clone()));
            }
        });
        Ok(Proxy { addr, state, task })
    }

    /// Sets what the link lets through (existing connections are closed on a cut).
    pub fn set(&self, state: LinkState) {
        let _ = self.state.send(state);
    }

    /// What the link lets through now.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways between `inbound` and a new connection to `target` until
/// either side closes or the link is cut.
async fn forward(inbound: TcpStream, target: Arc<String>, mut state: watch::Receiver<LinkState>) {
    let Ok(outbound) = TcpStream::connect(target.as_str()).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (ri, wi) = inbound.into_split();
    let (ro, wo) = outbound.into_split();
    let up = pump(ri, wo, state.clone());
    let down = pump(ro, wi, state.clone());
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = async {
            while state.changed().await.is_ok() {
                if *state.borrow() == LinkState::Cut {
                    return;
                }
            }
        } => {}
    }
}

/// Copies `from` to `to`, waiting before each chunk while the link is delayed.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    state: watch::Receiver<LinkState>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = *state.borrow();
        match now {
            LinkState::Cut => return,
            LinkState::Delay(d) => tokio::time::sleep(d).await,
            LinkState::Up => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: &str) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("timed out"))??;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn a_cut_link_passes_nothing_until_it_is_up_again() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        assert_eq!(round_trip(&proxy.addr).await.unwrap(), b"ping");
        let mut open = TcpStream::connect(&proxy.addr).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.unwrap();
        proxy.set(LinkState::Cut);
        assert!(
            round_trip(&proxy.addr).await.is_err(),
            "new connections fail"
        );
        let mut rest = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), open.read(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "an open connection is closed: {closed:?}"
        );
        proxy.set(LinkState::Up);
        assert_eq!(round_trip(&proxy.addr).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn a_delayed_link_still_delivers() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        proxy.set(LinkState::Delay(Duration::from_millis(100)));
        let start = std::time::Instant::now();
        assert_eq!(round_trip(&proxy.addr).await.unwrap(), b"ping");
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "both ways delayed"
        );
    }
}
