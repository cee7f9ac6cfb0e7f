//! A fault-injecting TCP proxy between clients and the server: pass, delay, drop, reset, cut
//! the server's answer after N bytes, or black-hole. Runs on its own thread; the mode can be
//! changed at any time and applies to new connections (and to the bytes still to flow on
//! open ones, for `cut` and `black-hole`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Forward everything, each chunk after this delay.
    Delay(Duration),
    /// Accept, then close at once.
    Drop,
    /// Accept, then reset the connection (RST).
    Reset,
    /// Forward requests; when one starts with `request` (like `"POST /v1/push"`), forward
    /// the first `after` bytes of what the server sends from then on, then close the
    /// connection mid-answer. Once per setting: later connections pass.
    CutAnswer { request: &'static str, after: u64 },
    /// Forward the first N bytes a client sends (a request cut mid-body), then close.
    CutRequest(u64),
    /// Accept and read, never answer, never close.
    BlackHole,
    /// Flip one bit of the byte at offset `at` of what a client sends on a connection
    /// (counted from the connection's first byte). Once per setting.
    CorruptRequest { at: u64 },
    /// When a request starts with `request`, flip one bit of the byte at offset `at` of what
    /// the server sends from then on. Once per setting.
    CorruptAnswer { request: &'static str, at: u64 },
}

pub struct Proxy {
    pub url: String,
    fault: Arc<Mutex<Fault>>,
    /// Bytes the server sent that were forwarded to clients.
    pub down_bytes: Arc<AtomicU64>,
    /// Bytes clients sent that were forwarded to the server.
    pub up_bytes: Arc<AtomicU64>,
    /// Closes every open connection when sent to.
    kill: tokio::sync::broadcast::Sender<()>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    /// A proxy in front of `target` (`http://HOST:PORT`).
    pub fn start(target: &str) -> Proxy {
        let target = target.trim_start_matches("http://").to_owned();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let (down_bytes, up_bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (f, d, u) = (fault.clone(), down_bytes.clone(), up_bytes.clone());
        let kill = tokio::sync::broadcast::channel(4).0;
        let k = kill.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (f, d, u, target, mut killed) = (f.clone(), d.clone(), u.clone(), target.clone(), k.subscribe());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = connection(client, &target, f, d, u) => {}
                        _ = killed.recv() => {}
                    }
                });
            }
        });
        Proxy { url, fault, down_bytes, up_bytes, kill, _runtime: runtime }
    }

    /// A partition: every open connection is closed, and new ones are dropped until the
    /// fault is set again.
    pub fn partition(&self) {
        self.set(Fault::Drop);
        let _ = self.kill.send(());
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }
}

async fn connection(
    client: TcpStream,
    target: &str,
    fault: Arc<Mutex<Fault>>,
    down: Arc<AtomicU64>,
    up: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let now = *fault.lock().unwrap();
    match now {
        Fault::Drop => return Ok(()),
        Fault::Reset => {
            // A zero linger makes the close a reset (and does not block: nothing to flush).
            #[allow(deprecated)]
            client.set_linger(Some(Duration::ZERO))?;
            return Ok(());
        }
        Fault::BlackHole => {
            let mut client = client;
            let mut buf = vec![0u8; 64 * 1024];
            while client.read(&mut buf).await? > 0 {}
            std::future::pending::<()>().await;
            return Ok(());
        }
        _ => {}
    }
    let server = TcpStream::connect(target).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Bytes of answer still allowed on this connection once a cut is armed.
    let armed: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
    // Answer bytes still to pass before the one to corrupt, once armed.
    let corrupt: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
    let (f_up, armed_up, corrupt_up) = (fault.clone(), armed.clone(), corrupt.clone());
    let upstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent: u64 = 0;
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                let _ = sw.shutdown().await;
                return Ok::<(), std::io::Error>(());
            }
            let now = *f_up.lock().unwrap();
            let allowed = match now {
                Fault::BlackHole => std::future::pending::<usize>().await,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    n
                }
                Fault::CutRequest(limit) => (limit.saturating_sub(sent) as usize).min(n),
                Fault::CorruptRequest { at } if at >= sent && at < sent + n as u64 => {
                    buf[(at - sent) as usize] ^= 0x01;
                    *f_up.lock().unwrap() = Fault::Pass;
                    n
                }
                Fault::CorruptAnswer { request, at } => {
                    if buf[..n].windows(request.len()).any(|w| w == request.as_bytes()) {
                        *corrupt_up.lock().unwrap() = Some(at);
                        *f_up.lock().unwrap() = Fault::Pass;
                    }
                    n
                }
                Fault::CutAnswer { request, after } => {
                    if buf[..n].windows(request.len()).any(|w| w == request.as_bytes()) {
                        *armed_up.lock().unwrap() = Some(after);
                        // Once: the next connections pass.
                        *f_up.lock().unwrap() = Fault::Pass;
                    }
                    n
                }
                _ => n,
            };
            sw.write_all(&buf[..allowed]).await?;
            sent += allowed as u64;
            up.fetch_add(allowed as u64, Ordering::SeqCst);
            if allowed < n {
                return Ok(());
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                let _ = cw.shutdown().await;
                return Ok::<(), std::io::Error>(());
            }
            let now = *fault.lock().unwrap();
            let mut allowed = match now {
                Fault::BlackHole => std::future::pending::<usize>().await,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    n
                }
                _ => n,
            };
            if let Some(left) = armed.lock().unwrap().as_mut() {
                allowed = (*left as usize).min(n);
                *left -= allowed as u64;
            }
            {
                let mut c = corrupt.lock().unwrap();
                if let Some(left) = *c {
                    if left < n as u64 {
                        buf[left as usize] ^= 0x01;
                        *c = None;
                    } else {
                        *c = Some(left - n as u64);
                    }
                }
            }
            cw.write_all(&buf[..allowed]).await?;
            down.fetch_add(allowed as u64, Ordering::SeqCst);
            if allowed < n {
                // Cut mid-answer: the client sees the connection close.
                return Ok(());
            }
        }
    };
    tokio::select! {
        r = upstream => r,
        r = downstream => r,
    }
}
