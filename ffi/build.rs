//! Gives the shared library an soname on ELF systems, so that a program linked against
//! `libfedotp.so` records the ABI it was built for (`libfedotp.so.0.1` while the major version
//! is 0, where each minor version may change the ABI; `libfedotp.so.N` from 1.0 on) and the
//! dynamic loader refuses an incompatible one. `ffi/install.sh` installs the file under that
//! name with the usual symlinks.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd"
    ) {
        let major = env("CARGO_PKG_VERSION_MAJOR");
        let abi = if major == "0" {
            format!("0.{}", env("CARGO_PKG_VERSION_MINOR"))
        } else {
            major
        };
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libfedotp.so.{abi}");
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}
