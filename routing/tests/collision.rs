//! Connection collisions (RFC 4271 6.8) against a speaker in a network
//! namespace (root; skipped otherwise). The test plays the peer by hand:
//! it accepts the speaker's outgoing connection ("held"), opens its own
//! connection to the speaker and runs a `Session` over it, so both
//! connections reach OpenConfirm at the speaker and the BGP identifiers
//! decide which survives.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{in_netns, wait_for, Lab};
use vipgate_routing::rib::RouteAttrs;
use vipgate_routing::session::{Event, Session, SessionConfig, SessionEvent, State, Transmit};
use vipgate_routing::speaker::{PeerConfig, Speaker, SpeakerConfig, SpeakerHandle};
use vipgate_routing::wire::{
    Capability, DecodeContext, Family, Framer, Message, NotificationRepr, OpenRepr, MAX_MESSAGE_LEN,
};

const PEER_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CEASE_COLLISION: (u8, u8) = (6, 7);

/// Read whole messages from `s` until `done` says so or 10 s pass.
fn read_until(
    s: &mut TcpStream,
    framer: &mut Framer,
    done: impl Fn(&[Message]) -> bool,
) -> Vec<Message> {
    let mut got = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !done(&got) {
        assert!(Instant::now() < deadline, "timed out; got {got:?}");
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => framer.push(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
        while let Ok(Some(frame)) = framer.next_message() {
            got.push(
                Message::decode(
                    &frame,
                    &DecodeContext {
                        four_octet_as: true,
                        ibgp: false,
                    },
                )
                .expect("speaker sends valid messages"),
            );
        }
    }
    got
}

fn is_cease_collision(m: &Message) -> bool {
    matches!(m, Message::Notification(n) if (n.code, n.subcode) == CEASE_COLLISION)
}

fn our_open() -> Vec<u8> {
    let open = OpenRepr {
        my_as: 65002,
        hold_time: 9,
        bgp_id: PEER_ID,
        capabilities: vec![
            Capability::MultiProtocol(Family::Ipv4Unicast),
            Capability::FourOctetAs(65002),
        ],
    };
    Message::Open(open)
        .encode(&DecodeContext::default(), MAX_MESSAGE_LEN)
        .expect("OPEN encodes")
}

fn keepalive() -> Vec<u8> {
    Message::Keepalive
        .encode(&DecodeContext::default(), MAX_MESSAGE_LEN)
        .expect("encodes")
}

/// Run `session` over `s` until it is Established or down; its events.
fn drive(session: &mut Session, s: &mut TcpStream) -> Vec<SessionEvent> {
    let mut events = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    loop {
        while let Some(t) = session.poll_transmit() {
            if let Transmit::Bytes(b) = t {
                let _ = s.write_all(&b);
            }
        }
        events.extend(std::iter::from_fn(|| session.poll_event()));
        if session.state() == State::Established || session.state() == State::Idle {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "peer session stuck in {:?}",
            session.state()
        );
        match s.read(&mut buf) {
            Ok(0) => session.handle_event(Instant::now(), Event::TcpFailed),
            Ok(n) => session.handle_event(Instant::now(), Event::BytesReceived(&buf[..n])),
            Err(_) => {}
        }
    }
}

fn speaker_state(h: &SpeakerHandle) -> State {
    h.peers()[0].state
}

/// The speaker (identifier `speaker_id`) dials the peer and the peer dials
/// the speaker; both connections exchange OPENs. Returns the messages the
/// speaker sent on its own connection and the peer session's events on
/// the peer's connection.
fn collide(speaker_id: &str) -> Option<Outcome> {
    let mut lab = Lab::new("col")?;
    let a = lab.netns("a");
    let b = lab.netns("b");
    lab.veth(&a, "va", &b, "vb");
    lab.addr(&a, "va", "198.18.0.1/24");
    lab.addr(&b, "vb", "198.18.0.2/24");
    let listener = in_netns(&b, || TcpListener::bind("198.18.0.2:179").expect("bind"));

    let mut peer = PeerConfig::new("198.18.0.2".parse().expect("addr"), 65002);
    peer.hold_time = 9;
    let config = SpeakerConfig {
        local_as: 65001,
        router_id: speaker_id.parse().expect("id"),
        listen: Some("0.0.0.0:179".parse().expect("listen")),
        peers: vec![peer],
        drain: Default::default(),
    };
    let speaker = in_netns(&a, move || Speaker::new(config).expect("speaker"));
    let handle = speaker.handle();
    handle.announce(
        "198.18.10.1/32".parse().expect("prefix"),
        RouteAttrs::default(),
    );

    // The speaker's own connection: read its OPEN, answer with ours.
    let (mut held, _) = listener.accept().expect("speaker connects");
    held.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut held_framer = Framer::new();
    let first = read_until(&mut held, &mut held_framer, |m| !m.is_empty());
    assert!(matches!(first[0], Message::Open(_)), "{first:?}");
    held.write_all(&our_open()).expect("write OPEN");
    read_until(&mut held, &mut held_framer, |m| {
        m.contains(&Message::Keepalive)
    });
    wait_for(Duration::from_secs(5), "speaker in OpenConfirm", || {
        (speaker_state(&handle) == State::OpenConfirm).then_some(())
    });

    // The peer's connection, with a passive session of the peer's.
    let mut dialed = in_netns(&b, || {
        TcpStream::connect("198.18.0.1:179").expect("dial speaker")
    });
    dialed
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut cfg = SessionConfig::new(65002, 65001, PEER_ID);
    cfg.passive = true;
    cfg.hold_time = 9;
    cfg.families = vec![Family::Ipv4Unicast];
    let mut session = Session::new(cfg);
    session.handle_event(Instant::now(), Event::ManualStart);
    session.handle_event(Instant::now(), Event::TcpConnected);
    let mut events = drive(&mut session, &mut dialed);
    if session.state() == State::Established {
        // Collect the speaker's announcement too.
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until
            && !events
                .iter()
                .any(|e| matches!(e, SessionEvent::RouteUpdate(_)))
            && session.state() == State::Established
        {
            let mut buf = [0u8; 4096];
            if let Ok(n) = dialed.read(&mut buf) {
                session.handle_event(Instant::now(), Event::BytesReceived(&buf[..n]));
            }
            while let Some(Transmit::Bytes(b)) = session.poll_transmit() {
                let _ = dialed.write_all(&b);
            }
            events.extend(std::iter::from_fn(|| session.poll_event()));
        }
    }
    let held_rest = read_until(&mut held, &mut held_framer, |m| {
        m.iter().any(is_cease_collision) || session.state() == State::Idle
    });
    Some(Outcome {
        held_rest,
        held,
        _dialed: dialed,
        events,
        handle,
        _speaker: speaker,
        _lab: lab,
    })
}

struct Outcome {
    /// What the speaker sent on its own connection after its KEEPALIVE.
    held_rest: Vec<Message>,
    /// The speaker's own connection.
    held: TcpStream,
    /// The peer's connection (kept open until the test ends).
    _dialed: TcpStream,
    /// The peer session's events on the peer's connection.
    events: Vec<SessionEvent>,
    handle: SpeakerHandle,
    _speaker: Speaker,
    _lab: Lab,
}

#[test]
fn peer_with_higher_identifier_keeps_its_connection() {
    // Speaker 198.18.0.1 < peer 198.18.0.2: the peer's connection wins.
    let Some(outcome) = collide("198.18.0.1") else {
        return;
    };
    let (held, events, handle) = (&outcome.held_rest, &outcome.events, &outcome.handle);
    assert!(
        held.iter().any(is_cease_collision),
        "speaker closed its own connection: {held:?}"
    );
    assert!(
        matches!(events[0], SessionEvent::Established(_)),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SessionEvent::RouteUpdate(u) if !u.announced.is_empty())),
        "the kept connection carries the routes: {events:?}"
    );
    wait_for(Duration::from_secs(5), "speaker Established", || {
        (speaker_state(handle) == State::Established).then_some(())
    });
    assert_eq!(handle.peers()[0].prefixes_sent, 1);
}

#[test]
fn speaker_with_higher_identifier_keeps_its_connection() {
    // Speaker 198.18.0.9 > peer 198.18.0.2: the speaker's connection wins.
    let Some(mut outcome) = collide("198.18.0.9") else {
        return;
    };
    let (held, events, handle) = (&outcome.held_rest, &outcome.events, &outcome.handle);
    assert!(!held.iter().any(is_cease_collision), "{held:?}");
    let cease = NotificationRepr::new(CEASE_COLLISION.0, CEASE_COLLISION.1);
    assert!(
        events.iter().any(|e| matches!(e, SessionEvent::Down(vipgate_routing::session::DownReason::NotificationReceived(n)) if *n == cease)),
        "the peer's connection got Cease/collision: {events:?}"
    );
    assert_eq!(
        speaker_state(handle),
        State::OpenConfirm,
        "{:?}",
        handle.peers()
    );
    // Our KEEPALIVE on the speaker's connection completes it.
    outcome
        .held
        .write_all(&keepalive())
        .expect("write KEEPALIVE");
    wait_for(Duration::from_secs(5), "speaker Established", || {
        (speaker_state(handle) == State::Established).then_some(())
    });
}
