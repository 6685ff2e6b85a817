//! Admission: the checks every transport's handshake passes before a resolver or hook sees the
//! request (shutting down, origin allow-list, connection limits), and the place in the limits a
//! peer holds for as long as it lives.

use bytes::Bytes;
use http::{Response, StatusCode};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::peer::lock;
use crate::server::{plain, shutting_down, Shared};
use crate::{Request, Server};

impl Server {
    /// The admission step of every transport's handshake, before any resolver or hook sees the
    /// request: refuses a server shutting down (`503`), an `Origin` outside
    /// [`ServerBuilder::allowed_origins`] (`403`), a request past
    /// [`Limits::max_connections`] (`503`) or [`Limits::max_connections_per_ip`] (`429`).
    ///
    /// The [`Admission`] it returns holds the request's place in the connection limits: keep it
    /// for as long as the peer lives, and drop it when the connection is over, however it ends.
    /// [`Server::handshake`] calls it and hands it to the [`PendingPeer`].
    ///
    /// [`ServerBuilder::allowed_origins`]: crate::ServerBuilder::allowed_origins
    /// [`Limits::max_connections`]: crate::Limits::max_connections
    /// [`Limits::max_connections_per_ip`]: crate::Limits::max_connections_per_ip
    /// [`PendingPeer`]: crate::PendingPeer
    pub fn admit(&self, request: &Request) -> Result<Admission, Box<Response<Bytes>>> {
        self.screen(request)?;
        let limits = &self.shared.limits;
        let max = limits.max_connections.unwrap_or(usize::MAX);
        let counted =
            self.shared
                .connections
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                });
        if counted.is_err() {
            return Err(Box::new(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections",
            )));
        }
        // From here on, dropping the admission gives the place back.
        let mut admission = Admission {
            shared: self.shared.clone(),
            ip: None,
            handed_on: false,
        };
        if let (Some(max_per_ip), Some(addr)) =
            (limits.max_connections_per_ip, request.remote_addr())
        {
            let ip = canonical_ip(addr.ip());
            let mut per_ip = lock(&self.shared.connections_per_ip);
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= max_per_ip {
                if *count == 0 {
                    per_ip.remove(&ip);
                }
                drop(per_ip);
                return Err(Box::new(plain(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from this address",
                )));
            }
            *count += 1;
            admission.ip = Some(ip);
        }
        Ok(admission)
    }

    /// The checks of [`Server::admit`] that take no place in the limits: shutting down, and the
    /// origin allow-list.
    pub(crate) fn screen(&self, request: &Request) -> Result<(), Box<Response<Bytes>>> {
        if self.is_shutting_down() {
            return Err(Box::new(shutting_down()));
        }
        if let Some(allowed) = &self.shared.allowed_origins {
            if let Some(origin) = request.headers().get(http::header::ORIGIN) {
                let origin = origin.to_str().unwrap_or("").trim();
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
                    return Err(Box::new(plain(StatusCode::FORBIDDEN, "origin not allowed")));
                }
            }
        }
        Ok(())
    }

    /// The number of connections holding an [`Admission`]: open peers, and accepted handshakes
    /// whose peer has not started or finished yet.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Acquire)
    }
}

/// An IPv4 address as itself, also when it arrives mapped into IPv6 (`::ffff:a.b.c.d`).
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A place in the server's connection limits, from [`Server::admit`]. Dropping it gives the
/// place back.
pub struct Admission {
    shared: Arc<Shared>,
    /// The address counted against the per-IP limit, when it is on.
    ip: Option<IpAddr>,
    /// The place was handed on with [`Admission::into_place`]: dropping this gives nothing back.
    handed_on: bool,
}

/// A place in the connection limits, kept without the server it counts in: a WebSocket peer's
/// task holds its server already, and keeps the place in the 17 bytes of this. Given back by
/// [`Place::give_back`], once.
#[derive(Debug)]
pub(crate) struct Place {
    ip: Option<IpAddr>,
}

impl Place {
    /// Gives the place back to `shared`, the server it was admitted to.
    pub(crate) fn give_back(self, shared: &Shared) {
        release(shared, self.ip);
    }
}

impl Admission {
    /// The place alone, for a holder that keeps the server's `Shared` anyway and gives the
    /// place back itself.
    pub(crate) fn into_place(mut self, shared: &Arc<Shared>) -> Place {
        debug_assert!(
            Arc::ptr_eq(&self.shared, shared),
            "admitted to another server"
        );
        self.handed_on = true;
        Place { ip: self.ip }
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission").field("ip", &self.ip).finish()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.handed_on {
            release(&self.shared, self.ip);
        }
    }
}

/// Gives a place in `shared`'s connection limits back.
fn release(shared: &Shared, ip: Option<IpAddr>) {
    if let Some(ip) = ip {
        let mut per_ip = lock(&shared.connections_per_ip);
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
    shared.connections.fetch_sub(1, Ordering::AcqRel);
}
