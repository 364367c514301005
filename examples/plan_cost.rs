//! How long planning one point query takes — parse (Postgres dialect), DataFusion's logical
//! plan, its optimizer and physical plan over the live table providers — for the SQL
//! benchmark's accounting: `cargo run --release --example plan_cost`.
fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let context = atelier_lambda::sql::context::session("real-time-orders", 2, 2)?;
    let n = 20_000;
    let started = std::time::Instant::now();
    runtime.block_on(async {
        for i in 0..n {
            let q = format!(
                "SELECT customer, total, count FROM customers WHERE customer = 'customer-0{}'",
                10_000 + i % 90_000
            );
            let plan = context.state().create_logical_plan(&q).await?;
            let physical = context.state().create_physical_plan(&plan).await?;
            std::hint::black_box(physical);
        }
        anyhow::Ok(())
    })?;
    println!("{:.1} µs per plan", started.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    Ok(())
}
