#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use casesync_engine::store::{Store, StoreOptions};
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let store = Store::open(std::path::Path::new(&path), StoreOptions::default()).unwrap();
    let space = store.spaces()[0];
    for _ in 0..3 {
        let t = Instant::now();
        let mut n = 0u64;
        let fold = store.fold_log(&space, |_| { n += 1; true }).unwrap();
        let a = t.elapsed().as_secs_f64();
        drop(fold);
        println!("{n} events: fold {:.0} ms ({:.0} ev/s), drop {:.0} ms", a * 1e3, n as f64 / a, (t.elapsed().as_secs_f64() - a) * 1e3);
    }
}
