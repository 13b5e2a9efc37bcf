//! The checked-in generated code is what the checked-in schema extracts generate (CI fails on a stale file).

#[test]
fn generated_code_is_current() {
    let dir = qmp_qapi_gen::output_dir();
    for (name, text) in qmp_qapi_gen::generate().expect("the schema extracts generate") {
        let current = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            current == text,
            "qmp-qapi/src/generated/{name} is stale: run `cargo run -p qmp-qapi-gen -- generate` and commit it"
        );
    }
}

#[test]
fn every_release_is_an_input() {
    let releases: Vec<String> = qmp_qapi_gen::load("qmp").unwrap().into_iter().map(|(r, _)| r).collect();
    assert_eq!(releases, ["7.2", "10.0"]);
}
