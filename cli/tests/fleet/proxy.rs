//! A TCP proxy on loopback that the tests control: it forwards every connection to one target
//! and can cut all of them at once (a network fault between agents and a coordinator).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub struct Proxy {
    pub addr: String,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `target`.
    pub fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let target = target.to_owned();
        let accept = {
            let (conns, stop) = (conns.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    // A target that is down: the client sees its connection closed.
                    let Ok(server) = TcpStream::connect(&target) else { continue };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                    {
                        let mut conns = conns.lock().expect("lock");
                        conns.retain(|s| s.peer_addr().is_ok());
                        conns.extend([client.try_clone().expect("clone"), server.try_clone().expect("clone")]);
                    }
                    std::thread::spawn(move || pump(client, s2));
                    std::thread::spawn(move || pump(server, c2));
                }
            })
        };
        Proxy { addr, conns, stop, accept: Some(accept) }
    }

    /// Cuts every connection open through the proxy; returns how many there were. New ones are
    /// accepted again at once.
    pub fn drop_connections(&self) -> usize {
        let mut conns = self.conns.lock().expect("lock");
        let n = conns.len() / 2;
        for s in conns.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
        self.drop_connections();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}
