//! `vipgate lab serve`: the lab's backend host. One HTTP virtual host per
//! port (TCP, IPv4 and IPv6) and a UDP responder on the same ports; every
//! answer names the port that served it, so the client can count requests
//! per backend.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result};

/// The text a backend on `port` answers with (HTTP body and UDP payload).
pub fn answer_text(port: u16) -> String {
    format!("vhost web{port} port {port}\n")
}

/// Reads the port back from an answer.
pub fn port_of_answer(text: &str) -> Option<u16> {
    text.split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
}

/// Serves until the process is killed. With no `addresses` every port is
/// bound to `[::]`; otherwise to each address, so a UDP answer leaves from
/// the address its request was sent to (a host with several backend
/// addresses routes each one's replies through its own gateway).
pub fn serve(ports: &[u16], addresses: &[IpAddr]) -> Result<()> {
    // [::] with the default bindv6only=0 takes IPv4 too.
    let any = [IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)];
    let addresses = if addresses.is_empty() {
        &any[..]
    } else {
        addresses
    };
    let mut threads = Vec::new();
    for &port in ports {
        for &address in addresses {
            let at = SocketAddr::new(address, port);
            let tcp = TcpListener::bind(at).with_context(|| format!("binding TCP {at}"))?;
            let udp = UdpSocket::bind(at).with_context(|| format!("binding UDP {at}"))?;
            threads.push(std::thread::spawn(move || serve_tcp(tcp, port)));
            threads.push(std::thread::spawn(move || serve_udp(udp, port)));
        }
    }
    eprintln!("lab backend serving HTTP and UDP on ports {ports:?} of {addresses:?}");
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn serve_tcp(listener: TcpListener, port: u16) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            let _ = handle_http(stream, port);
        });
    }
}

/// Answers HTTP/1.1 requests on one connection until the client closes or
/// asks to close. Any path works; the body names the virtual host.
fn handle_http(stream: TcpStream, port: u16) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut close = request_line.contains("HTTP/1.0");
        let mut host = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
            if let Some(h) = lower.strip_prefix("host:") {
                host = h.trim().to_string();
            }
        }
        let body = answer_text(port);
        let head = format!(
            "HTTP/1.1 200 OK\r\nServer: vipgate-lab web{port}\r\nX-Backend-Port: {port}\r\n\
             X-Requested-Host: {host}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        out.write_all(head.as_bytes())?;
        out.write_all(body.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

fn serve_udp(socket: UdpSocket, port: u16) {
    let mut buf = [0u8; 2048];
    let answer = answer_text(port);
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        // Echo the request after the answer line, so a client can match it.
        let mut reply = answer.clone().into_bytes();
        reply.extend_from_slice(&buf[..n]);
        let _ = socket.send_to(&reply, from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_their_port() {
        assert_eq!(port_of_answer(&answer_text(81)), Some(81));
        assert_eq!(port_of_answer("garbage"), None);
    }
}
