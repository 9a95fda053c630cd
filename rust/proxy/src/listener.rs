//! Listening sockets: one per worker per address, all sharing the port with
//! `SO_REUSEPORT` so the kernel spreads connections across workers.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

const BACKLOG: i32 = 1024;

pub fn resolve(address: &str) -> std::io::Result<SocketAddr> {
    address.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{address:?} resolves to nothing"),
        )
    })
}

/// `count` sockets on one address. With port 0 the first socket picks the
/// port and the others join it.
pub fn bind(address: SocketAddr, count: usize) -> std::io::Result<Vec<TcpListener>> {
    if address.port() != 0 {
        probe(address)?;
    }
    let mut sockets = Vec::with_capacity(count);
    let mut address = address;
    for _ in 0..count.max(1) {
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        socket.bind(&address.into())?;
        socket.listen(BACKLOG)?;
        let listener: TcpListener = socket.into();
        address = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// `SO_REUSEPORT` would let us silently share a port another process listens
/// on; a plain bind first turns that into the usual "address in use".
fn probe(address: SocketAddr) -> std::io::Result<()> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_by_someone_else_is_refused() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = other.local_addr().expect("addr");
        assert!(bind(taken, 2).is_err());
    }

    #[test]
    fn port_zero_gives_every_worker_the_same_port() {
        let sockets = bind(resolve("127.0.0.1:0").expect("resolve"), 3).expect("bind");
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().expect("addr").port())
            .collect();
        assert!(ports.iter().all(|&p| p == ports[0] && p != 0), "{ports:?}");
    }
}
