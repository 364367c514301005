//! How long planning one point query takes (parse with sqlparser, then plan), for the SQL
//! benchmark's accounting: `cargo run --release --example plan_cost`.
fn main() {
    let n = 200_000;
    let started = std::time::Instant::now();
    for i in 0..n {
        let q = format!(
            "SELECT customer, total, count FROM customers WHERE customer = 'customer-0{}'",
            10_000 + i % 90_000
        );
        std::hint::black_box(atelier_lambda::sql::plan::plan(&q).unwrap());
    }
    println!("{:.1} µs per plan", started.elapsed().as_secs_f64() * 1e6 / n as f64);
}
