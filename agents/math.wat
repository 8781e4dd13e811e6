;; math: a library module (no _start) for the tester agent to check through
;; `coditect.run_module`. `add_buggy` is wrong on purpose, `div` traps on a
;; zero divisor and `spin` never returns (it ends when fuel or time runs out).
(module
  (func (export "add") (param i64 i64) (result i64)
    (i64.add (local.get 0) (local.get 1)))
  (func (export "add_buggy") (param i64 i64) (result i64)
    (i64.add (i64.add (local.get 0) (local.get 1))
             (i64.extend_i32_u (i64.gt_s (local.get 0) (i64.const 100)))))
  (func (export "mul") (param i64 i64) (result i64)
    (i64.mul (local.get 0) (local.get 1)))
  (func (export "div") (param i64 i64) (result i64)
    (i64.div_s (local.get 0) (local.get 1)))
  (func (export "fib") (param $n i32) (result i64)
    (local $a i64) (local $b i64) (local $t i64)
    (local.set $b (i64.const 1))
    (block $done
      (loop $next
        (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
        (local.set $t (i64.add (local.get $a) (local.get $b)))
        (local.set $a (local.get $b))
        (local.set $b (local.get $t))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $a))
  (func (export "spin") (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))
