;; noop: the smallest useful task. It exits 0 at once and touches nothing.
;; The mission layer uses it for placement and end-to-end latency tests, and
;; the sandbox benchmark uses it for instantiate and no-op task latency.
(module
  (memory (export "memory") 1)
  (func (export "_start")))
