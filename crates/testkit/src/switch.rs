//! A client's network link with an off switch: a TCP relay in front of the proxy that, when
//! switched off, cuts the connections through it and turns new ones away, and when switched
//! on again lets them through. The client goes offline and comes back as on a real network
//! (the operators see its connection close, and a new one open when it reconnects); what it
//! sends is untouched (TLS runs end to end through the relay).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The relay. Dropping it stops it and cuts every connection through it.
pub struct Switch {
    addr: SocketAddr,
    online: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Switch {
    /// A relay to `to`, switched on, listening on 127.0.0.1 with port 0.
    pub async fn start(to: SocketAddr) -> std::io::Result<Switch> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (online, _) = watch::channel(true);
        let state = online.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                if !*state.borrow() {
                    continue;
                }
                tokio::spawn(relay(down, to, state.clone()));
            }
        });
        Ok(Switch { addr, online, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the link on or off.
    pub fn set(&self, online: bool) {
        self.online.send_replace(online);
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.online.send_replace(false);
        self.task.abort();
    }
}

/// Carries one connection both ways until either side closes it or the switch goes off.
async fn relay(mut down: TcpStream, to: SocketAddr, mut state: watch::Receiver<bool>) {
    let _ = down.set_nodelay(true);
    let Ok(mut up) = TcpStream::connect(to).await else {
        return;
    };
    let _ = up.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
        _ = state.wait_for(|on| !*on) => {}
    }
}
