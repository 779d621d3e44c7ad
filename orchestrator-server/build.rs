//! `embed_migrations!` reads the `migrations` directory when the crate compiles, which cargo
//! does not watch by itself: without this, a new or changed migration would not be embedded
//! until some source file changed too.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
