//! Descriptors across a Unix socket (`SCM_RIGHTS`), and pipes: what the daemon and a worker
//! template ([`crate::template`]) exchange. std has no stable API for either.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The most descriptors one message carries.
const MAX_FDS: usize = 4;

/// Room for [`MAX_FDS`] descriptors in a control message, aligned as `cmsghdr` wants.
#[repr(C, align(8))]
struct ControlBuffer([u8; 64]);

fn cvt(r: isize) -> io::Result<usize> {
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Sends `data` (not empty) and `fds` as one message.
pub(crate) fn send(socket: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS && !data.is_empty());
    let mut control = ControlBuffer([0; 64]);
    let mut iov = libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = u32::try_from(size_of_val(fds)).unwrap_or(u32::MAX);
        // SAFETY: CMSG_SPACE and CMSG_LEN compute sizes; the header written is the first one of
        // `control`, which has room for it and for MAX_FDS descriptors after it.
        unsafe {
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes) as _;
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(bytes) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast::<RawFd>(), fds.len());
        }
    }
    loop {
        // SAFETY: `msg` points to `iov` and `control`, which live for the call.
        match cvt(unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) }) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(_) => return Err(io::Error::other("a message was cut short")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives one message into `data`: its length (0 when the peer has gone) and the
/// descriptors it carried (close-on-exec).
pub(crate) fn receive(socket: &UnixStream, data: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = ControlBuffer([0; 64]);
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    let n = loop {
        // SAFETY: `msg` points to `iov` and `control`, which live for the call.
        match cvt(unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen; the CMSG macros walk it, and each
    // SCM_RIGHTS payload is descriptors now open in this process, owned by nobody else.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                for i in 0..payload / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut from a message"));
    }
    Ok((n, fds))
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut ends = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into `ends`, which are then owned here.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) })
}

/// Waits until `fd` is readable (or hung up), at most `timeout_ms` (-1: without end); true
/// when it is.
pub(crate) fn readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: one pollfd that lives for the call.
        match unsafe { libc::poll(&mut poll, 1, timeout_ms) } {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            -1 => return Err(io::Error::last_os_error()),
            n => return Ok(n > 0),
        }
    }
}

/// Writes all of `data` to `fd` (a pipe), or fails with `TimedOut` once `timeout` has passed
/// with the reader not taking it. The descriptor is non-blocking meanwhile, blocking again
/// after.
pub(crate) fn write_within(fd: &impl AsRawFd, data: &[u8], timeout: std::time::Duration) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller holds open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut written = 0;
    let result = loop {
        if written == data.len() {
            break Ok(());
        }
        let rest = &data[written..];
        // SAFETY: writes from a live slice of `rest.len()` bytes.
        match unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) } {
            n if n >= 0 => written += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock => {
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        let mut poll = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
                        // SAFETY: one pollfd that lives for the call.
                        let ready = unsafe { libc::poll(&mut poll, 1, ms) };
                        if ready == 0 {
                            break Err(io::Error::new(io::ErrorKind::TimedOut, "the reader did not take the data"));
                        }
                        if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                            break Err(io::Error::last_os_error());
                        }
                    }
                    _ => break Err(e),
                }
            }
        }
    };
    // SAFETY: as above; the flags as they were.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_write_to_a_pipe_ends_when_its_reader_takes_it_or_at_the_timeout() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let (read, write) = pipe().unwrap();
        // Nobody reads: far more than a pipe holds, so it times out.
        let started = std::time::Instant::now();
        let err = write_within(&write, &data, std::time::Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        drop((read, write));
        // A reader takes it all, in order.
        let (read, write) = pipe().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::from(read).read_to_end(&mut got).unwrap();
            got
        });
        write_within(&write, &data, std::time::Duration::from_secs(60)).unwrap();
        drop(write);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn descriptors_and_data_cross_a_socket_and_a_closed_peer_reads_as_nothing() {
        let (a, b) = UnixStream::pair().unwrap();
        let (read, write) = pipe().unwrap();
        send(&a, b"xy", &[read.as_raw_fd(), write.as_raw_fd()]).unwrap();
        drop((read, write));
        let mut data = [0u8; 8];
        let (n, fds) = receive(&b, &mut data).unwrap();
        assert_eq!((&data[..n], fds.len()), (&b"xy"[..], 2));
        let [read, write]: [OwnedFd; 2] = fds.try_into().unwrap();
        std::fs::File::from(write).write_all(b"through").unwrap();
        let mut got = String::new();
        std::fs::File::from(read).read_to_string(&mut got).unwrap();
        assert_eq!(got, "through");
        drop(a);
        assert_eq!(receive(&b, &mut data).unwrap().0, 0);
    }
}
