# shellcheck shell=bash
# Helpers shared by scripts/test and scripts/relay-up (sourced, not run).

# The workspace needs Rust 1.88 or newer (edition 2024). Debian's own rustc is older, so a
# missing or old toolchain is reported with the way to get one rather than installed here.
require_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "telerelay: cargo not found. Install Rust 1.88 or newer (https://rustup.rs), then run this again." >&2
        exit 1
    fi
    local version
    version=$(rustc --version | awk '{print $2}')
    if [[ "$(printf '%s\n1.88.0\n' "$version" | sort -V | head -n1)" != "1.88.0" ]]; then
        echo "telerelay: rustc $version is too old; 1.88 or newer is needed (rustup update)." >&2
        exit 1
    fi
}
