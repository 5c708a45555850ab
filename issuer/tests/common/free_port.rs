// Included (`include!`) by the test helpers that need it, in this crate and in `tests` and `bench`, so that
// each stays one self-contained file.

/// A loopback port for a child process to listen on: free now, picked at random below the kernel's
/// ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), and never handed out twice by this process.
/// `bind(127.0.0.1:0)` would pick from that range, where the source port of any outgoing connection (this
/// test's own HTTP clients, a browser's) can take the port between this call and the child's bind.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let from = low.saturating_sub(12_000).max(1024);
    let span = u64::from(low.saturating_sub(from).max(1));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let mut x = (u64::from(std::process::id()) << 32) ^ u64::from(nanos) ^ 0x9e37_79b9_7f4a_7c15;
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..10_000 {
        // xorshift64*: spread, not secret.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let port = from + u16::try_from(x.wrapping_mul(0x2545_f491_4f6c_dd1d) % span).unwrap_or(0);
        if given.insert(port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {from}..{low}");
}
