// `sqlx::migrate!` embeds `migrations/` at compile time, but on stable Rust cargo does not know
// the macro read that directory: without this, a new migration file would not rebuild `store`
// and `relayctl migrate` and the tests would silently run the old set.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
