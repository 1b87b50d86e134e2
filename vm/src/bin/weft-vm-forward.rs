//! `weft-vm-forward LISTEN TARGET`: the guest's TCP forwarder (`127.0.0.1:PORT` →
//! `10.0.2.2:PORT`, the host's API server behind QEMU's user network), so the host's
//! kubeconfig and its certificate for 127.0.0.1 work unchanged inside the VM. Two threads per
//! connection, half-closes passed on (through busybox's `nc -ll -e` the controller saw
//! `SendRequest` errors).

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(target)) = (args.next(), args.next()) else {
        eprintln!("usage: weft-vm-forward LISTEN-ADDR TARGET-ADDR");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("weft-vm-forward: listening on {listen}: {e}");
            std::process::exit(1);
        }
    };
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let target = target.clone();
        thread::spawn(move || {
            if let Err(e) = forward(client, &target) {
                eprintln!("weft-vm-forward: to {target}: {e}");
            }
        });
    }
}

fn forward(client: TcpStream, target: &str) -> io::Result<()> {
    let server = TcpStream::connect(target)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    let up = thread::spawn(move || pipe(c2, s2));
    pipe(server, client);
    let _ = up.join();
    Ok(())
}

/// Copy until EOF, then pass the half-close on.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
