//! systemd's readiness protocol (`Type=notify`, sd_notify(3)): one datagram per state change
//! to the socket named by `NOTIFY_SOCKET`. Without that variable (not under systemd) nothing
//! is sent. Written out here rather than pulling in a crate: it is one `sendto`.

use std::os::unix::net::UnixDatagram;

/// Tell the service manager `state` (e.g. `READY=1`). Errors are logged, never fatal: a
/// missing supervisor must not stop DNS.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(
            "cannot notify systemd on {}: {e}",
            std::path::Path::new(&path).display()
        );
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    // `@name` is a socket in the abstract namespace (Linux).
    #[cfg(target_os = "linux")]
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
        return Ok(());
    }
    socket.send_to(state.as_bytes(), path)?;
    Ok(())
}

/// `RELOADING=1` with the monotonic timestamp systemd ≥ 253 asks for.
pub fn reloading() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_arrives_as_one_datagram_on_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str(), "READY=1\nSTATUS=serving").expect("send");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_is_reached_too() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("marathon-dns-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let receiver = UnixDatagram::bind_addr(&addr).expect("bind");
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
