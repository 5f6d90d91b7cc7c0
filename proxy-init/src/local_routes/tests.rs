use super::*;

/// `ip -json -4 route show table local type local` in a fresh pod (iproute2 6.15).
const V4: &str = r#"[{"type":"local","dst":"10.9.0.2","dev":"eth0","protocol":"kernel","scope":"host","prefsrc":"10.9.0.2","flags":[]},{"type":"local","dst":"127.0.0.0/8","dev":"lo","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]},{"type":"local","dst":"127.0.0.1","dev":"lo","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]}]"#;

/// The same for IPv6, from a pod whose earlier run was cut short: `::1` already has
/// its twin and the kernel's route is gone; `fd00::2` has its twin but the kernel's
/// route is still there.
const V6_HALF_DONE: &str = r#"[{"type":"local","dst":"::1","dev":"lo","protocol":"kernel","metric":1024,"flags":[],"metrics":[{"congestion":"reno"}],"pref":"medium"},{"type":"local","dst":"fd00::2","dev":"eth0","protocol":"kernel","metric":0,"flags":[],"pref":"medium"},{"type":"local","dst":"fd00::2","dev":"eth0","protocol":"kernel","metric":1024,"flags":[],"metrics":[{"congestion":"reno"}],"pref":"medium"}]"#;

fn routes(json: &str) -> Vec<LocalRoute> {
    serde_json::from_str(json).expect("fixture parses")
}

fn reno() -> LocalCongestion {
    LocalCongestion::default()
}

#[test]
fn every_ipv4_local_route_is_replaced_in_place_with_the_algorithm() {
    assert_eq!(
        render_install(&routes(V4), &reno()),
        "route replace local 10.9.0.2 dev eth0 proto kernel table local src 10.9.0.2 scope host congctl reno\n\
         route replace local 127.0.0.0/8 dev lo proto kernel table local src 127.0.0.1 scope host congctl reno\n\
         route replace local 127.0.0.1 dev lo proto kernel table local src 127.0.0.1 scope host congctl reno\n"
    );
}

#[test]
fn a_kernel_ipv6_route_gets_a_twin_before_it_is_deleted() {
    let fresh = r#"[{"type":"local","dst":"::1","dev":"lo","protocol":"kernel","metric":0,"flags":[],"pref":"medium"}]"#;
    assert_eq!(
        render_install(&routes(fresh), &reno()),
        "route replace local ::1 dev lo proto kernel metric 1024 table local congctl reno\n\
         route del local ::1 dev lo proto kernel metric 0 table local\n"
    );
}

#[test]
fn a_run_cut_short_is_finished_and_nothing_done_is_redone() {
    assert_eq!(
        render_install(&routes(V6_HALF_DONE), &reno()),
        "route replace local fd00::2 dev eth0 proto kernel metric 1024 table local congctl reno\n\
         route del local fd00::2 dev eth0 proto kernel metric 0 table local\n"
    );
    let done = r#"[{"type":"local","dst":"127.0.0.1","dev":"lo","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[],"metrics":[{"congestion":"reno"}]}]"#;
    assert_eq!(render_install(&routes(done), &reno()), "");
}

#[test]
fn another_algorithm_replaces_the_one_named_before() {
    let cubic = LocalCongestion::Algorithm("cubic".into());
    let document = render_install(&routes(V6_HALF_DONE), &cubic);
    assert!(
        document.starts_with(
            "route replace local ::1 dev lo proto kernel metric 1024 table local congctl cubic\n"
        ),
        "{document}"
    );
    assert_eq!(document.lines().count(), 4, "{document}");
}

#[test]
fn keep_changes_nothing_on_install_or_cleanup() {
    for json in [V4, V6_HALF_DONE] {
        assert_eq!(render_install(&routes(json), &LocalCongestion::Keep), "");
        assert_eq!(render_cleanup(&routes(json), &LocalCongestion::Keep), "");
    }
}

#[test]
fn cleanup_takes_the_algorithm_off_only_the_routes_that_name_it() {
    assert_eq!(render_cleanup(&routes(V4), &reno()), "");
    assert_eq!(
        render_cleanup(&routes(V6_HALF_DONE), &reno()),
        "route replace local ::1 dev lo proto kernel metric 1024 table local\n\
         route replace local fd00::2 dev eth0 proto kernel metric 1024 table local\n"
    );
    let locked = r#"[{"type":"local","dst":"127.0.0.1","dev":"lo","protocol":"kernel","scope":"host","flags":[],"metrics":[{"congestion":"lock reno"}]}]"#;
    assert_eq!(routes(locked)[0].congestion(), Some("reno"));
    assert_eq!(
        render_cleanup(&routes(locked), &LocalCongestion::Algorithm("cubic".into())),
        ""
    );
}

#[test]
fn a_value_that_is_not_one_word_is_never_written_into_a_command() {
    let odd = r#"[{"type":"local","dst":"127.0.0.1 table main","dev":"lo","flags":[]},{"type":"local","dst":"127.0.0.2","dev":"lo\nroute flush","flags":[]}]"#;
    assert_eq!(render_install(&routes(odd), &reno()), "");
}

#[test]
fn the_flag_takes_keep_or_a_name_and_rejects_the_rest() {
    assert_eq!(
        LocalCongestion::for_flag("keep").unwrap(),
        LocalCongestion::Keep
    );
    assert_eq!(LocalCongestion::for_flag("reno").unwrap(), reno());
    assert_eq!(
        LocalCongestion::for_flag("bbr").unwrap(),
        LocalCongestion::Algorithm("bbr".into())
    );
    for bad in ["", "reno cubic", "reno\n", "a-name-far-too-long", "../x"] {
        let err = LocalCongestion::for_flag(bad).expect_err(bad);
        assert!(
            err.to_string().contains(FLAG) && err.to_string().contains(&env_of(FLAG)),
            "{err}"
        );
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE, "{bad:?}");
    }
}
