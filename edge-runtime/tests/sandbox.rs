//! Hostile modules against the wasm host: each must be contained with a clear status, and
//! neither the host nor a healthy module running beside it may notice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_api::node::InstancePhase;
use edgeplane_edge_runtime::host::{CompiledModule, GuestError, HostConfig, InstanceLimits, LoadError, WasmHost};
use edgeplane_edge_runtime::pool::{InstanceHandle, InstanceSpec, ProcessError, RestartPolicy, WasmPool};
use edgeplane_edge_runtime::precompiled::Artifact;

mod common;
use common::{echo, module, PRELUDE};

fn host() -> Arc<WasmHost> {
    let config = HostConfig { max_instances: 16, max_instance_memory: 64 << 20, max_output_per_batch: 1 << 20 };
    Arc::new(WasmHost::new(config).expect("the wasm host starts"))
}

#[test]
fn a_node_with_more_memory_than_wasm32_addresses_still_starts() {
    // A cloud-tier node with 8 GiB: instances are capped at the 4 GiB a wasm32 memory reaches.
    let config = HostConfig { max_instances: 4, max_instance_memory: 8 << 30, max_output_per_batch: 1 << 20 };
    let host = WasmHost::new(config).expect("an 8 GiB node gets a wasm host");
    let module = load(&host, &echo()).expect("loads");
    let mut instance = host.instantiate(&module, limits(1, 100), b"{}", None).expect("starts");
    assert_eq!(instance.process(b"batch").expect("processes"), vec![(0, b"batch".to_vec())]);
}

/// What the orchestrators compile for this node's target loads here without Cranelift and
/// runs like a local compile; damaged bytes, or code made with other settings, never load.
#[test]
fn a_module_compiled_ahead_of_time_runs_and_damaged_or_foreign_code_is_refused() {
    let host = host();
    let (target, fingerprint) = host.target();
    let engine = target.compiling_engine().expect("an engine for this node's target");
    assert_eq!(edgeplane_engine::fingerprint(&engine), fingerprint, "what is compiled for {target} would not load here");
    let wasm = wat::parse_str(echo()).expect("valid WAT");
    let compiled = engine.precompile_module(&wasm).expect("compiles");
    let sha256 = edgeplane_api::hex::sha256(&compiled);
    let module = host.load_precompiled(&Artifact::verified(compiled.clone(), &sha256).expect("whole")).expect("loads");
    let mut instance = host.instantiate(&module, limits(1, 100), b"{}", None).expect("starts");
    assert_eq!(instance.process(b"batch").expect("processes"), vec![(0, b"batch".to_vec())]);

    let mut damaged = compiled;
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    let refused = Artifact::verified(damaged, &sha256).expect_err("a flipped bit is caught before wasmtime sees the code");
    assert!(refused.contains("sha256"), "{refused}");

    // Without epoch interruption the code could not be stopped at its deadline.
    let foreign = wasmtime::Engine::new(&wasmtime::Config::new()).expect("engine").precompile_module(&wasm).expect("compiles");
    let foreign = Artifact::verified(foreign.clone(), &edgeplane_api::hex::sha256(&foreign)).expect("whole");
    match host.load_precompiled(&foreign) {
        Err(LoadError::Precompiled(why)) => assert!(why.contains("epoch"), "{why}"),
        other => panic!("code compiled with other settings loaded: {other:?}"),
    }
}

fn load(host: &WasmHost, wat: &str) -> Result<CompiledModule, LoadError> {
    host.load(&wat::parse_str(wat).expect("test modules are valid WAT"))
}

fn limits(memory_mib: usize, deadline_ms: u64) -> InstanceLimits {
    InstanceLimits {
        memory_bytes: memory_mib << 20,
        batch_deadline: Duration::from_millis(deadline_ms),
        outputs: vec!["out".into()],
        log_name: "test".into(),
    }
}

/// Zero-byte emits cost the host an entry each; before they were charged against the output
/// budget, a guest could queue millions of them within one batch.
#[test]
fn a_flood_of_empty_emits_is_bounded_by_the_output_budget() {
    let host = host();
    let flood = module(
        r#"(func (export "ep_process") (param i32 i32) (result i32) (local $n i32)
            (local.set $n (i32.const 2000000))
            (loop $again
                (drop (call $emit (i32.const 16) (i32.const 3) (i32.const 0) (i32.const 0)))
                (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                (br_if $again (local.get $n)))
            i32.const 0)"#,
    );
    let module = load(&host, &flood).expect("loads");
    let mut instance = host.instantiate(&module, limits(1, 10_000), b"{}", None).expect("starts");
    let emitted = instance.process(b"batch").expect("processes");
    let most = (1 << 20) / edgeplane_edge_runtime::host::EMIT_OVERHEAD;
    assert!(emitted.len() <= most, "{} emits kept; the budget allows {most}", emitted.len());
    assert!(!emitted.is_empty(), "emits within the budget are kept");
}

#[test]
fn a_well_behaved_module_echoes_its_batches() {
    let host = host();
    let module = load(&host, &echo()).expect("loads");
    let mut instance = host.instantiate(&module, limits(1, 100), b"{}", None).expect("starts");
    for n in 0..100u8 {
        let emitted = instance.process(&[n; 40]).expect("processes");
        assert_eq!(emitted, vec![(0, vec![n; 40])], "batch {n} came back changed");
    }
}

/// ABI 1.2: a batch the host validated goes to `ep_process_validated` where the module
/// exports it; older modules get every batch through `ep_process`, as before.
#[test]
fn validated_batches_go_to_ep_process_validated_where_it_is_exported() {
    let host = host();
    let reading = edgeplane_api::data::Reading { ts: 1, device: "press-1".into(), metric: "temperature".into(), value: 20.5 };
    let batch = edgeplane_api::data::encode_batch(&[reading]);
    let both = module(
        r#"(func (export "ep_process") (param i32 i32) (result i32) i32.const 11)
           (func (export "ep_process_validated") (param i32 i32) (result i32) i32.const 12)"#,
    );
    let both = load(&host, &both).expect("loads");
    assert!(both.takes_validated_batches());
    let mut instance = host.instantiate(&both, limits(1, 100), b"{}", None).expect("starts");
    let code = |result: Result<_, GuestError>| match result {
        Err(GuestError::Returned { code, .. }) => code,
        other => panic!("expected the module's error code, got {other:?}"),
    };
    assert_eq!(code(instance.process(&batch)), 11, "a batch the guest must check goes to ep_process");
    assert_eq!(code(instance.process_validated(&batch)), 12, "a validated batch goes to ep_process_validated");

    let older = load(&host, &echo()).expect("loads");
    assert!(!older.takes_validated_batches());
    let mut instance = host.instantiate(&older, limits(1, 100), b"{}", None).expect("starts");
    assert_eq!(instance.process_validated(&batch).expect("processes"), vec![(0, batch)], "an ABI 1.1 module gets it through ep_process");
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline() {
    let host = host();
    let module =
        load(&host, &module(r#"(func (export "ep_process") (param i32 i32) (result i32) (loop $l (br $l)) i32.const 0)"#)).expect("loads");
    let mut instance = host.instantiate(&module, limits(1, 50), b"{}", None).expect("starts");
    let started = Instant::now();
    let error = instance.process(b"batch").expect_err("an infinite loop cannot succeed");
    assert_eq!(error, GuestError::DeadlineExceeded(Duration::from_millis(50)));
    // Generous: this only proves the loop was cut, not how precisely (that is not a timing test).
    assert!(started.elapsed() < Duration::from_secs(5), "the loop ran for {:?}", started.elapsed());
}

#[test]
fn a_memory_bomb_is_held_at_its_limit() {
    let host = host();
    // Grows by a page until refused, then traps, as an allocator out of memory would.
    let bomb = module(
        r#"(func (export "ep_process") (param i32 i32) (result i32)
            (block $refused (loop $grow
                (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
                (br $grow)))
            unreachable)"#,
    );
    let module = load(&host, &bomb).expect("loads");
    let mut instance = host.instantiate(&module, limits(4, 1000), b"{}", None).expect("starts");
    let error = instance.process(b"batch").expect_err("the bomb traps");
    match error {
        GuestError::Trap { memory_limit_hit: true, .. } => {}
        other => panic!("expected a trap after a refused grow, got {other:?}"),
    }
    assert_eq!(instance.memory_bytes(), 4 << 20, "memory grew past, or stopped short of, its 4 MiB limit");
}

#[test]
fn output_outside_memory_is_a_trap_with_the_bad_pointer() {
    let host = host();
    let module = load(
        &host,
        &module(
            r#"(func (export "ep_process") (param i32 i32) (result i32)
            (call $emit (i32.const 16) (i32.const 3) (i32.const 131000) (i32.const 4096)))"#,
        ),
    )
    .expect("loads");
    let mut instance = host.instantiate(&module, limits(1, 100), b"{}", None).expect("starts");
    match instance.process(b"batch").expect_err("out of bounds") {
        GuestError::Trap { message, .. } => {
            assert!(message.contains("emit: data at 0x1ffb8+4096 is outside"), "unclear message: {message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn oversized_output_is_refused_and_reported() {
    let host = host();
    // Emits its 64 KiB buffer 100 times (6.4 MiB against a 1 MiB budget) and returns the
    // first refusal code it sees, as the SDK does.
    let flood = module(
        r#"(func (export "ep_process") (param i32 i32) (result i32) (local $i i32) (local $code i32)
            (loop $again
                (local.set $code (call $emit (i32.const 16) (i32.const 3) (i32.const 0) (i32.const 65536)))
                (if (i32.lt_s (local.get $code) (i32.const 0)) (then (return (local.get $code))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $again (i32.lt_u (local.get $i) (i32.const 100))))
            i32.const 0)"#,
    );
    let module = load(&host, &flood).expect("loads");
    let mut instance = host.instantiate(&module, limits(1, 1000), b"{}", None).expect("starts");
    match instance.process(b"batch").expect_err("over budget") {
        GuestError::Returned { code: -2, detail: Some(detail) } => {
            assert!(detail.contains("more than the 1048576 bytes allowed per batch"), "unclear detail: {detail}")
        }
        other => panic!("expected the budget refusal, got {other:?}"),
    }
    // Nothing of the refused batch is kept, and the instance is still usable.
    assert!(!GuestError::Returned { code: -2, detail: None }.poisons_instance());
}

#[test]
fn emitting_on_an_undeclared_output_is_refused() {
    let host = host();
    let module = load(
        &host,
        &format!(
            "(module {PRELUDE} (data (i32.const 32) \"secret\")
            (func (export \"ep_process\") (param i32 i32) (result i32)
                (call $emit (i32.const 32) (i32.const 6) (i32.const 0) (i32.const 8))))"
        ),
    )
    .expect("loads");
    let mut instance = host.instantiate(&module, limits(1, 100), b"{}", None).expect("starts");
    assert!(matches!(instance.process(b"batch"), Err(GuestError::Returned { code: -1, .. })));
}

#[test]
fn modules_missing_exports_or_importing_unknown_functions_do_not_load() {
    let host = host();
    let missing = "(module (memory (export \"memory\") 1)
        (func (export \"ep_abi_version\") (result i32) i32.const 1)
        (func (export \"ep_alloc\") (param i32) (result i32) i32.const 0))";
    let error = load(&host, missing).expect_err("no ep_process");
    assert!(error.to_string().contains("exports no function `ep_process`"), "unclear error: {error}");

    // Imports must come first in the text format, so this one goes before the prelude's.
    let importing = format!(
        "(module (import \"wasi_snapshot_preview1\" \"fd_write\" (func (param i32 i32 i32 i32) (result i32))) {PRELUDE}
            (func (export \"ep_process\") (param i32 i32) (result i32) i32.const 0))"
    );
    let error = load(&host, &importing).expect_err("imports WASI");
    assert!(error.to_string().contains("fd_write"), "the error should name the import: {error}");

    let wrong_type = "(module (import \"edgeplane\" \"now_ms\" (func (result i32))) (memory (export \"memory\") 1))";
    let error = load(&host, wrong_type).expect_err("now_ms with the wrong type");
    assert!(error.to_string().contains("now_ms"), "the error should name the import: {error}");
}

#[test]
fn a_module_speaking_another_abi_version_is_refused() {
    let host = host();
    let other = "(module (memory (export \"memory\") 1)
        (func (export \"ep_abi_version\") (result i32) i32.const 2)
        (func (export \"ep_alloc\") (param i32) (result i32) i32.const 0)
        (func (export \"ep_process\") (param i32 i32) (result i32) i32.const 0))";
    let module = load(&host, other).expect("loads");
    match host.instantiate(&module, limits(1, 100), b"{}", None) {
        Err(GuestError::Abi(message)) => assert!(message.contains("returned 2"), "{message}"),
        other => panic!("expected an ABI error, got {other:?}"),
    }
}

#[test]
fn an_allocator_returning_a_pointer_outside_memory_is_refused() {
    let host = host();
    let liar = "(module (memory (export \"memory\") 1)
        (func (export \"ep_abi_version\") (result i32) i32.const 1)
        (func (export \"ep_alloc\") (param i32) (result i32) i32.const 65530)
        (func (export \"ep_process\") (param i32 i32) (result i32) i32.const 0))";
    let module = load(&host, liar).expect("loads");
    let mut instance = host.instantiate(&module, limits(1, 100), b"{}", None).expect("starts");
    match instance.process(&[0; 64]) {
        Err(GuestError::Abi(message)) => assert!(message.contains("outside its memory"), "{message}"),
        other => panic!("expected an ABI error, got {other:?}"),
    }
}

fn spec(host: &WasmHost, name: &str, wat: &str, max_restarts: u32) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        module: Arc::new(load(host, wat).expect("loads")),
        limits: limits(1, 50),
        config_doc: b"{}".to_vec(),
        model_version: None,
        model: None,
        restart: RestartPolicy { first_backoff: Duration::from_millis(5), max_restarts },
        queue_capacity: 64,
    }
}

async fn wait_for_phase(handle: &InstanceHandle, phase: InstancePhase) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.status().phase != phase {
        assert!(Instant::now() < deadline, "{} never reached {phase:?}: {:?}", handle.name(), handle.status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_trap_storm_backs_off_into_crash_loop_while_a_healthy_neighbour_runs_on() {
    let host = host();
    // One thread: the storm and the healthy module share it, the worst case for isolation.
    let pool = WasmPool::new(host.clone(), 1).expect("pool starts");
    let storm = pool.start(spec(&host, "storm", &module(r#"(func (export "ep_process") (param i32 i32) (result i32) unreachable)"#), 3));
    let healthy = pool.start(spec(&host, "healthy", &echo(), 3));
    wait_for_phase(&healthy, InstancePhase::Running).await;

    let mut storm_failures = 0;
    for n in 0..200u32 {
        let batch = n.to_le_bytes().to_vec();
        assert_eq!(healthy.process_wait(batch.clone()).await.map(|p| p.emitted), Ok(vec![(0, batch)]), "healthy batch {n}");
        if let Ok(answer) = storm.process(vec![0; 8]) {
            match answer.await.expect("answered") {
                Err(ProcessError::Guest(_, GuestError::Trap { message, .. })) => {
                    assert!(message.contains("unreachable"), "{message}");
                    storm_failures += 1;
                }
                Err(ProcessError::NotRunning(..)) => {}
                other => panic!("the storm module cannot succeed: {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    wait_for_phase(&storm, InstancePhase::CrashLoop).await;
    let status = storm.status();
    assert!(storm_failures >= 4 && status.restarts >= 3, "expected repeated restarts: {storm_failures} failures, {status:?}");
    assert!(status.message.as_deref().is_some_and(|m| m.contains("unreachable")), "status should say why: {status:?}");
    let healthy = healthy.status();
    assert_eq!((healthy.phase, healthy.batches_ok, healthy.restarts), (InstancePhase::Running, 200, 0), "{healthy:?}");
}

#[tokio::test]
async fn a_deadline_kill_restarts_the_instance_and_it_serves_again() {
    let host = host();
    let pool = WasmPool::new(host.clone(), 2).expect("pool starts");
    // Loops forever on a batch starting with 1, echoes anything else.
    let moody = module(
        r#"(func (export "ep_process") (param $ptr i32) (param $len i32) (result i32)
            (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 1)) (then (loop $l (br $l))))
            (call $emit (i32.const 16) (i32.const 3) (local.get $ptr) (local.get $len)))"#,
    );
    let handle = pool.start(spec(&host, "moody", &moody, 5));
    wait_for_phase(&handle, InstancePhase::Running).await;
    match handle.process_wait(vec![1]).await {
        Err(ProcessError::Guest(_, GuestError::DeadlineExceeded(_))) => {}
        other => panic!("expected the deadline, got {other:?}"),
    }
    wait_for_phase(&handle, InstancePhase::Running).await;
    assert_eq!(handle.process_wait(vec![2, 3]).await.map(|p| p.emitted), Ok(vec![(0, vec![2, 3])]));
    let status = handle.status();
    assert_eq!((status.restarts, status.batches_ok, status.batches_failed), (1, 1, 1), "{status:?}");
}

#[tokio::test]
async fn a_full_queue_refuses_batches_instead_of_growing() {
    let host = host();
    let pool = WasmPool::new(host.clone(), 1).expect("pool starts");
    let slow = module(
        r#"(func (export "ep_process") (param i32 i32) (result i32) (local $i i32)
        (loop $spin (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $spin (i32.lt_u (local.get $i) (i32.const 20000000))))
        i32.const 0)"#,
    );
    let mut spec = spec(&host, "slow", &slow, 5);
    spec.limits.batch_deadline = Duration::from_secs(10);
    spec.queue_capacity = 4;
    let handle = pool.start(spec);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..50 {
        match handle.process(vec![0; 8]) {
            Ok(answer) => accepted.push(answer),
            Err(ProcessError::Busy(_, queued)) => {
                assert_eq!(queued, 4);
                refused += 1;
            }
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert!(accepted.len() <= 5 && refused >= 45, "{} accepted, {refused} refused", accepted.len());
    for answer in accepted {
        assert_eq!(answer.await.expect("answered").map(|p| p.emitted), Ok(vec![]));
    }
}
