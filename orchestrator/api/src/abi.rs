//! What a guest module may be (docs/abi.md): limits on its size and complexity that the
//! registry checks at push and every edge checks again before compiling, so that compiling a
//! module takes bounded time and memory on a small node.

/// Largest module accepted, in bytes.
pub const MAX_MODULE_BYTES: usize = 8 * 1024 * 1024;
/// Most functions a module may define.
pub const MAX_FUNCTIONS: u32 = 10_000;
/// Largest function body, in bytes: the compiler's work grows faster than linearly with it.
pub const MAX_FUNCTION_BYTES: usize = 256 * 1024;
/// Most locals one function may declare.
pub const MAX_LOCALS: u64 = 10_000;

/// Checks a module's size and complexity against the limits; every problem is reported.
/// (Validity and the ABI's exports are checked elsewhere; this reads only what it counts.)
#[cfg(feature = "module-limits")]
pub fn check_complexity(bytes: &[u8]) -> Result<(), Vec<String>> {
    use wasmparser::{Parser, Payload};
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(vec![format!("the module has {} bytes; at most {MAX_MODULE_BYTES} are allowed", bytes.len())]);
    }
    let mut problems = Vec::new();
    let mut functions = 0u32;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| vec![format!("not a valid WebAssembly module: {e}")])?;
        if let Payload::CodeSectionEntry(body) = payload {
            functions += 1;
            let size = body.range().len();
            if size > MAX_FUNCTION_BYTES {
                problems.push(format!("function {} has a body of {size} bytes; at most {MAX_FUNCTION_BYTES} are allowed", functions - 1));
            }
            let mut locals = 0u64;
            let reader = body.get_locals_reader().map_err(|e| vec![format!("unreadable function body: {e}")])?;
            for local in reader {
                let (count, _) = local.map_err(|e| vec![format!("unreadable function locals: {e}")])?;
                locals += u64::from(count);
            }
            if locals > MAX_LOCALS {
                problems.push(format!("function {} declares {locals} locals; at most {MAX_LOCALS} are allowed", functions - 1));
            }
        }
    }
    if functions > MAX_FUNCTIONS {
        problems.push(format!("the module defines {functions} functions; at most {MAX_FUNCTIONS} are allowed"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(all(test, feature = "module-limits"))]
mod tests {
    use super::*;

    fn module_with(functions: usize, body: &str) -> Vec<u8> {
        let funcs: String = (0..functions).map(|_| format!("(func {body})")).collect();
        wat::parse_str(format!("(module {funcs})")).expect("valid WAT")
    }

    #[test]
    fn modules_within_the_limits_pass_and_others_say_why() {
        assert_eq!(check_complexity(&module_with(10, "(local i32) nop")), Ok(()));
        let many = check_complexity(&module_with(MAX_FUNCTIONS as usize + 1, "nop")).expect_err("too many functions");
        assert!(many[0].contains("10001 functions"), "{many:?}");
        let locals =
            check_complexity(&module_with(1, &format!("(local {})", "i64 ".repeat(MAX_LOCALS as usize + 1)))).expect_err("too many locals");
        assert!(locals[0].contains("10001 locals"), "{locals:?}");
        let big = check_complexity(&vec![0; MAX_MODULE_BYTES + 1]).expect_err("too big");
        assert!(big[0].contains("at most"), "{big:?}");
    }
}
