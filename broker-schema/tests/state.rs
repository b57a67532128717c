#![allow(clippy::unwrap_used)]
//! Task states and dead-letter reasons: their wire names and round trips,
//! and the header names that carry them.

use std::collections::BTreeSet;

use celeriac_schema::headers::{self, truncate_error_message, MAX_ERROR_MESSAGE_BYTES};
use celeriac_schema::{from_value, to_value, DeadLetterReason, TaskState};

#[test]
fn task_state_wire_names() {
    let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "created",
            "queued",
            "started",
            "retrying",
            "succeeded",
            "failed",
            "skipped",
            "revoked",
            "expired"
        ]
    );
}

#[test]
fn task_state_round_trips_through_every_spelling() {
    for state in TaskState::ALL {
        assert_eq!(state.to_string(), state.as_str());
        // JSON (the store, the CLI).
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, format!("\"{}\"", state.as_str()));
        assert_eq!(serde_json::from_str::<TaskState>(&json).unwrap(), state);
        // MessagePack (events).
        let value = to_value(&state).unwrap();
        assert_eq!(value, rmpv::Value::from(state.as_str()));
        assert_eq!(from_value::<TaskState>(&value, "state").unwrap(), state);
    }
}

#[test]
fn task_states_parse_from_their_wire_names_only() {
    for state in TaskState::ALL {
        assert_eq!(TaskState::parse(state.as_str()), Some(state));
    }
    for bad in ["Expired", "running", "", "revoked "] {
        assert_eq!(TaskState::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn unknown_task_states_are_refused() {
    for bad in ["\"Created\"", "\"running\"", "\"\"", "3"] {
        assert!(serde_json::from_str::<TaskState>(bad).is_err(), "{bad}");
    }
    let err = from_value::<TaskState>(&rmpv::Value::from("done"), "state").unwrap_err();
    assert_eq!(err.field(), Some("state"));
}

#[test]
fn terminal_states() {
    let terminal: Vec<TaskState> = TaskState::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .collect();
    assert_eq!(
        terminal,
        [
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Skipped,
            TaskState::Revoked,
            TaskState::Expired
        ]
    );
}

#[test]
fn dead_letter_reason_wire_names() {
    let names: Vec<&str> = DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "retries-exhausted",
            "rejected",
            "unknown-task",
            "malformed",
            "delivery-limit",
            "forbidden",
            "bad-signature"
        ]
    );
}

#[test]
fn dead_letter_reasons_round_trip() {
    for reason in DeadLetterReason::ALL {
        assert_eq!(reason.to_string(), reason.as_str());
        assert_eq!(reason.as_str().parse::<DeadLetterReason>().unwrap(), reason);
    }
}

#[test]
fn unknown_dead_letter_reasons_are_refused_with_the_value() {
    for bad in ["", "Rejected", "retries_exhausted", "timeout"] {
        let err = bad.parse::<DeadLetterReason>().unwrap_err();
        assert_eq!(err.0, bad);
        assert!(err.to_string().contains("unknown dead-letter reason"));
    }
}

#[test]
fn header_names() {
    let all = [
        (headers::TASK, "celeriac-task"),
        (headers::ATTEMPT, "celeriac-attempt"),
        (headers::IDEMPOTENCY_KEY, "celeriac-idempotency-key"),
        (headers::WORKFLOW_ID, "celeriac-workflow-id"),
        (headers::GROUP_ID, "celeriac-group-id"),
        (headers::CHORD_ID, "celeriac-chord-id"),
        (headers::QUEUE, "celeriac-queue"),
        (headers::REASON, "celeriac-reason"),
        (headers::ERROR_TYPE, "celeriac-error-type"),
        (headers::ERROR_MESSAGE, "celeriac-error-message"),
        (headers::FAILED_AT, "celeriac-failed-at"),
        (headers::WORKER, "celeriac-worker"),
        (headers::ATTEMPTS, "celeriac-attempts"),
        (headers::LEASE, "celeriac-lease"),
    ];
    let mut seen = BTreeSet::new();
    for (constant, name) in all {
        assert_eq!(constant, name);
        assert!(
            !constant.starts_with("x-"),
            "{constant} uses a broker prefix"
        );
        assert!(seen.insert(constant), "{constant} twice");
    }
}

#[test]
fn error_messages_are_cut_at_4_kib_on_a_character_boundary() {
    assert_eq!(MAX_ERROR_MESSAGE_BYTES, 4096);
    assert_eq!(truncate_error_message("short"), "short");
    let exact = "a".repeat(4096);
    assert_eq!(truncate_error_message(&exact), exact);
    let ascii = "a".repeat(5000);
    assert_eq!(truncate_error_message(&ascii).len(), 4096);
    // 'é' is two bytes: 4096 falls on a boundary, 4095 + 'é' does not.
    let accents = "é".repeat(3000);
    assert_eq!(truncate_error_message(&accents).len(), 4096);
    let shifted = format!("a{}", "é".repeat(3000));
    let cut = truncate_error_message(&shifted);
    assert_eq!(cut.len(), 4095);
    assert!(shifted.starts_with(cut));
}
