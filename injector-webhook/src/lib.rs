//! The Trellis injector (not built yet: the injector issue owns it).
//!
//! It will own turning a Pod into a meshed Pod, as a pure `mutate(pod) -> patch`
//! function shared by the HTTPS admission webhook (port 8443) and `meshctl inject`:
//! adding the `trellis-proxy-init` init container and the `trellis-proxy` sidecar to
//! every pod created in a namespace labelled `trellis.io/inject=enabled`, honouring
//! the `trellis.io/` pod annotations.
