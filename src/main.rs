fn main() -> anyhow::Result<()> {
    ferrolb::main()
}
