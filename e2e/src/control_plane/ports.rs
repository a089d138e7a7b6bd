//! Free loopback ports.

use std::net::{Ipv4Addr, TcpListener};

use anyhow::{Context, Result};

/// `n` distinct ports that were free a moment ago: all are bound at once (so they differ)
/// and released together. Another process may still take one before it is used; the
/// caller detects that from the log and retries with new ports.
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("binding 127.0.0.1:0")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .context("local address of a listener")?
            .port();
    }
    Ok(ports)
}

/// Whether a log shows that a process lost a race for its port.
pub(crate) fn shows_port_clash(log: &str) -> bool {
    log.contains("address already in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_nonzero() {
        let [a, b, c] = free_ports::<3>().unwrap();
        assert!(a != 0 && b != 0 && c != 0);
        assert!(a != b && b != c && a != c);
    }
}
