//! placeholder
/// placeholder
pub async fn run(_for: Option<std::time::Duration>) -> anyhow::Result<()> {
    Ok(())
}
