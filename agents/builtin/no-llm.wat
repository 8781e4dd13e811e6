;; no-llm: the built-in module of agent kinds that need a language model
;; (coder, docs, general). No model is wired into the node yet, so it says so
;; on stderr and exits 1 instead of pretending to have done the work. Such
;; tasks require the `llm` capability, so they only reach a node that claims
;; it; until then they wait with that reason.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "no language model is wired into this node yet\0a")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 46))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 1))))
