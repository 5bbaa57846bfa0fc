use super::*;

#[test]
fn guest_events_parse_and_other_lines_do_not() {
    let e = GuestEvent::parse(br#"@tidepool {"event":"progress","done":3,"total":10,"message":"reading"}"#);
    assert_eq!(e, Some(GuestEvent::Progress { done: 3, total: Some(10), message: Some("reading".into()) }));
    assert_eq!(GuestEvent::parse(b"plain stderr"), None);
    assert_eq!(GuestEvent::parse(br#"@tidepool {"event":"nope"}"#), None);
}

#[test]
fn names_are_sanitized() {
    assert_eq!(sanitize_name("word freq!"), "word_freq_");
    assert_eq!(sanitize_name(".."), "algorithm");
}

#[test]
fn non_empty_output_directories_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep.txt"), b"precious").unwrap();
    assert!(matches!(prepare_output(tmp.path()), Err(Error::InvalidOutput { .. })));
    std::fs::write(tmp.path().join("file"), b"").unwrap();
    assert!(matches!(prepare_output(&tmp.path().join("file")), Err(Error::InvalidOutput { .. })));
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    prepare_output(&tmp.path().join("empty")).unwrap();
    assert_eq!(std::fs::read(tmp.path().join("keep.txt")).unwrap(), b"precious");
    prepare_output(&tmp.path().join("new/deeper")).unwrap();
    assert!(tmp.path().join("new/deeper").is_dir());
}
