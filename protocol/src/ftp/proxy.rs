//! PROXY protocol in front of libunftp: load balancers (AWS NLB, HAProxy `send-proxy-v2`)
//! send the binary version 2 header, libunftp 0.24 reads only the text version 1. Coffer
//! accepts both on the public port, and hands each connection to libunftp's internal
//! loopback listener behind an equivalent version 1 header.
//!
//! libunftp hands its authenticator the TCP peer's address, not the header's, so each client
//! address is relayed from its own loopback address (127.0.0.0/8 is all loopback on Linux) and
//! [`ClientIps`] maps it back: logins and the audit log see the real client.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The 12-byte signature that starts a version 2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header is at most this long, CRLF included.
const V1_MAX: usize = 107;
/// How long a client may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Which loopback address relays which client address.
#[derive(Debug, Default)]
pub(crate) struct ClientIps {
    inner: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    next: u32,
    by_client: HashMap<Ipv4Addr, Ipv4Addr>,
    by_loopback: HashMap<Ipv4Addr, Ipv4Addr>,
}

impl ClientIps {
    /// The loopback address that relays `client` (the same one every time).
    fn loopback_for(&self, client: Ipv4Addr) -> Option<Ipv4Addr> {
        let mut s = self.inner.lock().ok()?;
        if let Some(l) = s.by_client.get(&client) {
            return Some(*l);
        }
        // 127.1.0.0 .. 127.255.255.255: clear of 127.0.0.0/16, where local services live.
        let n = 0x0001_0000 + s.next % 0x00ff_0000;
        s.next = s.next.wrapping_add(1);
        let [_, b, c, d] = n.to_be_bytes();
        let l = Ipv4Addr::new(127, b, c, d);
        if let Some(old) = s.by_loopback.insert(l, client) {
            s.by_client.remove(&old);
        }
        s.by_client.insert(client, l);
        Some(l)
    }

    /// The real client behind a connection libunftp saw from `seen`.
    pub(crate) fn client_of(&self, seen: IpAddr) -> IpAddr {
        let IpAddr::V4(v4) = seen else { return seen };
        self.inner
            .lock()
            .ok()
            .and_then(|s| s.by_loopback.get(&v4).copied())
            .map(IpAddr::V4)
            .unwrap_or(seen)
    }
}

/// The client and the address it connected to, as the load balancer saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addresses {
    pub(crate) source: SocketAddrV4,
    pub(crate) destination: SocketAddrV4,
}

impl Addresses {
    fn v1_header(&self) -> String {
        format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            self.source.ip(),
            self.destination.ip(),
            self.source.port(),
            self.destination.port()
        )
    }
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection did not start with a PROXY header")]
    Missing,
    #[error("malformed PROXY header")]
    Malformed,
    #[error("only TCP over IPv4 is supported behind the PROXY protocol")]
    Unsupported,
}

/// Reads a version 1 or 2 header from `s`. A version 2 `LOCAL` connection (a load
/// balancer's health check) is reported with the socket's own addresses.
pub(crate) async fn read_header(s: &mut TcpStream) -> Result<Addresses, HeaderError> {
    let mut start = [0u8; 16];
    s.read_exact(&mut start).await?;
    if start.starts_with(&V2_SIGNATURE) {
        let [_, _, _, _, _, _, _, _, _, _, _, _, ver_cmd, family, l0, l1] = start;
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let mut rest = vec![0u8; len];
        s.read_exact(&mut rest).await?;
        return match (ver_cmd, family) {
            (0x20, _) => own_addresses(s),
            (0x21, 0x11) => parse_v2_ipv4(&rest),
            (0x21, _) => Err(HeaderError::Unsupported),
            _ => Err(HeaderError::Malformed),
        };
    }
    if !start.starts_with(b"PROXY ") {
        return Err(HeaderError::Missing);
    }
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(HeaderError::Malformed);
        }
        line.push(s.read_u8().await?);
    }
    parse_v1(&line)
}

fn own_addresses(s: &TcpStream) -> Result<Addresses, HeaderError> {
    match (s.peer_addr()?, s.local_addr()?) {
        (SocketAddr::V4(source), SocketAddr::V4(destination)) => Ok(Addresses {
            source,
            destination,
        }),
        _ => Err(HeaderError::Unsupported),
    }
}

fn parse_v2_ipv4(rest: &[u8]) -> Result<Addresses, HeaderError> {
    let Some(&[a, b, c, d, e, f, g, h, sp0, sp1, dp0, dp1]) = rest.get(..12) else {
        return Err(HeaderError::Malformed);
    };
    Ok(Addresses {
        source: SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be_bytes([sp0, sp1])),
        destination: SocketAddrV4::new(Ipv4Addr::new(e, f, g, h), u16::from_be_bytes([dp0, dp1])),
    })
}

fn parse_v1(line: &[u8]) -> Result<Addresses, HeaderError> {
    let text = std::str::from_utf8(line).map_err(|_| HeaderError::Malformed)?;
    let parts: Vec<&str> = text.trim_end().split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "TCP4", src, dst, sport, dport] => {
            let p = |ip: &str, port: &str| -> Result<SocketAddrV4, HeaderError> {
                Ok(SocketAddrV4::new(
                    ip.parse().map_err(|_| HeaderError::Malformed)?,
                    port.parse().map_err(|_| HeaderError::Malformed)?,
                ))
            };
            Ok(Addresses {
                source: p(src, sport)?,
                destination: p(dst, dport)?,
            })
        }
        ["PROXY", ..] => Err(HeaderError::Unsupported),
        _ => Err(HeaderError::Malformed),
    }
}

/// Accepts on `public` until `stop`, relaying each connection to libunftp on `internal`.
pub(crate) async fn relay(
    public: TcpListener,
    internal: SocketAddr,
    ips: Arc<ClientIps>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = public.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "ftp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let stop = stop.clone();
        let ips = ips.clone();
        tokio::spawn(async move {
            if let Err(e) = relay_one(stream, internal, &ips, stop).await {
                debug!(peer = %peer, error = %e, "ftp PROXY connection refused or ended");
            }
        });
    }
}

async fn relay_one(
    mut client: TcpStream,
    internal: SocketAddr,
    ips: &ClientIps,
    stop: CancellationToken,
) -> Result<(), HeaderError> {
    let _ = client.set_nodelay(true);
    let addrs = tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut client))
        .await
        .map_err(|_| HeaderError::Missing)??;
    let socket = TcpSocket::new_v4()?;
    if let Some(l) = ips.loopback_for(*addrs.source.ip()) {
        socket.bind(SocketAddr::from((l, 0)))?;
    }
    let mut server = socket.connect(internal).await?;
    let _ = server.set_nodelay(true);
    server.write_all(addrs.v1_header().as_bytes()).await?;
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut server) => { r?; }
        _ = stop.cancelled() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_its_own_loopback_address_and_maps_back() {
        let ips = ClientIps::default();
        let a: Ipv4Addr = "203.0.113.7".parse().unwrap();
        let b: Ipv4Addr = "198.51.100.9".parse().unwrap();
        let la = ips.loopback_for(a).unwrap();
        let lb = ips.loopback_for(b).unwrap();
        assert_ne!(la, lb);
        assert!(la.is_loopback() && la.octets()[1] >= 1);
        assert_eq!(ips.loopback_for(a), Some(la), "stable per client");
        assert_eq!(ips.client_of(IpAddr::V4(la)), IpAddr::V4(a));
        let other: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            ips.client_of(other),
            other,
            "unknown addresses pass through"
        );
    }

    #[test]
    fn a_v1_header_is_parsed_and_rewritten_identically() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 2121\r\n";
        let a = parse_v1(line).unwrap();
        assert_eq!(a.source, "203.0.113.7:40000".parse().unwrap());
        assert_eq!(a.v1_header().as_bytes(), line);
    }

    #[test]
    fn v2_ipv4_addresses_are_read_in_network_order() {
        let rest = [203, 0, 113, 7, 10, 0, 0, 1, 0x9c, 0x40, 0x08, 0x49];
        let a = parse_v2_ipv4(&rest).unwrap();
        assert_eq!(a.source, "203.0.113.7:40000".parse().unwrap());
        assert_eq!(a.destination, "10.0.0.1:2121".parse().unwrap());
    }

    #[test]
    fn fail_short_v2_and_ipv6_v1_headers_are_refused() {
        assert!(matches!(
            parse_v2_ipv4(&[1, 2, 3]),
            Err(HeaderError::Malformed)
        ));
        assert!(matches!(
            parse_v1(b"PROXY TCP6 ::1 ::1 1 2\r\n"),
            Err(HeaderError::Unsupported)
        ));
    }
}
