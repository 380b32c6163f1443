//! The router: unknown and closed ids hand the message back, registration, close,
//! broadcast, live counts, the control FSM and creating FSMs on demand.

mod common;

use common::{config, Event, Harness, Msg, StoreMsg, Toy};
use shoal_router::{create_system, Config, FsmState, RegisterError, SendError, Target};

#[test]
fn send_to_unknown_id_hands_the_message_back() {
    let h = Harness::started(config(1, 8, 8));
    h.register([1]);
    let err = h.router.send(2, Msg::Data(7)).unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.to_string(), "no mailbox registered for fsm 2");
    assert!(matches!(&err, SendError::NotFound { id: 2, .. }));
    assert_eq!(err.into_inner(), Msg::Data(7));
    h.shutdown();
}

#[test]
fn closed_mailbox_hands_pending_mail_and_later_sends_back() {
    // Not spawned: mail stays queued so `close` has something to return.
    let h = Harness::new(config(1, 8, 8));
    h.register([1, 2]);
    h.router.send(1, Msg::Data(1)).unwrap();
    h.router.send(1, Msg::Data(2)).unwrap();
    let mailbox = h.router.mailbox(1).unwrap();
    assert_eq!(mailbox.state(), FsmState::Notified);

    assert_eq!(h.router.close(1), Some(vec![Msg::Data(1), Msg::Data(2)]));
    assert_eq!(mailbox.state(), FsmState::Closed);
    assert_eq!(h.router.close(1), None);
    assert!(!h.router.contains(1));
    assert_eq!(h.router.alive(), 1);
    let err = h.router.send(1, Msg::Data(3)).unwrap_err();
    assert_eq!(err.into_inner(), Msg::Data(3));
    h.shutdown();
}

#[test]
fn after_shutdown_every_send_is_closed_and_hands_the_message_back() {
    let h = Harness::started(config(1, 8, 8));
    h.register([1]);
    let router = h.router.clone();
    h.shutdown();
    assert!(router.is_closed());
    let err = router.send(1, Msg::Data(9)).unwrap_err();
    assert!(matches!(
        &err,
        SendError::Closed {
            target: Target::Normal(1),
            ..
        }
    ));
    assert_eq!(err.into_inner(), Msg::Data(9));
    let err = router.send_control(StoreMsg::Ping(1)).unwrap_err();
    assert!(matches!(
        &err,
        SendError::Closed {
            target: Target::Control,
            ..
        }
    ));
    assert_eq!(err.to_string(), "mailbox of the control fsm is closed");
    let err = router.register(5, Toy::new(5)).unwrap_err();
    assert!(matches!(err, RegisterError::Closed { id: 5, .. }));
    assert_eq!(router.alive(), 0);
}

#[test]
fn duplicate_registration_hands_the_fsm_back() {
    let h = Harness::new(config(1, 8, 8));
    h.register([1]);
    let err = h.router.register(1, Toy::new(1)).unwrap_err();
    assert_eq!(err.to_string(), "fsm 1 is already registered");
    assert_eq!(err.into_inner().id, 1);
    assert_eq!(h.router.alive(), 1);
    h.shutdown();
}

#[test]
fn broadcast_reaches_every_live_fsm_once() {
    let h = Harness::started(config(2, 8, 8));
    h.register(1..=20);
    h.router.close(20);
    assert_eq!(h.router.alive(), 19);
    assert_eq!(h.router.broadcast(|| Msg::Data(42)), 19);
    let events = h.wait_data(19);
    let (undelivered, rest) = h.shutdown();
    assert!(undelivered.is_empty());
    let got = common::data_by_fsm(&events);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        (1..=19).collect::<Vec<_>>()
    );
    assert!(got.values().all(|d| d == &[42]));
    assert!(common::data_by_fsm(&rest).is_empty());
}

#[test]
fn stopped_fsm_is_unregistered() {
    // One poller: the control round below runs after the stop round is released.
    let h = Harness::started(config(1, 8, 8));
    h.register([1, 2]);
    h.router.send(1, Msg::Stop).unwrap();
    h.wait_for(|e| matches!(e, Event::End { ids, .. } if ids == &[1]));
    h.router.send_control(StoreMsg::Ping(1)).unwrap();
    h.wait_for(|e| matches!(e, Event::Control { .. }));
    assert!(!h.router.contains(1));
    assert_eq!(h.router.alive(), 1);
    assert!(h.router.send(1, Msg::Data(1)).unwrap_err().is_not_found());
    // The id can be reused.
    h.register([1]);
    h.shutdown();
}

#[test]
fn control_fsm_gets_its_mail() {
    let h = Harness::started(config(2, 8, 8));
    for i in 0..5 {
        h.router.send_control(StoreMsg::Ping(i)).unwrap();
    }
    let mut pings = Vec::new();
    while pings.len() < 5 {
        if let Event::Control { pings: p } = h.next_event() {
            pings.extend(p);
        }
    }
    assert_eq!(pings, vec![0, 1, 2, 3, 4]);
    h.shutdown();
}

#[test]
fn unknown_id_mail_is_rerouted_to_control_which_creates_the_fsm() {
    // What raftstore does with a Raft message for a peer it does not have yet.
    let h = Harness::started(config(2, 8, 8));
    let msg = match h.router.send(42, Msg::Data(7)) {
        Err(e) if e.is_not_found() => e.into_inner(),
        other => panic!("expected NotFound, got {other:?}"),
    };
    h.router
        .send_control(StoreMsg::Create { id: 42, msg })
        .unwrap();
    h.wait_for(|e| matches!(e, Event::Normal { id: 42, data, .. } if data == &[7]));
    assert!(h.router.contains(42));
    h.shutdown();
}

#[test]
fn invalid_config_is_refused_with_the_field_named() {
    let cfg = Config {
        max_batch_size: 0,
        ..Config::default()
    };
    let err = create_system::<Toy, common::Store>(&cfg, Box::new(common::Store))
        .err()
        .unwrap();
    assert_eq!(err.field, "max_batch_size");
}
