//! Where connections land once the rules are in: at the proxy's listeners, with their
//! original destination readable, or (for exactly the exempted ones) where they were
//! going.

use crate::for_each_backend;
use crate::support::{Backend, PEER_IP, PEER_IP_2, PEER_IP6, PEER_IP6_2, POD_IP, POD_IP6, Pod};

/// The proxy's UID, as the rules exempt it by default.
const PROXY_UID: u32 = 2102;

for_each_backend!(
    inbound_connections_land_on_the_inbound_port,
    outbound_connections_land_on_the_outbound_port_with_so_original_dst,
    the_proxy_uid_connects_out_directly,
    the_proxy_gid_connects_out_directly,
    the_admin_and_proxy_ports_are_never_redirected,
    skipped_inbound_ports_reach_the_app_directly,
    only_the_listed_inbound_ports_are_redirected,
    skipped_outbound_ports_leave_directly,
    skipped_outbound_cidrs_of_both_families_leave_directly,
    only_included_outbound_cidrs_are_redirected,
    loopback_traffic_stays_on_loopback,
    an_app_calling_its_own_pod_ip_reaches_itself,
    the_proxy_calling_its_own_pod_ip_lands_on_its_inbound_port,
    ipv6_outbound_connections_land_on_the_outbound_port_with_ip6t_so_original_dst,
    ipv6_inbound_connections_land_on_the_inbound_port,
    with_ipv6_off_ipv6_is_left_alone,
);

fn inbound_connections_land_on_the_inbound_port(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &[])?;
    let _proxy = pod.listen("inbound-proxy", "0.0.0.0:4143")?;
    let _app = pod.listen("app", "0.0.0.0:8080")?;

    // The proxy learns the app port the client asked for.
    let landed = pod.peer_connect(&format!("{POD_IP}:8080"))?;
    assert_eq!(landed, format!("inbound-proxy {POD_IP}:8080"));
    Ok(())
}

fn outbound_connections_land_on_the_outbound_port_with_so_original_dst(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &[])?;
    let _proxy = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _server = pod.peer_listen("server", &format!("{PEER_IP}:80"))?;

    let landed = pod.connect(&format!("{PEER_IP}:80"))?;
    assert_eq!(landed, format!("outbound-proxy {PEER_IP}:80"));
    Ok(())
}

fn the_proxy_uid_connects_out_directly(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &[])?;
    let _proxy = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _server = pod.peer_listen("server", &format!("{PEER_IP}:80"))?;
    let server = format!("{PEER_IP}:80");

    // The proxy's own connection goes out as it is: no loop back into itself.
    assert!(
        pod.connect_as(PROXY_UID, PROXY_UID, &server)?
            .starts_with("server ")
    );
    // Any other user's is redirected.
    assert!(
        pod.connect_as(3000, 3000, &server)?
            .starts_with("outbound-proxy ")
    );
    Ok(())
}

fn the_proxy_gid_connects_out_directly(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &["--proxy-gid", "2103"])?;
    let _proxy = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _server = pod.peer_listen("server", &format!("{PEER_IP}:80"))?;
    let server = format!("{PEER_IP}:80");

    assert!(pod.connect_as(3000, 2103, &server)?.starts_with("server "));
    assert!(
        pod.connect_as(3000, 3000, &server)?
            .starts_with("outbound-proxy ")
    );
    Ok(())
}

fn the_admin_and_proxy_ports_are_never_redirected(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &[])?;
    let _inbound = pod.listen("inbound-proxy", "0.0.0.0:4143")?;
    let _outbound = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _admin = pod.listen("admin", "0.0.0.0:4191")?;
    let _peer_admin = pod.peer_listen("peer-admin", &format!("{PEER_IP}:4191"))?;
    let _peer_inbound = pod.peer_listen("peer-inbound", &format!("{PEER_IP}:4143"))?;

    // A kubelet probe or a scrape reaches the admin server itself.
    assert!(
        pod.peer_connect(&format!("{POD_IP}:4191"))?
            .starts_with("admin ")
    );
    // A connection to the inbound listener is not redirected into it a second time.
    assert!(
        pod.peer_connect(&format!("{POD_IP}:4143"))?
            .starts_with("inbound-proxy ")
    );
    // From the app: another pod's admin and proxy ports are reached directly.
    assert!(
        pod.connect(&format!("{PEER_IP}:4191"))?
            .starts_with("peer-admin ")
    );
    assert!(
        pod.connect(&format!("{PEER_IP}:4143"))?
            .starts_with("peer-inbound ")
    );
    Ok(())
}

fn skipped_inbound_ports_reach_the_app_directly(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &["--skip-inbound-ports", "25,8000-8100"])?;
    let _proxy = pod.listen("inbound-proxy", "0.0.0.0:4143")?;
    let _smtp = pod.listen("smtp", "0.0.0.0:25")?;
    let _ranged = pod.listen("ranged", "0.0.0.0:8050")?;
    let _app = pod.listen("app", "0.0.0.0:9090")?;

    assert!(
        pod.peer_connect(&format!("{POD_IP}:25"))?
            .starts_with("smtp ")
    );
    assert!(
        pod.peer_connect(&format!("{POD_IP}:8050"))?
            .starts_with("ranged ")
    );
    let landed = pod.peer_connect(&format!("{POD_IP}:9090"))?;
    assert_eq!(landed, format!("inbound-proxy {POD_IP}:9090"));
    Ok(())
}

fn only_the_listed_inbound_ports_are_redirected(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &["--redirect-inbound-ports", "8080"])?;
    let _proxy = pod.listen("inbound-proxy", "0.0.0.0:4143")?;
    let _other = pod.listen("other", "0.0.0.0:9090")?;

    let landed = pod.peer_connect(&format!("{POD_IP}:8080"))?;
    assert_eq!(landed, format!("inbound-proxy {POD_IP}:8080"));
    assert!(
        pod.peer_connect(&format!("{POD_IP}:9090"))?
            .starts_with("other ")
    );
    Ok(())
}

fn skipped_outbound_ports_leave_directly(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &["--skip-outbound-ports", "443,5000-5100"])?;
    let _proxy = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _https = pod.peer_listen("https", &format!("{PEER_IP}:443"))?;
    let _ranged = pod.peer_listen("ranged", &format!("{PEER_IP}:5050"))?;

    assert!(
        pod.connect(&format!("{PEER_IP}:443"))?
            .starts_with("https ")
    );
    assert!(
        pod.connect(&format!("{PEER_IP}:5050"))?
            .starts_with("ranged ")
    );
    let landed = pod.connect(&format!("{PEER_IP}:80"))?;
    assert_eq!(landed, format!("outbound-proxy {PEER_IP}:80"));
    Ok(())
}

fn skipped_outbound_cidrs_of_both_families_leave_directly(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    let skipped = format!("{PEER_IP_2}/32,{PEER_IP6_2}/128");
    pod.proxy_init(backend, &["--skip-outbound-cidrs", &skipped])?;
    let _proxy = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _proxy6 = pod.listen("outbound-proxy", "[::1]:4140")?;
    let _skipped = pod.peer_listen("skipped", &format!("{PEER_IP_2}:80"))?;
    let _skipped6 = pod.peer_listen("skipped", &format!("[{PEER_IP6_2}]:80"))?;

    assert!(
        pod.connect(&format!("{PEER_IP_2}:80"))?
            .starts_with("skipped ")
    );
    assert!(
        pod.connect(&format!("[{PEER_IP6_2}]:80"))?
            .starts_with("skipped ")
    );
    // The same peer's other addresses are still redirected.
    let landed = pod.connect(&format!("{PEER_IP}:80"))?;
    assert_eq!(landed, format!("outbound-proxy {PEER_IP}:80"));
    let landed = pod.connect(&format!("[{PEER_IP6}]:80"))?;
    assert_eq!(landed, format!("outbound-proxy [{PEER_IP6}]:80"));
    Ok(())
}

fn only_included_outbound_cidrs_are_redirected(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(
        backend,
        &["--include-outbound-cidrs", &format!("{PEER_IP}/32")],
    )?;
    let _proxy = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _proxy6 = pod.listen("outbound-proxy", "[::1]:4140")?;
    let _other = pod.peer_listen("other", &format!("{PEER_IP_2}:80"))?;
    let _other6 = pod.peer_listen("other", &format!("[{PEER_IP6}]:80"))?;

    let landed = pod.connect(&format!("{PEER_IP}:80"))?;
    assert_eq!(landed, format!("outbound-proxy {PEER_IP}:80"));
    assert!(
        pod.connect(&format!("{PEER_IP_2}:80"))?
            .starts_with("other ")
    );
    // No IPv6 network was included, so IPv6 is not redirected at all.
    assert!(
        pod.connect(&format!("[{PEER_IP6}]:80"))?
            .starts_with("other ")
    );
    Ok(())
}

fn loopback_traffic_stays_on_loopback(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &[])?;
    let _proxy = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _proxy6 = pod.listen("outbound-proxy", "[::1]:4140")?;
    let _local = pod.listen("local", "127.0.0.1:9000")?;
    let _local6 = pod.listen("local", "[::1]:9000")?;

    assert!(pod.connect("127.0.0.1:9000")?.starts_with("local "));
    assert!(pod.connect("[::1]:9000")?.starts_with("local "));
    // The proxy hands inbound connections to the app on 127.0.0.1, as its own user.
    assert!(
        pod.connect_as(PROXY_UID, PROXY_UID, "127.0.0.1:9000")?
            .starts_with("local ")
    );
    Ok(())
}

fn an_app_calling_its_own_pod_ip_reaches_itself(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &[])?;
    let _inbound = pod.listen("inbound-proxy", "0.0.0.0:4143")?;
    let _outbound = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _app = pod.listen("app", "0.0.0.0:8080")?;

    assert!(pod.connect(&format!("{POD_IP}:8080"))?.starts_with("app "));
    Ok(())
}

fn the_proxy_calling_its_own_pod_ip_lands_on_its_inbound_port(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &[])?;
    let _inbound = pod.listen("inbound-proxy", "0.0.0.0:4143")?;
    let _inbound6 = pod.listen("inbound-proxy", "[::1]:4143")?;
    let _app = pod.listen("app", "[::]:8080")?;

    // An app that calls its own service gets its own pod as the endpoint; the outbound
    // proxy's mesh TLS must meet the inbound proxy, not the app.
    let landed = pod.connect_as(PROXY_UID, PROXY_UID, &format!("{POD_IP}:8080"))?;
    assert_eq!(landed, format!("inbound-proxy {POD_IP}:8080"));
    let landed = pod.connect_as(PROXY_UID, PROXY_UID, &format!("[{POD_IP6}]:8080"))?;
    assert_eq!(landed, format!("inbound-proxy [{POD_IP6}]:8080"));
    Ok(())
}

fn ipv6_outbound_connections_land_on_the_outbound_port_with_ip6t_so_original_dst(
    backend: Backend,
) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &[])?;
    let _proxy = pod.listen("outbound-proxy", "[::1]:4140")?;
    let _server = pod.peer_listen("server", &format!("[{PEER_IP6}]:80"))?;

    let landed = pod.connect(&format!("[{PEER_IP6}]:80"))?;
    assert_eq!(landed, format!("outbound-proxy [{PEER_IP6}]:80"));
    Ok(())
}

fn ipv6_inbound_connections_land_on_the_inbound_port(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &[])?;
    let _proxy = pod.listen("inbound-proxy", "[::]:4143")?;
    let _app = pod.listen("app", "[::]:8080")?;

    let landed = pod.peer_connect(&format!("[{POD_IP6}]:8080"))?;
    assert_eq!(landed, format!("inbound-proxy [{POD_IP6}]:8080"));
    Ok(())
}

fn with_ipv6_off_ipv6_is_left_alone(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &["--ipv6=false"])?;
    let _proxy = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _proxy6 = pod.listen("outbound-proxy", "[::1]:4140")?;
    let _server6 = pod.peer_listen("server", &format!("[{PEER_IP6}]:80"))?;

    assert!(
        pod.connect(&format!("[{PEER_IP6}]:80"))?
            .starts_with("server ")
    );
    let landed = pod.connect(&format!("{PEER_IP}:80"))?;
    assert_eq!(landed, format!("outbound-proxy {PEER_IP}:80"));
    Ok(())
}
